"""Reference layers: affine, ReLU, the losses, naive convolution (dilated, grouped and
transposed), max and average pooling, and global average pooling.

The normalizations (:mod:`convnet.normalization`) and dropout (:mod:`convnet.dropout`) live
in their own modules and are re-exported here under CS231n's names.

Each ``*_forward`` returns ``(out, cache)`` and each ``*_backward(dout, cache)`` returns the
gradients. The naive convolution and pooling loop over every output element: slow and
obviously correct, they are what the fast layers are tested against. No function here
modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from convnet._validation import (
    ConvGeometry,
    ConvTransposeGeometry,
    PoolGeometry,
    check_affine_arrays,
    check_affine_cache,
    check_avg_pool_cache,
    check_conv_arrays,
    check_conv_cache,
    check_conv_transpose_arrays,
    check_conv_transpose_backward,
    check_dout,
    check_float_array,
    check_global_pool_cache,
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
    ``algorithm`` is the one the forward pass was asked for, ``memory_format`` the layout
    its kernels ran in (see :mod:`convnet.memory_format`)."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    geometry: ConvGeometry
    algorithm: str = "auto"
    memory_format: str = "contiguous"


class ConvTransposeCache(NamedTuple):
    """What a transposed convolution's backward pass needs (naive and fast layers)."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    geometry: ConvTransposeGeometry


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
    # dout's bits where x > 0, cleared elsewhere: exactly np.where(x > 0, dout, 0) (a NaN
    # in dout where x <= 0 gives 0 too), 15x faster on 1M float32 values (0.24 ms against
    # 3.8 ms measured: numpy's where and masked copies do not vectorize).
    bits = np.dtype(f"i{dtype.itemsize}")
    dx = (x > 0).astype(bits)
    np.negative(dx, out=dx)
    np.bitwise_and(dx, dout.astype(dtype, copy=False).view(bits), out=dx)
    return dx.view(dtype)


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


def _padded(x: np.ndarray, geo: ConvGeometry, dtype: np.dtype) -> np.ndarray:
    return np.pad(x.astype(dtype), ((0, 0), (0, 0), (geo.pad_h,) * 2, (geo.pad_w,) * 2))


def _windows(
    geo: ConvGeometry, kernel_h: int, kernel_w: int
) -> Iterator[tuple[int, int, slice, slice]]:
    """Every output position (i, j) and the rows and columns of the padded input its
    receptive field reads: ``kernel`` taps ``dilation`` apart from ``i*stride``."""
    for i in range(geo.out_h):
        top = i * geo.stride_h
        rows = slice(top, top + geo.dilation_h * (kernel_h - 1) + 1, geo.dilation_h)
        for j in range(geo.out_w):
            left = j * geo.stride_w
            cols = slice(left, left + geo.dilation_w * (kernel_w - 1) + 1, geo.dilation_w)
            yield i, j, rows, cols


def _group_channels(f: int, w: np.ndarray, geo: ConvGeometry) -> slice:
    """The input channels filter ``f`` of ``w`` (F, C // groups, HH, WW) reads."""
    group = f // (w.shape[0] // geo.groups)
    return slice(group * w.shape[1], (group + 1) * w.shape[1])


def _correlate_naive(x: np.ndarray, w: np.ndarray, geo: ConvGeometry, dtype) -> np.ndarray:
    """``out[n, f, i, j] = sum(x_pad[n, channels of f's group, field(i, j)] * w[f])``."""
    x_pad = _padded(x, geo, dtype)
    out = np.zeros((x.shape[0], w.shape[0], geo.out_h, geo.out_w), dtype=dtype)
    for n in range(x.shape[0]):
        for f in range(w.shape[0]):
            channels = _group_channels(f, w, geo)
            for i, j, rows, cols in _windows(geo, *w.shape[2:]):
                out[n, f, i, j] = np.sum(x_pad[n, channels, rows, cols] * w[f])
    return out


