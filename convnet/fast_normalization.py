"""Spatial batch normalization by compiled per-channel loops, channels split over threads.

Computes what :func:`convnet.normalization.spatial_batchnorm_forward` and its backward
compute (the numpy reference), in fewer passes over memory: the forward pass reads ``x``
three times (mean, variance, output) and keeps ``x`` itself rather than ``xhat``; the
backward pass reads ``dout`` and ``x`` twice (the two sums per channel, then ``dx``). With
``xhat = (x - mean) * inv_std``, ``a = gamma * inv_std`` and M values per channel,

    dx = a * dout - a * inv_std * (dgamma / M) * (x - mean) - a * (dbeta / M)

in train mode, and ``dx = a * dout`` in test mode. Statistics add up in double. Without
the compiled kernel the numpy layers run instead.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from convnet import _backend
from convnet._parallel import blas_on_one_thread, map_groups
from convnet._validation import check_dout
from convnet.normalization import (
    NormCache,
    batchnorm_setup,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_batchnorm_inputs,
    update_running_statistics,
)

# Below this many values one thread is faster than handing channels to the workers.
SMALL_BATCHNORM_ELEMENTS = 1 << 15


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


def _groups(size: int) -> int | None:
    return 1 if size < SMALL_BATCHNORM_ELEMENTS else None


@blas_on_one_thread
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
    cache : BatchNormCache (a NormCache without the compiled kernel)
    """
    kernel = _backend.batchnorm_kernel
    if kernel is None:
        return spatial_batchnorm_forward(x, gamma, beta, bn_param)
    x, gamma, beta = spatial_batchnorm_inputs(x, gamma, beta)
    num, channels, height, width = x.shape
    layout = (num, channels, height * width)
    setup = batchnorm_setup(x, gamma, beta, bn_param, layout)
    dtype = setup.dtype
    work = np.ascontiguousarray(x, dtype=dtype).reshape(layout)
    count = num * height * width
    groups = _groups(work.size)
    train = setup.mode == "train"
    if train:
        mean, var = np.empty(channels), np.empty(channels)
        map_groups(
            lambda start, stop: kernel.channel_moments(work, mean, var, start, stop),
            channels,
            groups,
        )
        center = mean.astype(dtype)
        update_running_statistics(bn_param, setup, center, var.astype(dtype), count)
    else:
        center = setup.running_mean.astype(dtype)
        var = setup.running_var.astype(np.float64)
        update_running_statistics(bn_param, setup, center, var, count)
    inv_std = (1 / np.sqrt(var + setup.eps)).astype(dtype)
    gamma_c = gamma.reshape(channels).astype(dtype)
    scale = gamma_c * inv_std
    shift = beta.reshape(channels).astype(dtype)
    out = np.empty(layout, dtype=dtype)
    map_groups(
        lambda start, stop: kernel.channel_affine(work, center, scale, shift, out, start, stop),
        channels,
        groups,
    )
    cache = BatchNormCache(work, center, inv_std, gamma_c, train, x.shape, gamma.shape, beta.shape)
    return out.reshape(x.shape), cache


@blas_on_one_thread
def spatial_batchnorm_backward_fast(
    dout: np.ndarray, cache: BatchNormCache | NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`spatial_batchnorm_forward_fast`.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : BatchNormCache from :func:`spatial_batchnorm_forward_fast` (or the NormCache
        of :func:`convnet.normalization.spatial_batchnorm_forward`)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma, dbeta : ndarray, shapes of gamma and beta
    """
    if isinstance(cache, NormCache):
        return spatial_batchnorm_backward(dout, cache)
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
    groups = _groups(work.size)
    sum_dout, sum_dout_x = np.empty(channels), np.empty(channels)
    map_groups(
        lambda start, stop: kernel.channel_gradient_sums(
            dout_work, work, center, sum_dout, sum_dout_x, start, stop
        ),
        channels,
        groups,
    )
    dbeta = sum_dout.astype(dtype)
    dgamma = (sum_dout_x * inv_std).astype(dtype)
    a = gamma * inv_std
    if cache.train:
        count = work.shape[0] * work.shape[2]
        b = (-a * inv_std * (dgamma / count)).astype(dtype)
        c = (-a * (dbeta / count)).astype(dtype)
    else:
        b = c = np.zeros(channels, dtype=dtype)
    dx = np.empty(work.shape, dtype=dtype)
    map_groups(
        lambda start, stop: kernel.channel_input_gradient(
            dout_work, work, center, a, b, c, dx, start, stop
        ),
        channels,
        groups,
    )
    return (
        dx.reshape(cache.x_shape),
        dgamma.reshape(cache.gamma_shape),
        dbeta.reshape(cache.beta_shape),
    )
