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


def max_pool_forward_fast(x: np.ndarray, pool_param: dict) -> tuple[np.ndarray, PoolCache]:
    """Max pooling with the compiled kernel, for any window and stride.

    Computes exactly what :func:`convnet.layers.max_pool_forward_naive` computes and
    remembers each window's first maximum for the backward pass.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    pool_param : dict
        ``'pool_height'``, ``'pool_width'``: ints >= 1; ``'stride'``: int or pair, >= 1.

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
        ``H_out = (H - pool_height) // sh + 1``, ``W_out = (W - pool_width) // sw + 1``;
        channels-last when x is (float32; see :mod:`convnet.memory_format`).
    cache : PoolCache
    """
    x = check_float_array(x, "x")
    geo = pool_geometry(x, pool_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return max_pool_forward_naive(x, pool_param)
    num, channels, height, width = x.shape
    if height * width > np.iinfo(np.intc).max:
        raise ValueError(f"an input plane of {height}x{width} is too large to pool")
    if _channels_last_pool(x, x.dtype):
        out_n = np.empty((num, geo.out_h, geo.out_w, channels), dtype=np.float32)
        argmax_n = np.empty(out_n.shape, dtype=np.intc)
        _backend.channels_last_kernel.max_pool_forward(
            nhwc(x), out_n, argmax_n, _window(geo), pool_parts(x.size)
        )
        return from_nhwc(out_n), PoolCache(x, geo, from_nhwc(argmax_n))
    out = np.empty((num, channels, geo.out_h, geo.out_w), dtype=x.dtype)
    argmax = np.empty(out.shape, dtype=np.intc)
    x_c = np.ascontiguousarray(x)
    window = (geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w)

    def forward_group(start: int, stop: int) -> None:
        kernel.max_pool_forward(x_c[start:stop], out[start:stop], argmax[start:stop], *window)

    map_groups(forward_group, num, work_groups(x.size, _small_pool(geo)))
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
    if _channels_last_pool(x, dtype) and memory_order(argmax) is not None:
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


def _channels_last_pool(x: np.ndarray, dtype: np.dtype) -> bool:
    """Whether the channels-last kernel pools ``x`` (channels-last, computed in float32)."""
    return dtype == np.float32 and is_channels_last(x) and _backend.channels_last_kernel is not None


def _small_avg_pool(geo: PoolGeometry) -> int:
    """Input size below which an average pool runs on the calling thread alone: 2x2
    windows are memory-bound, so one thread is faster up to a few MiB."""
    if (geo.pool_h, geo.pool_w) == (2, 2):
        return SMALL_VECTORIZED_POOL_ELEMENTS
    return SMALL_POOL_ELEMENTS


def avg_pool_forward_fast(x: np.ndarray, pool_param: dict) -> tuple[np.ndarray, PoolCache]:
    """Average pooling with the compiled kernel, for any window and stride.

    Computes what :func:`convnet.layers.avg_pool_forward_naive` computes (windows
    entirely inside the input, no padding).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    pool_param : dict
        ``'pool_height'``, ``'pool_width'``: ints >= 1; ``'stride'``: int or pair, >= 1.

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
        ``H_out = (H - pool_height) // sh + 1``, ``W_out = (W - pool_width) // sw + 1``.
    cache : PoolCache (its ``argmax`` is None)
    """
    x = check_float_array(x, "x")
    geo = pool_geometry(x, pool_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return avg_pool_forward_naive(x, pool_param)
    out = np.empty((x.shape[0], x.shape[1], geo.out_h, geo.out_w), dtype=x.dtype)
    x_c = np.ascontiguousarray(x)
    window = (geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w)

    def forward_group(start: int, stop: int) -> None:
        kernel.avg_pool_forward(x_c[start:stop], out[start:stop], *window)

    map_groups(forward_group, x.shape[0], work_groups(x.size, _small_avg_pool(geo)))
    return out, PoolCache(x, geo, None)


def avg_pool_backward_fast(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Gradient of average pooling: ``dout / (pool_height * pool_width)`` over each window.

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
    dtype = common_dtype(x, dout)
    dx = np.empty(x.shape, dtype=dtype)
    dout_c = np.ascontiguousarray(dout, dtype=dtype)
    window = (geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w)

    def backward_group(start: int, stop: int) -> None:
        kernel.avg_pool_backward(dout_c[start:stop], dx[start:stop], *window)

    map_groups(backward_group, x.shape[0], work_groups(x.size, _small_avg_pool(geo)))
    return dx
