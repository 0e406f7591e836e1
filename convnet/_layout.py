"""Memory formats of (N, C, H, W) image batches, as the fast layers see them.

A *channels-last* array is an (N, C, H, W) array whose memory is (N, H, W, C): its
``transpose(0, 2, 3, 1)`` is C-contiguous, so each pixel's channels are adjacent (PyTorch's
``torch.channels_last``). An array that is also C-contiguous (one channel, or 1x1 images)
counts as contiguous: its memory fits both layouts. The channels-last kernels work on
the NHWC view (:func:`nhwc`) and hand back :func:`from_nhwc` views of their NHWC results.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet import _backend
from convnet._parallel import pool_parts
from convnet._validation import MEMORY_FORMATS, check_ndim

__all__ = [
    "MEMORY_FORMATS",
    "contiguous",
    "from_nhwc",
    "is_channels_last",
    "memory_order",
    "nhwc",
    "to_channels_last",
]


def is_channels_last(x: np.ndarray) -> bool:
    """Whether ``x`` is a channels-last (N, C, H, W) array.

    Parameters
    ----------
    x : ndarray

    Returns
    -------
    bool
        True when ``x`` is 4-D, its ``transpose(0, 2, 3, 1)`` is C-contiguous and ``x`` is
        not C-contiguous itself (an array contiguous in both layouts counts as contiguous).
    """
    return (
        isinstance(x, np.ndarray)
        and x.ndim == 4
        and x.transpose(0, 2, 3, 1).flags.c_contiguous
        and not x.flags.c_contiguous
    )


def nhwc(x: np.ndarray, dtype: Any = None) -> np.ndarray:
    """The (N, H, W, C) C-contiguous array of ``x``'s values: a view of a channels-last
    ``x`` of ``dtype``, else a copy (a contiguous float32 ``x`` transposed by the compiled
    kernel, several times faster than numpy's strided copy)."""
    transposed = x.transpose(0, 2, 3, 1)
    if not transposed.flags.c_contiguous and _transposes(x, dtype):
        num, channels, height, width = x.shape
        out = np.empty((num, height, width, channels), dtype=np.float32)
        pixels = height * width
        _transpose(x.reshape(num, channels, pixels), out.reshape(num, pixels, channels))
        return out
    return np.ascontiguousarray(transposed, dtype=dtype)


def contiguous(x: np.ndarray) -> np.ndarray:
    """``x``'s values C-contiguous: ``x`` itself when it is, a channels-last float32 ``x``
    transposed by the compiled kernel, else numpy's copy."""
    if x.flags.c_contiguous:
        return x
    if is_channels_last(x) and _transposes(x, None):
        num, channels, height, width = x.shape
        out = np.empty(x.shape, dtype=np.float32)
        rows = x.transpose(0, 2, 3, 1).reshape(num, height * width, channels)
        _transpose(rows, out.reshape(num, channels, height * width))
        return out
    return np.ascontiguousarray(x)


def _transposes(x: np.ndarray, dtype: Any) -> bool:
    """Whether the compiled transpose converts ``x``: a C-contiguous or channels-last 4-D
    float32 array (converted to float32, if ``dtype`` is given)."""
    return (
        x.ndim == 4
        and x.dtype == np.float32
        and (dtype is None or np.dtype(dtype) == np.float32)
        and (x.flags.c_contiguous or x.transpose(0, 2, 3, 1).flags.c_contiguous)
        and _backend.channels_last_kernel is not None
    )


def _transpose(source: np.ndarray, out: np.ndarray) -> None:
    _backend.channels_last_kernel.transpose_images(source, out, pool_parts(source.size))


def from_nhwc(x_nhwc: np.ndarray) -> np.ndarray:
    """The (N, C, H, W) channels-last view of a C-contiguous (N, H, W, C) array."""
    return x_nhwc.transpose(0, 3, 1, 2)


def to_channels_last(x: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``x``'s values in channels-last memory.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    dtype : dtype, optional
        Of the result (default: x's).

    Returns
    -------
    ndarray, shape (N, C, H, W)
        Whose ``transpose(0, 2, 3, 1)`` is C-contiguous: a view of ``x`` when ``x``
        already is and has ``dtype``, else a copy.

    Raises
    ------
    ValueError
        If ``x`` is not 4-dimensional.
    """
    x = np.asarray(x)
    check_ndim(x, 4, "x", "(N, C, H, W)")
    return from_nhwc(nhwc(x, dtype))


def memory_order(x: np.ndarray) -> np.ndarray | None:
    """The 1-D view of ``x``'s memory in the order it is laid out, for a C-contiguous or a
    channels-last ``x`` (elementwise passes run on it and keep the layout); else None."""
    if x.flags.c_contiguous:
        return x.reshape(-1)
    if is_channels_last(x):
        return x.transpose(0, 2, 3, 1).reshape(-1)
    return None
