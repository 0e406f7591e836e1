"""Fast max and average pooling: validate in Python, then the compiled kernel on groups of
images over the worker threads, for any window and stride.

Without the compiled kernel every function falls back to the naive layers of
:mod:`convnet.layers` and warns once.
"""

from __future__ import annotations

import numpy as np

from convnet import _backend
from convnet._layout import from_nhwc, is_channels_last, memory_order, nhwc
from convnet._parallel import map_groups, pool_parts, work_groups
from convnet._validation import (
    PoolGeometry,
    check_avg_pool_cache,
    check_dout,
    check_float_array,
    check_pool_cache,
    common_dtype,
    pool_geometry,
)
from convnet.layers import (
    PoolCache,
    avg_pool_backward_naive,
    avg_pool_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)

SMALL_POOL_ELEMENTS = 2**16
SMALL_VECTORIZED_POOL_ELEMENTS = 2**21


def _small_pool(geo: PoolGeometry) -> int:
    """Input size below which a pool runs on the calling thread alone.

    The 2x2 stride-2 loop is vectorized and memory-bound in both dtypes: one thread is
    faster up to a few MiB (measured). Other windows do several times more work per
    element, so a second thread repays itself sooner.
    """
    if geo[:4] == (2, 2, 2, 2):
        return SMALL_VECTORIZED_POOL_ELEMENTS
    return SMALL_POOL_ELEMENTS


def _padded(x: np.ndarray, geo: PoolGeometry, value: float) -> np.ndarray:
    """``x`` (C-contiguous) with ``geo``'s padding of ``value`` around every plane."""
    if not (geo.pad_h or geo.pad_w):
        return np.ascontiguousarray(x)
    widths = ((0, 0), (0, 0), (geo.pad_h, geo.pad_h), (geo.pad_w, geo.pad_w))
    return np.pad(x, widths, constant_values=value)


def _unpadded_argmax(argmax: np.ndarray, geo: PoolGeometry, height: int, width: int) -> None:
    """Turn indices into the padded plane into indices into the input plane, in place.

    A window whose inputs are all -inf has its first maximum in the padding when the
    padding comes first (ties keep the first): its gradient goes to its first input
    element instead, as in the naive layer and PyTorch.
    """
    padded_width = width + 2 * geo.pad_w
    rows = argmax // padded_width - geo.pad_h
    cols = argmax % padded_width - geo.pad_w
    outside = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
    if outside.any():
        first_rows = np.maximum(np.arange(geo.out_h) * geo.stride_h - geo.pad_h, 0)
        first_cols = np.maximum(np.arange(geo.out_w) * geo.stride_w - geo.pad_w, 0)
        rows = np.where(outside, first_rows[:, None], rows)
        cols = np.where(outside, first_cols[None, :], cols)
    argmax[...] = rows * width + cols