def _input_gradient_naive(
    dout: np.ndarray, w: np.ndarray, geo: ConvGeometry, x_shape: tuple, dtype
) -> np.ndarray:
    """Gradient of :func:`_correlate_naive` with respect to ``x`` (of shape ``x_shape``)."""
    height, width = x_shape[2], x_shape[3]
    dx_pad = np.zeros((*x_shape[:2], height + 2 * geo.pad_h, width + 2 * geo.pad_w), dtype=dtype)
    for n in range(dout.shape[0]):
        for f in range(w.shape[0]):
            channels = _group_channels(f, w, geo)
            for i, j, rows, cols in _windows(geo, *w.shape[2:]):
                dx_pad[n, channels, rows, cols] += dout[n, f, i, j] * w[f]
    return dx_pad[:, :, geo.pad_h : geo.pad_h + height, geo.pad_w : geo.pad_w + width].copy()


def _weight_gradient_naive(
    dout: np.ndarray, x: np.ndarray, geo: ConvGeometry, w_shape: tuple, dtype
) -> np.ndarray:
    """Gradient of :func:`_correlate_naive` with respect to ``w`` (of shape ``w_shape``)."""
    x_pad = _padded(x, geo, dtype)
    dw = np.zeros(w_shape, dtype=dtype)
    for n in range(x.shape[0]):
        for f in range(w_shape[0]):
            channels = _group_channels(f, dw, geo)
            for i, j, rows, cols in _windows(geo, *w_shape[2:]):
                dw[f] += dout[n, f, i, j] * x_pad[n, channels, rows, cols]
    return dw


