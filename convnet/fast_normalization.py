"""Spatial batch normalization by compiled per-channel loops (``convnet._batchnorm``).

Computes what :func:`convnet.normalization.spatial_batchnorm_forward` and its backward
compute (the numpy reference), in fewer passes over memory: the forward pass reads ``x``
three times (mean, variance, output) and keeps ``x`` itself rather than ``xhat``; the
backward pass reads ``dout`` and ``x`` twice (the two sums per channel, then ``dx``). With
``xhat = (x - mean) * inv_std``, ``a = gamma * inv_std`` and M values per channel,

    dx = a * dout - a * inv_std * (dgamma / M) * (x - mean) - a * (dbeta / M)

in train mode, and ``dx = a * dout`` in test mode. Statistics add up in double. The
channels go to the worker threads from ``MEMORY_BOUND_MIN_ELEMENTS`` values on. Without
the compiled kernel the numpy layers run instead.

On channels-last float32 images (:mod:`convnet.memory_format`) the channels-last kernels
run instead, also fused with a following ReLU (:func:`spatial_batchnorm_relu_forward_fast`).
The (N, C, H, W) channels-last array is, in memory, (N*H*W, C) rows of one pixel each, so
every channel's statistics run down a column and the compiled loops
(:mod:`convnet._channels_last`, ``_cl_norm_impl.h``) work on vectors of channels:

- forward (train mode): one pass for the sums of ``x - s`` and ``(x - s)**2`` per channel
  (``s`` the channel's value in the first row: for data near it no cancellation occurs),
  then one pass ``out = (x - mean) * scale + beta`` with ``scale = gamma * inv_std``
  (centered first, so channels far from 0 lose no precision), ``max(out, 0)`` when a ReLU
  follows;
- backward: one pass for the sums of ``g`` and ``g * (x - mean)``, then one pass
  ``dx = k1 * g + k2 * (x - mean) + k3``, where ``g`` is dout, zeroed where the fused
  ReLU's output was 0 (recomputed from x with the forward's mean, scale and offset, so the
  mask is exactly the forward's).

Sums add up in double. The maths (mean, variance, running statistics, k1..k3) is done on
(C,) vectors here; only the passes over the pixels are compiled.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from convnet import _backend
from convnet._layout import from_nhwc, is_channels_last, nhwc
from convnet._parallel import map_groups, memory_bound_groups, pool_parts
from convnet._validation import check_dout, common_dtype
from convnet.fast_activation import relu_backward_fast, relu_forward_fast
from convnet.normalization import (
    NormCache,
    batchnorm_setup,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_batchnorm_inputs,
    update_running_statistics,
)


class BatchNormCache(NamedTuple):
    """What :func:`spatial_batchnorm_backward_fast` needs: ``x`` as (N, C, M) in the
    working dtype, the per-channel ``center`` (the mean) and ``inv_std``, ``gamma`` (C,)."""

    x: np.ndarray
    center: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    train: bool
    x_shape: tuple[int, ...]
    gamma_shape: tuple[int, ...]
    beta_shape: tuple[int, ...]


class ChannelsLastNormCache(NamedTuple):
    """What the backward pass needs: ``rows`` (N*H*W, C) of x, the per-channel ``mean``,
    ``inv_std``, ``gamma`` (float32, (C,)) and the ``scale``, ``offset`` the forward
    pass applied (``(x - mean) * scale + offset``); whether it ran in train mode and with a
    fused ReLU; the shapes."""

    rows: np.ndarray
    mean: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    train: bool
    relu: bool
    x_shape: tuple[int, ...]
    gamma_shape: tuple[int, ...]
    beta_shape: tuple[int, ...]


def spatial_batchnorm_forward_fast(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict
) -> tuple[np.ndarray, BatchNormCache | NormCache]:
    """Spatial batch norm forward: per-channel statistics over the batch, height and width.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    gamma, beta : ndarray, shape (C,) or (1, C, 1, 1)
    bn_param : dict
        As for :func:`convnet.normalization.spatial_batchnorm_forward` (``'mode'``
        required; ``'eps'``, ``'momentum'``, ``'running_mean'``, ``'running_var'``); train
        mode stores the new running statistics in it.

    Returns
    -------
    out : ndarray, shape (N, C, H, W), the common dtype of the inputs
        Channels-last when x is (float32: see :mod:`convnet.memory_format`).
    cache : BatchNormCache, or ChannelsLastNormCache for channels-last float32 x (a
        NormCache without the compiled kernel)
    """
    kernel = _backend.batchnorm_kernel
    if kernel is None:
        return spatial_batchnorm_forward(x, gamma, beta, bn_param)
    x, gamma, beta = spatial_batchnorm_inputs(x, gamma, beta)
    if is_channels_last(x) and _channels_last_applies(common_dtype(x, gamma, beta)):
        return _channels_last_forward(x, gamma, beta, bn_param, relu=False)
    num, channels, height, width = x.shape
    layout = (num, channels, height * width)
    setup = batchnorm_setup(x, gamma, beta, bn_param, layout)
    dtype = setup.dtype
    work = np.ascontiguousarray(x, dtype=dtype).reshape(layout)
    train = setup.mode == "train"
    gamma_c, beta_c = (
        np.ascontiguousarray(p.reshape(channels), dtype=dtype) for p in (gamma, beta)
    )
    var = np.empty(channels)
    if train:
        center, inv_std = np.empty(channels, dtype=dtype), np.empty(channels, dtype=dtype)
    else:
        center = setup.running_mean.astype(dtype)
        inv_std = (1 / np.sqrt(setup.running_var.astype(np.float64) + setup.eps)).astype(dtype)
    out = np.empty(layout, dtype=dtype)
    map_groups(
        lambda start, stop: kernel.forward_channels(
            work, gamma_c, beta_c, setup.eps, train, center, inv_std, var, out, start, stop
        ),
        channels,
        memory_bound_groups(work.size),
    )
    if train:
        update_running_statistics(bn_param, setup, center, var.astype(dtype), num * height * width)
    cache = BatchNormCache(work, center, inv_std, gamma_c, train, x.shape, gamma.shape, beta.shape)
    return out.reshape(x.shape), cache


def spatial_batchnorm_backward_fast(
    dout: np.ndarray, cache: BatchNormCache | NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`spatial_batchnorm_forward_fast`.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : BatchNormCache or ChannelsLastNormCache from
        :func:`spatial_batchnorm_forward_fast` (or the NormCache of
        :func:`convnet.normalization.spatial_batchnorm_forward`)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma, dbeta : ndarray, shapes of gamma and beta
    """
    if isinstance(cache, NormCache):
        return spatial_batchnorm_backward(dout, cache)
    if isinstance(cache, ChannelsLastNormCache):
        if cache.relu:
            raise ValueError(
                "this cache belongs to spatial_batchnorm_relu_forward_fast: use "
                "spatial_batchnorm_relu_backward_fast"
            )
        return _channels_last_backward(dout, cache)
    if not isinstance(cache, BatchNormCache):
        raise TypeError(
            f"cache must be the BatchNormCache of spatial_batchnorm_forward_fast, got "
            f"{type(cache).__name__}"
        )
    kernel = _backend.batchnorm_kernel
    dout = check_dout(dout, cache.x_shape)
    dtype = np.result_type(cache.x.dtype, dout.dtype)
    work, center, inv_std, gamma = (
        array.astype(dtype, copy=False)
        for array in (cache.x, cache.center, cache.inv_std, cache.gamma)
    )
    dout_work = np.ascontiguousarray(dout, dtype=dtype).reshape(work.shape)
    channels = work.shape[1]
    dx = np.empty(work.shape, dtype=dtype)
    dgamma, dbeta = np.empty(channels, dtype=dtype), np.empty(channels, dtype=dtype)
    map_groups(
        lambda start, stop: kernel.backward_channels(
            dout_work, work, center, inv_std, gamma, cache.train, dx, dgamma, dbeta, start, stop
        ),
        channels,
        memory_bound_groups(work.size),
    )
    return (
        dx.reshape(cache.x_shape),
        dgamma.reshape(cache.gamma_shape),
        dbeta.reshape(cache.beta_shape),
    )


