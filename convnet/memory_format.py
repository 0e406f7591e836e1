"""Memory formats of image batches: contiguous (N, C, H, W), or channels-last.

A channels-last array is an (N, C, H, W) array whose memory is laid out (N, H, W, C):
every pixel's channels are adjacent, as PyTorch's ``torch.channels_last``. numpy sees
the same values either way; only speed differs. convnet's fast layers accept both and
give back the format they were given. On channels-last float32 images, convolution
(Winograd and im2col), batch norm, ReLU and max pooling run compiled kernels written
for that layout, which vectorize over channels and keep Winograd's tiles in cache; a
composed network (:class:`convnet.nn.Classifier`, ``memory_format``) converts its input
once and keeps its activations channels-last from layer to layer.

A convolution's ``conv_param`` may name the output's format: ``'memory_format':
'channels_last'`` makes it channels-last whatever the input's layout (a one-channel input,
contiguous in both layouts, needs this), ``'contiguous'`` makes it contiguous.
"""

from __future__ import annotations

import numpy as np

from convnet._layout import MEMORY_FORMATS, is_channels_last, to_channels_last

__all__ = ["MEMORY_FORMATS", "is_channels_last", "to_channels_last", "to_contiguous"]


def to_contiguous(x: np.ndarray) -> np.ndarray:
    """``x``'s values in C-contiguous memory.

    Parameters
    ----------
    x : ndarray

    Returns
    -------
    ndarray
        ``x``'s shape and dtype, C-contiguous: ``x`` itself when it already is.
    """
    return np.ascontiguousarray(x)