def conv_forward_naive(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> tuple[np.ndarray, ConvCache]:
    """Convolution (cross-correlation) by explicit loops over every output element.

    ``out[n, f, i, j] = b[f] + sum_{c, a, e} x_pad[n, g*Cg + c, i*sh + a*dh, j*sw + e*dw]
    * w[f, c, a, e]``, with ``x_pad`` the input zero-padded by ``pad`` on each side,
    ``Cg = C // groups`` and ``g = f // (F // groups)`` the group of filter ``f``
    (``torch.nn.functional.conv2d``).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C // groups, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'``: int or pair (sh, sw), >= 1; ``'pad'``: int or pair (ph, pw), >= 0;
        optional ``'dilation'``: int or pair (dh, dw), >= 1 (default 1); optional
        ``'groups'``: int >= 1 dividing C and F (default 1).

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = (H + 2*ph - dh*(HH-1) - 1) // sh + 1``, likewise ``W_out``.
    cache : ConvCache
    """
    x, w, b, geo = check_conv_arrays(x, w, b, conv_param)
    dtype = common_dtype(x, w, b)
    out = _correlate_naive(x, w.astype(dtype), geo, dtype)
    out += b.astype(dtype)[:, None, None]
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
    dw : ndarray, shape (F, C // groups, HH, WW)
    db : ndarray, shape (F,)
    """
    x, w, b, geo, _, _ = check_conv_cache(cache)
    dout = check_dout(dout, (x.shape[0], w.shape[0], geo.out_h, geo.out_w))
    dtype = common_dtype(x, w, b, dout)
    dout = dout.astype(dtype)
    dx = _input_gradient_naive(dout, w.astype(dtype), geo, x.shape, dtype)
    dw = _weight_gradient_naive(dout, x, geo, w.shape, dtype)
    return dx, dw, dout.sum(axis=(0, 2, 3))


def conv_transpose_forward_naive(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> tuple[np.ndarray, ConvTransposeCache]:
    """Transposed convolution: the input gradient of a convolution, by explicit loops.

    Every input element scatters its filter taps:
    ``out[n, g*Fg + f, i*sh - ph + a*dh, j*sw - pw + e*dw] += x[n, c, i, j] * w[c, f, a, e]``
    for ``c`` in group ``g`` (``Fg = F // groups``), plus ``b``; taps falling outside the
    output (in the padding) are dropped (``torch.nn.functional.conv_transpose2d``). That
    is the gradient, with respect to its input, of :func:`conv_forward_naive` with the
    same ``w`` (as its (F', C' // groups, HH, WW) filters), stride, pad, dilation and groups.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (C, F // groups, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'``, ``'pad'``, optional ``'output_pad'`` (int or pair >= 0, default 0,
        each smaller than the stride or the dilation), ``'dilation'``, ``'groups'``.

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = (H - 1)*sh - 2*ph + dh*(HH - 1) + output_pad_h + 1``, likewise ``W_out``.
    cache : ConvTransposeCache
    """
    x, w, b, geo = check_conv_transpose_arrays(x, w, b, conv_param)
    dtype = common_dtype(x, w, b)
    out_shape = (x.shape[0], b.shape[0], geo.out_h, geo.out_w)
    out = _input_gradient_naive(x.astype(dtype), w.astype(dtype), geo.conv, out_shape, dtype)
    out += b.astype(dtype)[:, None, None]
    return out, ConvTransposeCache(x, w, b, geo)


def conv_transpose_backward_naive(
    dout: np.ndarray, cache: ConvTransposeCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_transpose_forward_naive`.

    ``dx`` is the convolution of ``dout`` with ``w``; ``dw`` is that convolution's filter
    gradient with the roles of input and upstream gradient swapped.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
    cache : ConvTransposeCache from a transposed-convolution forward pass

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (C, F // groups, HH, WW)
    db : ndarray, shape (F,)
    """
    dout, x, w, b, geo = check_conv_transpose_backward(dout, cache)
    dtype = common_dtype(x, w, b, dout)
    dout = dout.astype(dtype)
    dx = _correlate_naive(dout, w.astype(dtype), geo.conv, dtype)
    dw = _weight_gradient_naive(x.astype(dtype), dout, geo.conv, w.shape, dtype)
    return dx, dw, dout.sum(axis=(0, 2, 3))


def _pool_window(geo: PoolGeometry, i: int, j: int, height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns of the input that output (i, j)'s window covers: the window
    of the padded input, clipped to the input (never empty: pads are below the window)."""
    top, left = i * geo.stride_h - geo.pad_h, j * geo.stride_w - geo.pad_w
    rows = slice(max(top, 0), min(top + geo.pool_h, height))
    cols = slice(max(left, 0), min(left + geo.pool_w, width))
    return rows, cols


def _pool_divisor(geo: PoolGeometry, rows: slice, cols: slice) -> int:
    """What an average divides by: the window's size, or with ``count_include_pad``
    False the input elements it holds."""
    if geo.count_include_pad:
        return geo.pool_h * geo.pool_w
    return (rows.stop - rows.start) * (cols.stop - cols.start)


def max_pool_forward_naive(x: np.ndarray, pool_param: dict) -> tuple[np.ndarray, PoolCache]:
    """Max pooling by explicit loops over every output element.

    Windows need not tile the input: ``H_out = (H + 2 * pad - pool_height) // sh + 1`` and
    likewise for the width; rows and columns no window reaches get zero gradient. Padding
    counts as -inf: a window's maximum is over the input elements it holds.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    pool_param : dict
        ``'pool_height'``, ``'pool_width'``: ints >= 1; ``'stride'``: int or pair, >= 1;
        optional ``'pad'``: int or pair, below the window (default 0).

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache
    """
    x = check_float_array(x, "x")
    geo = pool_geometry(x, pool_param)
    num, channels, height, width = x.shape
    out = np.empty((num, channels, geo.out_h, geo.out_w), dtype=x.dtype)
    for n in range(num):
        for c in range(channels):
            for i in range(geo.out_h):
                for j in range(geo.out_w):
                    rows, cols = _pool_window(geo, i, j, height, width)
                    window = x[n, c, rows, cols]
                    out[n, c, i, j] = window.flat[np.argmax(window)]
    return out, PoolCache(x, geo, None)


def max_pool_backward_naive(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Gradient of max pooling: each window's gradient goes to its first maximum.

    "First" is in row-major order within the window (PyTorch's rule among numbers); a NaN
    counts as the maximum of any window it is in, and the first NaN takes the gradient
    (PyTorch gives it to the last NaN). Padding never takes it: a window of -inf inputs
    sends it to its first input element, as PyTorch does.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache from a max-pool forward pass

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x, geo, _ = check_pool_cache(cache)
    num, channels, height, width = x.shape
    dout = check_dout(dout, (num, channels, geo.out_h, geo.out_w))
    dx = np.zeros(x.shape, dtype=common_dtype(x, dout))
    for n in range(num):
        for c in range(channels):
            for i in range(geo.out_h):
                for j in range(geo.out_w):
                    rows, cols = _pool_window(geo, i, j, height, width)
                    window = x[n, c, rows, cols]
                    row, col = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, c, rows.start + row, cols.start + col] += dout[n, c, i, j]
    return dx


def avg_pool_forward_naive(x: np.ndarray, pool_param: dict) -> tuple[np.ndarray, PoolCache]:
    """Average pooling by explicit loops over every output element.

    ``H_out = (H + 2 * pad - pool_height) // sh + 1`` and likewise for the width, as
    ``torch.nn.functional.avg_pool2d``: padding adds zeros, and each average divides by
    the window's size (``count_include_pad``, the default) or by the input elements the
    window holds.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    pool_param : dict
        ``'pool_height'``, ``'pool_width'``: ints >= 1; ``'stride'``: int or pair, >= 1;
        optional ``'pad'`` (int or pair, below the window, default 0) and
        ``'count_include_pad'`` (default True).

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache (its ``argmax`` is None)
    """
    x = check_float_array(x, "x")
    geo = pool_geometry(x, pool_param)
    num, channels, height, width = x.shape
    out = np.empty((num, channels, geo.out_h, geo.out_w), dtype=x.dtype)
    for n in range(num):
        for c in range(channels):
            for i in range(geo.out_h):
                for j in range(geo.out_w):
                    rows, cols = _pool_window(geo, i, j, height, width)
                    divisor = _pool_divisor(geo, rows, cols)
                    out[n, c, i, j] = np.sum(x[n, c, rows, cols]) / divisor
    return out, PoolCache(x, geo, None)


def avg_pool_backward_naive(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Gradient of average pooling: each window spreads ``dout`` divided by its divisor
    (see :func:`avg_pool_forward_naive`) over its input elements (overlapping windows add
    up).

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache from an average-pool forward pass

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x, geo = check_avg_pool_cache(cache)
    num, channels, height, width = x.shape
    dout = check_dout(dout, (num, channels, geo.out_h, geo.out_w))
    dx = np.zeros(x.shape, dtype=common_dtype(x, dout))
    for n in range(num):
        for c in range(channels):
            for i in range(geo.out_h):
                for j in range(geo.out_w):
                    rows, cols = _pool_window(geo, i, j, height, width)
                    dx[n, c, rows, cols] += dout[n, c, i, j] / _pool_divisor(geo, rows, cols)
    return dx


def global_avg_pool_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global average pooling: the mean of each channel over its H x W positions.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), with H, W >= 1

    Returns
    -------
    out : ndarray, shape (N, C)
    cache : ndarray, x itself
    """
    x = check_float_array(x, "x")
    check_ndim(x, 4, "x", "(N, C, H, W)")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x must have at least one position to average, got shape {x.shape}")
    return x.mean(axis=(2, 3)), x


def global_avg_pool_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """Gradient of :func:`global_avg_pool_forward`: ``dout / (H * W)`` at every position.

    Parameters
    ----------
    dout : ndarray, shape (N, C)
    cache : ndarray, x from :func:`global_avg_pool_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x = check_global_pool_cache(cache)
    dout = check_dout(dout, x.shape[:2])
    dtype = common_dtype(x, dout)
    share = dout.astype(dtype) / dtype.type(x.shape[2] * x.shape[3])
    return np.broadcast_to(share[:, :, None, None], x.shape).copy()