def _channels_last_backward(
    dout: np.ndarray, cache: ChannelsLastNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The channels-last kernels' gradients for float32 ``dout``; for a float64 ``dout``
    (the gradients are then float64), the contiguous pass on the cache's values."""
    dout = check_dout(dout, cache.x_shape)
    if dout.dtype == np.float32:
        return _channels_last_kernels_backward(dout, cache)
    num, channels, height, width = cache.x_shape
    x = from_nhwc(cache.rows.reshape(num, height, width, channels))
    if cache.relu:  # where the forward pass's output was positive, by its own multiply-add
        out = np.empty_like(cache.rows)
        _backend.channels_last_kernel.scale_rows(
            cache.rows, cache.mean, cache.scale, cache.offset, True, out, pool_parts(out.size)
        )
        dout = np.where(from_nhwc(out.reshape(num, height, width, channels)) > 0, dout, 0)
    contiguous = BatchNormCache(
        np.ascontiguousarray(x).reshape(num, channels, height * width),
        cache.mean,
        cache.inv_std,
        cache.gamma,
        cache.train,
        cache.x_shape,
        cache.gamma_shape,
        cache.beta_shape,
    )
    return spatial_batchnorm_backward_fast(dout, contiguous)


def spatial_batchnorm_relu_forward_fast(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict
) -> tuple[np.ndarray, ChannelsLastNormCache | tuple]:
    """``relu(spatial batch norm(x))``: in one pass over channels-last float32 images,
    else :func:`spatial_batchnorm_forward_fast` then
    :func:`convnet.fast_activation.relu_forward_fast`.

    The fused pass computes exactly what the two layers compute (the same multiply-add,
    then ``max(., 0)``), and its backward pass masks the gradient by recomputing that
    output from x, without storing it.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    gamma, beta : ndarray, shape (C,) or (1, C, 1, 1)
    bn_param : dict
        As for :func:`spatial_batchnorm_forward_fast`.

    Returns
    -------
    out : ndarray, shape (N, C, H, W)
    cache : for :func:`spatial_batchnorm_relu_backward_fast`
    """
    if _backend.batchnorm_kernel is not None:
        x, gamma, beta = spatial_batchnorm_inputs(x, gamma, beta)
        if is_channels_last(x) and _channels_last_applies(common_dtype(x, gamma, beta)):
            return _channels_last_forward(x, gamma, beta, bn_param, relu=True)
    normalized, norm_cache = spatial_batchnorm_forward_fast(x, gamma, beta, bn_param)
    out, relu_cache = relu_forward_fast(normalized)
    return out, (norm_cache, relu_cache)


def spatial_batchnorm_relu_backward_fast(
    dout: np.ndarray, cache: ChannelsLastNormCache | tuple
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`spatial_batchnorm_relu_forward_fast`.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : from :func:`spatial_batchnorm_relu_forward_fast`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma, dbeta : ndarray, shapes of gamma and beta
    """
    if isinstance(cache, ChannelsLastNormCache):
        if not cache.relu:
            raise ValueError("this cache belongs to a batch norm without the fused ReLU")
        return _channels_last_backward(dout, cache)
    if not (isinstance(cache, tuple) and len(cache) == 2):
        raise TypeError(
            "cache must be what spatial_batchnorm_relu_forward_fast returned, got "
            f"{type(cache).__name__}"
        )
    norm_cache, relu_cache = cache
    return spatial_batchnorm_backward_fast(relu_backward_fast(dout, relu_cache), norm_cache)


def _channels_last_applies(dtype: np.dtype) -> bool:
    """Whether the channels-last kernels run a batch norm of a channels-last x computed in
    ``dtype``: float32, with the compiled ``convnet._channels_last`` loaded."""
    return dtype == np.float32 and _backend.channels_last_kernel is not None


def _channels_last_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict, relu: bool
) -> tuple[np.ndarray, ChannelsLastNormCache]:
    """Batch norm of channels-last float32 ``x`` (then ReLU with ``relu``) by the
    channels-last kernels: the channels-last output and the cache. ``bn_param`` as for
    :func:`spatial_batchnorm_forward_fast`."""
    kernel = _backend.channels_last_kernel
    num, channels, height, width = x.shape
    setup = batchnorm_setup(x, gamma, beta, bn_param, (num, channels, height * width))
    rows = nhwc(x, np.float32).reshape(-1, channels)
    parts = pool_parts(rows.size)
    train = setup.mode == "train"
    if train:
        shift = rows[0].copy()
        sums = np.zeros((parts, 2, channels))
        kernel.shifted_column_sums(rows, shift, sums, parts)
        first, second = sums.sum(axis=0) / rows.shape[0]
        mean64 = shift + first
        var = np.maximum(second - first * first, 0.0)
        inv_std = (1 / np.sqrt(var + setup.eps)).astype(np.float32)
        mean = mean64.astype(np.float32)
        update_running_statistics(bn_param, setup, mean64, var, rows.shape[0])
        bn_param["running_mean"] = bn_param["running_mean"].astype(setup.dtype)
        bn_param["running_var"] = bn_param["running_var"].astype(setup.dtype)
    else:
        mean = setup.running_mean.astype(np.float32)
        inv_std = (1 / np.sqrt(setup.running_var.astype(np.float64) + setup.eps)).astype(np.float32)
    gamma_c = np.ascontiguousarray(gamma.reshape(channels), dtype=np.float32)
    scale = gamma_c * inv_std
    offset = np.ascontiguousarray(beta.reshape(channels), dtype=np.float32)
    out = np.empty_like(rows)
    kernel.scale_rows(rows, mean, scale, offset, relu, out, parts)
    cache = ChannelsLastNormCache(
        rows,
        mean,
        inv_std,
        gamma_c,
        scale,
        offset,
        train,
        relu,
        x.shape,
        gamma.shape,
        beta.shape,
    )
    return from_nhwc(out.reshape(num, height, width, channels)), cache


def _channels_last_kernels_backward(
    dout: np.ndarray, cache: ChannelsLastNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx channels-last, dgamma, dbeta) of :func:`_channels_last_forward` for
    float32 ``dout`` (any layout, checked to have x's shape)."""
    kernel = _backend.channels_last_kernel
    rows = cache.rows
    count, channels = rows.shape
    parts = pool_parts(rows.size)
    dout_rows = nhwc(dout, np.float32).reshape(count, channels)
    sums = np.zeros((parts, 2, channels))
    kernel.norm_gradient_sums(
        rows, dout_rows, cache.mean, cache.scale, cache.offset, cache.relu, sums, parts
    )
    dbeta, centered = sums.sum(axis=0)
    inv_std = cache.inv_std.astype(np.float64)
    dgamma = centered * inv_std
    k1 = cache.gamma.astype(np.float64) * inv_std
    if cache.train:
        k2 = -k1 * inv_std * dgamma / count
        k3 = -k1 * dbeta / count
    else:
        k2 = k3 = np.zeros(channels)
    dx = np.empty_like(rows)
    kernel.norm_input_gradient(
        rows,
        dout_rows,
        cache.mean,
        cache.scale,
        cache.offset,
        cache.relu,
        *(k.astype(np.float32) for k in (k1, k2, k3)),
        dx,
        parts,
    )
    num, _, height, width = cache.x_shape
    return (
        from_nhwc(dx.reshape(num, height, width, channels)),
        dgamma.astype(np.float32).reshape(cache.gamma_shape),
        dbeta.astype(np.float32).reshape(cache.beta_shape),
    )
