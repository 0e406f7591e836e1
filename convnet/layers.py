"""Reference layers: affine, ReLU, the losses, and naive convolution and max pooling.

The normalizations (:mod:`convnet.normalization`) and dropout (:mod:`convnet.dropout`) live
in their own modules and are re-exported here under CS231n's names.

Each ``*_forward`` returns ``(out, cache)`` and each ``*_backward(dout, cache)`` returns the
gradients. The naive convolution and pooling loop over every output element: slow and
obviously correct, they are what the fast layers are tested against. No function here
modifies its inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from convnet._validation import (
    ConvGeometry,
    PoolGeometry,
    check_affine_arrays,
    check_affine_cache,
    check_conv_arrays,
    check_conv_cache,
    check_dout,
    check_float_array,
    check_labels,
    check_ndim,
    check_pool_cache,
    check_relu_cache,
    common_dtype,
    pool_geometry,
)
from convnet.dropout import DropoutCache as DropoutCache
from convnet.dropout import dropout_backward as dropout_backward
from convnet.dropout import dropout_forward as dropout_forward
from convnet.normalization import NormCache as NormCache
from convnet.normalization import batchnorm_backward as batchnorm_backward
from convnet.normalization import batchnorm_backward_alt as batchnorm_backward_alt
from convnet.normalization import batchnorm_forward as batchnorm_forward
from convnet.normalization import layernorm_backward as layernorm_backward
from convnet.normalization import layernorm_forward as layernorm_forward
from convnet.normalization import spatial_batchnorm_backward as spatial_batchnorm_backward
from convnet.normalization import spatial_batchnorm_forward as spatial_batchnorm_forward
from convnet.normalization import spatial_groupnorm_backward as spatial_groupnorm_backward
from convnet.normalization import spatial_groupnorm_forward as spatial_groupnorm_forward


class ConvCache(NamedTuple):
    """What a convolution's backward pass needs (shared by the naive and fast layers);
    ``algorithm`` is the one the forward pass was asked for."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    geometry: ConvGeometry
    algorithm: str = "auto"


class PoolCache(NamedTuple):
    """What a max pool's backward pass needs; ``argmax`` is set by the fast layer only."""

    x: np.ndarray
    geometry: PoolGeometry
    argmax: np.ndarray | None


def affine_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fully connected layer: ``out = x.reshape(N, D) @ w + b``.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), with D = d_1 * ... * d_k
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (x, w, b)
    """
    x, w, b = check_affine_arrays(x, w, b)
    dtype = common_dtype(x, w, b)
    out = x.reshape(x.shape[0], w.shape[0]).astype(dtype, copy=False) @ w.astype(dtype, copy=False)
    out += b
    return out, (x, w, b)


def affine_backward(
    dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`affine_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : tuple (x, w, b) from :func:`affine_forward`

    Returns
    -------
    dx : ndarray, shape of x
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)
    """
    x, w, b = check_affine_cache(cache)
    dout = check_dout(dout, (x.shape[0], w.shape[1]))
    dtype = common_dtype(x, w, b, dout)
    x_rows = x.reshape(x.shape[0], w.shape[0]).astype(dtype, copy=False)
    dout = dout.astype(dtype, copy=False)
    dx = (dout @ w.T.astype(dtype, copy=False)).reshape(x.shape)
    dw = x_rows.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rectified linear unit: ``out = max(x, 0)``; NaN stays NaN.

    Parameters
    ----------
    x : ndarray, any shape

    Returns
    -------
    out : ndarray, shape of x
    cache : ndarray, x itself
    """
    x = check_float_array(x, "x")
    return np.maximum(x, 0), x


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """Gradient of :func:`relu_forward`: ``dout`` where ``x > 0``, else 0. Returns a new array.

    Parameters
    ----------
    dout : ndarray, shape of x
    cache : ndarray, x from :func:`relu_forward`

    Returns
    -------
    dx : ndarray, shape of x
    """
    x = check_relu_cache(cache)
    dout = check_dout(dout, x.shape)
    dtype = common_dtype(x, dout)
    return np.where(x > 0, dout, 0).astype(dtype, copy=False)


def _check_scores(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = check_float_array(x, "x")
    check_ndim(x, 2, "scores x", "(N, C)")
    if x.shape[1] < 1:
        raise ValueError(f"scores x need at least one class, got shape {x.shape}")
    return x, check_labels(y, x.shape[0], x.shape[1])


def softmax_loss(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of a softmax over class scores, and its gradient.

    Parameters
    ----------
    x : ndarray, shape (N, C)
        Class scores.
    y : ndarray of int, shape (N,)
        Labels, ``0 <= y[i] < C``.

    Returns
    -------
    loss : float
    dx : ndarray, shape (N, C)
    """
    x, y = _check_scores(x, y)
    num_samples = x.shape[0]
    if num_samples == 0:
        return 0.0, np.zeros_like(x)
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(num_samples)
    loss = -log_probs[rows, y].mean()
    dx = np.exp(log_probs)
    dx[rows, y] -= 1
    dx /= num_samples
    return float(loss), dx


