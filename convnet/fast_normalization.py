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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from convnet import _backend
from convnet._parallel import map_groups, memory_bound_groups
from convnet._validation import check_dout
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
