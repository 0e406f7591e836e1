"""Memory formats of 4-D image arrays: NCHW-contiguous, or channels-last (NHWC memory
seen through an (N, C, H, W) view, as PyTorch's ``torch.channels_last``)."""

from __future__ import annotations

import numpy as np


def is_channels_last(x: np.ndarray) -> bool:
    """True for a 4-D array whose memory is NHWC and that is not also C-contiguous."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous and not x.flags.c_contiguous


def nhwc(x: np.ndarray, dtype=None) -> np.ndarray:
    """The (N, H, W, C) C-contiguous array of x's values (a view when x is channels-last)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=dtype)


def from_nhwc(x_nhwc: np.ndarray) -> np.ndarray:
    """The (N, C, H, W) channels-last view of an NHWC array."""
    return x_nhwc.transpose(0, 3, 1, 2)


def to_channels_last(x: np.ndarray, dtype=None) -> np.ndarray:
    """x's values as a channels-last (N, C, H, W) array (x itself when it is one)."""
    return from_nhwc(nhwc(x, dtype))
