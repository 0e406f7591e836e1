"""What the channels-last tests share (test_channels_last_*.py): the skip without the
compiled kernels, the examples of a property run once per instruction set, the channel
counts that reach every vector tail, and the layout check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st

from convnet import _backend

needs_channels_last = pytest.mark.skipif(
    _backend.channels_last_kernel is None, reason="needs the compiled convnet._channels_last"
)
# A property that runs once per instruction set takes a third of the profile's examples each.
EXAMPLES_PER_INSTRUCTION_SET = max(10, settings().max_examples // 3)
# 1..40 channels, often just below, at or above a multiple of 8 or 16 (AVX2's and AVX-512's
# vectors): full vectors, masked tails, and both.
CHANNEL_COUNTS = st.one_of(
    st.sampled_from([1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 40]), st.integers(1, 40)
)


def laid_out_channels_last(array: np.ndarray) -> bool:
    """Whether ``array``'s memory is (N, H, W, C), including arrays that are also
    C-contiguous (one channel, 1x1 images), which ``is_channels_last`` counts as
    contiguous."""
    return array.ndim == 4 and array.transpose(0, 2, 3, 1).flags.c_contiguous