def svm_loss(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean multiclass hinge loss ``sum_{j != y} max(0, x_j - x_y + 1)``, and its gradient.

    Parameters
    ----------
    x : ndarray, shape (N, C)
        Class scores.
    y : ndarray of int, shape (N,)
        Labels, ``0 <= y[i] < C``.

    Returns
    -------
    loss : float
    dx : ndarray, shape (N, C)
    """
    x, y = _check_scores(x, y)
    num_samples = x.shape[0]
    if num_samples == 0:
        return 0.0, np.zeros_like(x)
    rows = np.arange(num_samples)
    margins = x - x[rows, y][:, None] + 1
    margins[rows, y] = 0
    active = margins > 0
    loss = np.where(active, margins, 0).sum() / num_samples
    dx = active.astype(x.dtype)
    dx[rows, y] = -active.sum(axis=1)
    dx /= num_samples
    return float(loss), dx


def conv_forward_naive(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> tuple[np.ndarray, ConvCache]:
    """Convolution (cross-correlation) by explicit loops over every output element.

    ``out[n, f, i, j] = b[f] + sum(x_pad[n, :, i*sh : i*sh+HH, j*sw : j*sw+WW] * w[f])``,
    with ``x_pad`` the input zero-padded by ``pad`` on each side.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'``: int or pair (sh, sw), >= 1; ``'pad'``: int or pair (ph, pw), >= 0.

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = (H + 2*ph - HH) // sh + 1``, ``W_out = (W + 2*pw - WW) // sw + 1``.
    cache : ConvCache
    """
    x, w, b, geo = check_conv_arrays(x, w, b, conv_param)
    dtype = common_dtype(x, w, b)
    num_filters, _, kernel_h, kernel_w = w.shape
    x_pad = np.pad(x.astype(dtype), ((0, 0), (0, 0), (geo.pad_h,) * 2, (geo.pad_w,) * 2))
    out = np.zeros((x.shape[0], num_filters, geo.out_h, geo.out_w), dtype=dtype)
    for n in range(x.shape[0]):
        for f in range(num_filters):
            for i in range(geo.out_h):
                top = i * geo.stride_h
                for j in range(geo.out_w):
                    left = j * geo.stride_w
                    window = x_pad[n, :, top : top + kernel_h, left : left + kernel_w]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out, ConvCache(x, w, b, geo)


def conv_backward_naive(
    dout: np.ndarray, cache: ConvCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_forward_naive`, by the same loops.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
    cache : ConvCache from a conv forward pass

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    x, w, b, geo, _ = check_conv_cache(cache)
    num_filters, _, kernel_h, kernel_w = w.shape
    dout = check_dout(dout, (x.shape[0], num_filters, geo.out_h, geo.out_w))
    dtype = common_dtype(x, w, b, dout)
    x_pad = np.pad(x.astype(dtype), ((0, 0), (0, 0), (geo.pad_h,) * 2, (geo.pad_w,) * 2))
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros(w.shape, dtype=dtype)
    for n in range(x.shape[0]):
        for f in range(num_filters):
            for i in range(geo.out_h):
                top = i * geo.stride_h
                for j in range(geo.out_w):
                    left = j * geo.stride_w
                    grad = dout[n, f, i, j]
                    window = (
                        n,
                        slice(None),
                        slice(top, top + kernel_h),
                        slice(left, left + kernel_w),
                    )
                    dw[f] += grad * x_pad[window]
                    dx_pad[window] += grad * w[f]
    height, width = x.shape[2], x.shape[3]
    dx = dx_pad[:, :, geo.pad_h : geo.pad_h + height, geo.pad_w : geo.pad_w + width].copy()
    db = dout.sum(axis=(0, 2, 3), dtype=dtype)
    return dx, dw, db


def max_pool_forward_naive(x: np.ndarray, pool_param: dict) -> tuple[np.ndarray, PoolCache]:
    """Max pooling by explicit loops over every output element.

    Windows need not tile the input: ``H_out = (H - pool_height) // sh + 1`` and likewise
    for the width; rows and columns no window reaches get zero gradient.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    pool_param : dict
        ``'pool_height'``, ``'pool_width'``: ints >= 1; ``'stride'``: int or pair, >= 1.

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache
    """
    x = check_float_array(x, "x")
    geo = pool_geometry(x, pool_param)
    num, channels = x.shape[:2]
    out = np.empty((num, channels, geo.out_h, geo.out_w), dtype=x.dtype)
    for n in range(num):
        for c in range(channels):
            for i in range(geo.out_h):
                top = i * geo.stride_h
                for j in range(geo.out_w):
                    left = j * geo.stride_w
                    window = x[n, c, top : top + geo.pool_h, left : left + geo.pool_w]
                    out[n, c, i, j] = window.flat[np.argmax(window)]
    return out, PoolCache(x, geo, None)


def max_pool_backward_naive(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Gradient of max pooling: each window's gradient goes to its first maximum.

    "First" is in row-major order within the window (PyTorch's rule among numbers); a NaN
    counts as the maximum of any window it is in, and the first NaN takes the gradient
    (PyTorch gives it to the last NaN).

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache from a max-pool forward pass

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x, geo, _ = check_pool_cache(cache)
    num, channels = x.shape[:2]
    dout = check_dout(dout, (num, channels, geo.out_h, geo.out_w))
    dx = np.zeros(x.shape, dtype=common_dtype(x, dout))
    for n in range(num):
        for c in range(channels):
            for i in range(geo.out_h):
                top = i * geo.stride_h
                for j in range(geo.out_w):
                    left = j * geo.stride_w
                    window = x[n, c, top : top + geo.pool_h, left : left + geo.pool_w]
                    row, col = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, c, top + row, left + col] += dout[n, c, i, j]
    return dx