def max_pool_forward_fast(x: np.ndarray, pool_param: dict) -> tuple[np.ndarray, PoolCache]:
    """Max pooling with the compiled kernel, for any window, stride and padding.

    Computes exactly what :func:`convnet.layers.max_pool_forward_naive` computes and
    remembers each window's first maximum for the backward pass. Padding runs as -inf
    rows and columns around a copy of the input.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    pool_param : dict
        ``'pool_height'``, ``'pool_width'``: ints >= 1; ``'stride'``: int or pair, >= 1;
        optional ``'pad'``: int or pair, below the window (default 0).

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
        ``H_out = (H + 2 * pad_h - pool_height) // sh + 1``, and likewise ``W_out``;
        channels-last when x is (float32, no padding; see :mod:`convnet.memory_format`).
    cache : PoolCache
    """
    x = check_float_array(x, "x")
    geo = pool_geometry(x, pool_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return max_pool_forward_naive(x, pool_param)
    num, channels, height, width = x.shape
    if (height + 2 * geo.pad_h) * (width + 2 * geo.pad_w) > np.iinfo(np.intc).max:
        raise ValueError(f"an input plane of {height}x{width} is too large to pool")
    if _channels_last_pool(x, x.dtype, geo):
        out_n = np.empty((num, geo.out_h, geo.out_w, channels), dtype=np.float32)
        argmax_n = np.empty(out_n.shape, dtype=np.intc)
        _backend.channels_last_kernel.max_pool_forward(
            nhwc(x), out_n, argmax_n, _window(geo), pool_parts(x.size)
        )
        return from_nhwc(out_n), PoolCache(x, geo, from_nhwc(argmax_n))
    out = np.empty((num, channels, geo.out_h, geo.out_w), dtype=x.dtype)
    argmax = np.empty(out.shape, dtype=np.intc)
    x_c = _padded(x, geo, -np.inf)
    window = (geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w)

    def forward_group(start: int, stop: int) -> None:
        kernel.max_pool_forward(x_c[start:stop], out[start:stop], argmax[start:stop], *window)

    map_groups(forward_group, num, work_groups(x_c.size, _small_pool(geo)))
    if geo.pad_h or geo.pad_w:
        _unpadded_argmax(argmax, geo, height, width)
    return out, PoolCache(x, geo, argmax)


def max_pool_backward_fast(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Gradient of max pooling: each window's gradient goes to its first maximum.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache
        From :func:`max_pool_forward_fast` or :func:`convnet.layers.max_pool_forward_naive`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x, geo, argmax = check_pool_cache(cache)
    dout = check_dout(dout, (x.shape[0], x.shape[1], geo.out_h, geo.out_w))
    kernel = _backend.kernel
    if kernel is None or argmax is None:
        _backend.warn_if_naive()
        return max_pool_backward_naive(dout, cache)
    dtype = common_dtype(x, dout)
    if _channels_last_pool(x, dtype, geo) and memory_order(argmax) is not None:
        dx_n = np.empty((x.shape[0], x.shape[2], x.shape[3], x.shape[1]), dtype=np.float32)
        _backend.channels_last_kernel.max_pool_backward(
            nhwc(dout, np.float32), nhwc(argmax), dx_n, _window(geo), pool_parts(x.size)
        )
        return from_nhwc(dx_n)
    argmax = np.ascontiguousarray(argmax)
    dx = np.empty(x.shape, dtype=dtype)
    dout_c = np.ascontiguousarray(dout, dtype=dtype)

    def backward_group(start: int, stop: int) -> None:
        kernel.max_pool_backward(dout_c[start:stop], argmax[start:stop], dx[start:stop])

    map_groups(backward_group, x.shape[0], work_groups(x.size, _small_pool(geo)))
    return dx


def _window(geo: PoolGeometry) -> tuple[int, int, int, int]:
    return geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w


def _channels_last_pool(x: np.ndarray, dtype: np.dtype, geo: PoolGeometry) -> bool:
    """Whether the channels-last kernel pools ``x`` (channels-last, computed in float32,
    without padding)."""
    return (
        dtype == np.float32
        and not (geo.pad_h or geo.pad_w)
        and is_channels_last(x)
        and _backend.channels_last_kernel is not None
    )


def _small_avg_pool(geo: PoolGeometry) -> int:
    """Input size below which an average pool runs on the calling thread alone: 2x2
    windows are memory-bound, so one thread is faster up to a few MiB."""
    if (geo.pool_h, geo.pool_w) == (2, 2):
        return SMALL_VECTORIZED_POOL_ELEMENTS
    return SMALL_POOL_ELEMENTS


def _average_scale(geo: PoolGeometry, height: int, width: int) -> np.ndarray | None:
    """(H_out, W_out) factors turning the kernel's averages over whole windows into
    averages over the input elements each window holds (None when those are the same)."""
    if geo.count_include_pad or not (geo.pad_h or geo.pad_w):
        return None

    def counts(out: int, stride: int, pad: int, window: int, size: int) -> np.ndarray:
        first = np.arange(out) * stride - pad
        return np.minimum(first + window, size) - np.maximum(first, 0)

    rows = counts(geo.out_h, geo.stride_h, geo.pad_h, geo.pool_h, height)
    cols = counts(geo.out_w, geo.stride_w, geo.pad_w, geo.pool_w, width)
    return (geo.pool_h * geo.pool_w) / np.outer(rows, cols)


def avg_pool_forward_fast(x: np.ndarray, pool_param: dict) -> tuple[np.ndarray, PoolCache]:
    """Average pooling with the compiled kernel, for any window, stride and padding.

    Computes what :func:`convnet.layers.avg_pool_forward_naive` computes: padding runs as
    zero rows and columns around a copy of the input, and with ``count_include_pad``
    False each average is rescaled to the input elements its window holds.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    pool_param : dict
        ``'pool_height'``, ``'pool_width'``: ints >= 1; ``'stride'``: int or pair, >= 1;
        optional ``'pad'`` (int or pair, below the window, default 0) and
        ``'count_include_pad'`` (default True).

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
        ``H_out = (H + 2 * pad_h - pool_height) // sh + 1``, and likewise ``W_out``.
    cache : PoolCache (its ``argmax`` is None)
    """
    x = check_float_array(x, "x")
    geo = pool_geometry(x, pool_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return avg_pool_forward_naive(x, pool_param)
    out = np.empty((x.shape[0], x.shape[1], geo.out_h, geo.out_w), dtype=x.dtype)
    x_c = _padded(x, geo, 0.0)
    window = (geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w)

    def forward_group(start: int, stop: int) -> None:
        kernel.avg_pool_forward(x_c[start:stop], out[start:stop], *window)

    map_groups(forward_group, x.shape[0], work_groups(x_c.size, _small_avg_pool(geo)))
    scale = _average_scale(geo, *x.shape[2:])
    if scale is not None:
        out *= scale.astype(out.dtype)
    return out, PoolCache(x, geo, None)


def avg_pool_backward_fast(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Gradient of average pooling: each window spreads ``dout`` over its elements,
    divided as the forward pass divided (see :func:`avg_pool_forward_fast`).

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache
        From :func:`avg_pool_forward_fast` or :func:`convnet.layers.avg_pool_forward_naive`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x, geo = check_avg_pool_cache(cache)
    dout = check_dout(dout, (x.shape[0], x.shape[1], geo.out_h, geo.out_w))
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return avg_pool_backward_naive(dout, cache)
    num, channels, height, width = x.shape
    dtype = common_dtype(x, dout)
    dx = np.empty((num, channels, height + 2 * geo.pad_h, width + 2 * geo.pad_w), dtype=dtype)
    dout_c = np.ascontiguousarray(dout, dtype=dtype)
    scale = _average_scale(geo, height, width)
    if scale is not None:
        dout_c = dout_c * scale.astype(dtype)
    window = (geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w)

    def backward_group(start: int, stop: int) -> None:
        kernel.avg_pool_backward(dout_c[start:stop], dx[start:stop], *window)

    map_groups(backward_group, num, work_groups(dx.size, _small_avg_pool(geo)))
    if geo.pad_h or geo.pad_w:
        return np.ascontiguousarray(
            dx[:, :, geo.pad_h : geo.pad_h + height, geo.pad_w : geo.pad_w + width]
        )
    return dx
