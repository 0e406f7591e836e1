"""Batch, layer and group normalization: forward and backward passes (vectorized numpy).

Every normalization standardizes ``x`` over some axes and then scales and shifts it:

    xhat = (x - mean) / sqrt(var + eps),    out = gamma * xhat + beta,

with the biased variance ``var = mean((x - mean)**2)`` (the forward pass of PyTorch and of
CS231n alike). The statistics are taken

- batch norm: per feature, over the batch (``x`` (N, D));
- spatial batch norm: per channel, over the batch, height and width (``x`` (N, C, H, W));
- layer norm: per sample, over its features (``x`` (N, D));
- group norm: per sample and group of ``C // G`` channels, over the group's channels,
  height and width (``x`` (N, C, H, W); G = 1 is a layer norm over (C, H, W), G = C an
  instance norm).

Backward pass, in closed form. With ``dxhat = dout * gamma`` and the means taken over the
axes of the statistics,

    dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps):

the two subtracted terms are the gradient through the mean and through the variance. The
parameter gradients are ``dgamma = sum(dout * xhat)`` and ``dbeta = sum(dout)`` over every
axis but the parameter's, and they supply the two means: for batch norm, where gamma is
constant over a statistic's M values, ``mean(dxhat) = gamma * dbeta / M`` and
``mean(dxhat * xhat) = gamma * dgamma / M``; for layer and group norm the per-sample,
per-channel sums of ``dout`` and ``dout * xhat`` give both the parameter gradients and the
per-sample means. Each backward pass makes a handful of passes over memory (measured in
``benchmarks/bench_norm.py``).

Running statistics (batch norm)
-------------------------------
In train mode ``bn_param['running_mean']`` and ``bn_param['running_var']`` are replaced by
new arrays ``momentum * running + (1 - momentum) * batch``, where the batch variance is the
*unbiased* ``var * M / (M - 1)``, as in PyTorch's ``BatchNorm`` (CS231n's reference keeps
the biased ``var``; the two differ by the factor M / (M - 1), 1.005 for a batch of 200, so
test-mode results agree with a PyTorch model trained on the same batches). PyTorch's
``momentum`` m is our ``1 - m``: its default 0.1 is our default 0.9. Test mode normalizes
with the running statistics, which are then fixed: ``dx = dout * gamma / sqrt(running_var +
eps)``.

dtypes: the computation and every output use the common dtype of ``x``, ``gamma`` and
``beta`` (float32 stays float32); new running statistics keep numpy's promotion of the old
ones and the batch statistics. No function here modifies its inputs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from convnet._validation import (
    _positive_int,
    check_dout,
    check_float_array,
    check_mode,
    check_ndim,
    check_scale_shift,
    common_dtype,
    real_param,
)

DEFAULT_EPS = 1e-5
DEFAULT_MOMENTUM = 0.9


class NormCache(NamedTuple):
    """What a normalization's backward pass needs.

    The arrays are in a working layout in which ``gamma`` broadcasts: (N, C, M) for batch
    norm (statistics over axes 0 and 2, M = H * W, or 1 for (N, D) input), and
    (N, G, C // G, M) for group norm (statistics over axes 2 and 3; layer norm is the case
    G = 1, M = 1).
    """

    xhat: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    kind: str  # "batch", "fixed" (batch norm in test mode) or "sample" (layer, group norm)
    x_shape: tuple[int, ...]
    gamma_shape: tuple[int, ...]
    beta_shape: tuple[int, ...]


def _eps(params: Any, what: str) -> float:
    if not isinstance(params, dict):
        raise TypeError(f"{what} must be a dict, got {type(params).__name__}")
    return real_param(params, "eps", what, DEFAULT_EPS, 0.0, math.inf, low_open=True)


def _standardize(
    x: np.ndarray, axes: tuple[int, ...], eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``xhat``, and the mean, biased variance and ``1 / sqrt(var + eps)`` (kept dims)."""
    mean = x.mean(axis=axes, keepdims=True)
    xhat = x - mean
    var = np.mean(np.square(xhat), axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(var + eps)
    xhat *= inv_std
    return xhat, mean, var, inv_std


def _scale_shift(xhat: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    out = xhat * gamma
    out += beta
    return out


def _running_stat(bn_param: dict, key: str, channels: int, fill: float, dtype: Any) -> np.ndarray:
    """``bn_param[key]`` checked to be (channels,), or a new constant array if absent."""
    value = bn_param.get(key)
    if value is None:
        return np.full(channels, fill, dtype=dtype)
    value = check_float_array(value, f"bn_param[{key!r}]")
    if value.shape != (channels,):
        raise ValueError(
            f"bn_param[{key!r}] must have shape ({channels},), got {value.shape}; it belongs "
            f"to a layer with another number of features"
        )
    return value


def _checked_x(x: Any, spatial: bool) -> np.ndarray:
    """``x`` as a float array of shape (N, C, H, W) if ``spatial``, else (N, D)."""
    x = check_float_array(x, "x")
    if spatial:
        check_ndim(x, 4, "x", "(N, C, H, W)")
    else:
        check_ndim(x, 2, "x", "(N, D)")
    return x


def _checked_scale_shift(
    gamma: Any, beta: Any, x: np.ndarray, norm: str
) -> tuple[np.ndarray, np.ndarray]:
    """``gamma`` and ``beta`` of a checked ``x``: shape (C,), or (1, C, 1, 1) for 4-d ``x``."""
    features = x.shape[1]
    shapes: tuple[tuple[int, ...], ...] = ((features,),)
    if x.ndim == 4:
        shapes += ((1, features, 1, 1),)
    what = f"{norm} of x with shape {x.shape}"
    return (
        check_scale_shift(gamma, "gamma", shapes, what),
        check_scale_shift(beta, "beta", shapes, what),
    )


class BatchNormSetup(NamedTuple):
    """Batch norm's validated parameters: what ``bn_param`` asks for."""

    mode: str
    eps: float
    momentum: float
    dtype: np.dtype
    running_mean: np.ndarray
    running_var: np.ndarray


def batchnorm_setup(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: Any, layout: tuple[int, int, int]
) -> BatchNormSetup:
    """Check ``bn_param`` for a batch norm of ``x`` viewed as ``layout`` (N, C, M); in test
    mode, store the running statistics it uses in it (zeros and ones when absent)."""
    mode = check_mode(bn_param, "bn_param")
    eps = _eps(bn_param, "bn_param")
    momentum = real_param(
        bn_param, "momentum", "bn_param", DEFAULT_MOMENTUM, 0.0, 1.0, low_open=False
    )
    dtype = common_dtype(x, gamma, beta)
    num, channels, size = layout
    running_mean = _running_stat(bn_param, "running_mean", channels, 0.0, dtype)
    running_var = _running_stat(bn_param, "running_var", channels, 1.0, dtype)
    if mode == "train" and num * size < 2:
        raise ValueError(
            f"batch norm in train mode needs more than one value per feature, got x of "
            f"shape {x.shape}: the batch variance of a single value is undefined"
        )
    if mode != "train":  # test mode keeps the running statistics (the defaults if absent)
        bn_param.setdefault("running_mean", running_mean)
        bn_param.setdefault("running_var", running_var)
    return BatchNormSetup(mode, eps, momentum, dtype, running_mean, running_var)


def update_running_statistics(
    bn_param: dict, setup: BatchNormSetup, mean: np.ndarray, var: np.ndarray, count: int
) -> None:
    """Store ``momentum * running + (1 - momentum) * batch`` in ``bn_param`` (train mode),
    from the batch ``mean`` and biased ``var`` (C,) over ``count`` values."""
    momentum = setup.momentum
    unbiased = var * (count / (count - 1))
    bn_param["running_mean"] = momentum * setup.running_mean + (1 - momentum) * mean
    bn_param["running_var"] = momentum * setup.running_var + (1 - momentum) * unbiased


def _batchnorm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: Any, layout: tuple[int, int, int]
) -> tuple[np.ndarray, NormCache]:
    """Batch norm of ``x`` viewed as ``layout`` (N, C, M): statistics over axes 0 and 2."""
    setup = batchnorm_setup(x, gamma, beta, bn_param, layout)
    dtype = setup.dtype
    num, channels, size = layout
    work = x.astype(dtype, copy=False).reshape(layout)
    stat_shape = (1, channels, 1)
    if setup.mode == "train":
        xhat, mean, var, inv_std = _standardize(work, (0, 2), setup.eps)
        update_running_statistics(
            bn_param, setup, mean.reshape(channels), var.reshape(channels), num * size
        )
        kind = "batch"
    else:
        mean = setup.running_mean.astype(dtype, copy=False).reshape(stat_shape)
        running_var = setup.running_var.astype(dtype, copy=False).reshape(stat_shape)
        inv_std = 1 / np.sqrt(running_var + setup.eps)
        xhat = work - mean
        xhat *= inv_std
        kind = "fixed"
    gamma_work = gamma.astype(dtype, copy=False).reshape(stat_shape)
    out = _scale_shift(xhat, gamma_work, beta.astype(dtype, copy=False).reshape(stat_shape))
    cache = NormCache(xhat, inv_std, gamma_work, kind, x.shape, gamma.shape, beta.shape)
    return out.reshape(x.shape), cache


def _per_sample_norm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, layout: tuple[int, ...]
) -> tuple[np.ndarray, NormCache]:
    """Group norm of ``x`` viewed as ``layout`` (N, G, C // G, M): statistics over axes 2, 3."""
    dtype = common_dtype(x, gamma, beta)
    param_shape = (1, layout[1], layout[2], 1)
    xhat, _, _, inv_std = _standardize(x.astype(dtype, copy=False).reshape(layout), (2, 3), eps)
    gamma_work = gamma.astype(dtype, copy=False).reshape(param_shape)
    out = _scale_shift(xhat, gamma_work, beta.astype(dtype, copy=False).reshape(param_shape))
    cache = NormCache(xhat, inv_std, gamma_work, "sample", x.shape, gamma.shape, beta.shape)
    return out.reshape(x.shape), cache


def _per_sample_backward(
    dout: np.ndarray, cache: NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer and group norm backward in the layout (N, G, C // G, M).

    Per sample and channel, ``s1 = sum_m dout`` and ``s2 = sum_m dout * xhat``; summed
    over the batch they are dbeta and dgamma, and weighted by gamma and summed over the
    group's channels they are M' times the two means of the closed form (M' = C // G * M).
    """
    xhat, inv_std, gamma = cache.xhat, cache.inv_std, cache.gamma
    if xhat.shape[3] == 1:  # layer norm: nothing to sum over M
        s1, s2 = dout, dout * xhat
    else:
        s1 = dout.sum(axis=3, keepdims=True)
        s2 = np.sum(dout * xhat, axis=3, keepdims=True)
    count = xhat.shape[2] * xhat.shape[3]
    mean_dxhat = np.sum(s1 * gamma, axis=2, keepdims=True) / count
    mean_dxhat_xhat = np.sum(s2 * gamma, axis=2, keepdims=True) / count
    dx = dout * gamma
    dx -= xhat * mean_dxhat_xhat
    dx -= mean_dxhat
    dx *= inv_std
    return dx, s2.sum(axis=0), s1.sum(axis=0)


def _normalize_backward(
    dout: np.ndarray, cache: NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of any normalization, from its cache (closed form)."""
    if not isinstance(cache, NormCache):
        raise TypeError(
            f"cache must be the NormCache of a normalization forward pass, got "
            f"{type(cache).__name__}"
        )
    xhat, inv_std, gamma = cache.xhat, cache.inv_std, cache.gamma
    dout = check_dout(dout, cache.x_shape)
    dout = dout.astype(common_dtype(xhat, dout), copy=False).reshape(xhat.shape)
    if cache.kind == "sample":
        dx, dgamma, dbeta = _per_sample_backward(dout, cache)
    else:
        dbeta = dout.sum(axis=(0, 2))
        dgamma = np.sum(dout * xhat, axis=(0, 2))
        if cache.kind == "fixed":
            dx = dout * (gamma * inv_std)
        else:
            count = xhat.size // dbeta.size
            dx = dout - (dbeta / count)[:, None]
            dx -= xhat * (dgamma / count)[:, None]
            dx *= gamma * inv_std
    return (
        dx.reshape(cache.x_shape),
        dgamma.reshape(cache.gamma_shape),
        dbeta.reshape(cache.beta_shape),
    )


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict
) -> tuple[np.ndarray, NormCache]:
    """Batch normalization of the features of a batch of vectors.

    Train mode normalizes each feature with the batch's mean and biased variance and
    updates the running statistics; test mode normalizes with the running statistics.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    gamma, beta : ndarray, shape (D,)
        Scale and shift.
    bn_param : dict
        ``'mode'``: 'train' or 'test' (required). ``'eps'`` (default 1e-5), ``'momentum'``
        (default 0.9), ``'running_mean'`` and ``'running_var'`` ((D,); zeros and ones when
        absent). Train mode (which needs N > 1) stores new arrays
        ``momentum * running + (1 - momentum) * batch`` under the two keys, with the batch's
        unbiased variance (PyTorch's choice; see the module notes).

    Returns
    -------
    out : ndarray, shape (N, D)
    cache : NormCache
    """
    x = _checked_x(x, spatial=False)
    gamma, beta = _checked_scale_shift(gamma, beta, x, "batch norm")
    return _batchnorm(x, gamma, beta, bn_param, (*x.shape, 1))


def batchnorm_backward(
    dout: np.ndarray, cache: NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batchnorm_forward` (closed form; see the module notes).

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : NormCache from :func:`batchnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma, dbeta : ndarray, shape (D,)
    """
    return _normalize_backward(dout, cache)


def batchnorm_backward_alt(
    dout: np.ndarray, cache: NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same as :func:`batchnorm_backward`, which already is the closed form.

    CS231n asks for a staged ``batchnorm_backward`` and a simplified ``_alt``; notebooks
    that time one against the other run unchanged.
    """
    return _normalize_backward(dout, cache)


def spatial_batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict
) -> tuple[np.ndarray, NormCache]:
    """Batch normalization of each channel over the batch, height and width.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    gamma, beta : ndarray, shape (C,) or (1, C, 1, 1)
        Scale and shift per channel; their gradients come back in the same shapes.
    bn_param : dict
        As for :func:`batchnorm_forward`, with running statistics of shape (C,); train mode
        needs N * H * W > 1 and uses the unbiased variance over those values.

    Returns
    -------
    out : ndarray, shape (N, C, H, W)
    cache : NormCache
    """
    x, gamma, beta = spatial_batchnorm_inputs(x, gamma, beta)
    num, channels, height, width = x.shape
    return _batchnorm(x, gamma, beta, bn_param, (num, channels, height * width))


def spatial_batchnorm_inputs(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` (N, C, H, W), ``gamma`` and ``beta`` (C,) or (1, C, 1, 1), checked."""
    x = _checked_x(x, spatial=True)
    gamma, beta = _checked_scale_shift(gamma, beta, x, "spatial batch norm")
    return x, gamma, beta


def spatial_batchnorm_backward(
    dout: np.ndarray, cache: NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`spatial_batchnorm_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : NormCache from :func:`spatial_batchnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma, dbeta : ndarray, shapes of gamma and beta
    """
    return _normalize_backward(dout, cache)


def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, ln_param: dict
) -> tuple[np.ndarray, NormCache]:
    """Layer normalization: each sample normalized over its own features.

    The same in train and test mode (no running statistics): a ``'mode'`` key in
    ``ln_param`` is ignored, so a ``bn_param`` can be passed as it is.

    Parameters
    ----------
    x : ndarray, shape (N, D), D >= 1
    gamma, beta : ndarray, shape (D,)
    ln_param : dict
        ``'eps'`` (default 1e-5).

    Returns
    -------
    out : ndarray, shape (N, D)
    cache : NormCache
    """
    x = _checked_x(x, spatial=False)
    if x.shape[1] < 1:
        raise ValueError(f"layer norm needs at least one feature per sample, got x {x.shape}")
    gamma, beta = _checked_scale_shift(gamma, beta, x, "layer norm")
    eps = _eps(ln_param, "ln_param")
    return _per_sample_norm(x, gamma, beta, eps, (x.shape[0], 1, x.shape[1], 1))


def layernorm_backward(
    dout: np.ndarray, cache: NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`layernorm_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, D)
    cache : NormCache from :func:`layernorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, D)
    dgamma, dbeta : ndarray, shape (D,)
    """
    return _normalize_backward(dout, cache)


def spatial_groupnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, G: int, gn_param: dict
) -> tuple[np.ndarray, NormCache]:
    """Group normalization: each sample's channels split into G groups, each normalized
    over its channels, height and width. The same in train and test mode.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), H * W >= 1
    gamma, beta : ndarray, shape (C,) or (1, C, 1, 1)
        Scale and shift per channel; their gradients come back in the same shapes.
    G : int
        Number of groups; must divide C.
    gn_param : dict
        ``'eps'`` (default 1e-5); other keys (such as ``'mode'``) are ignored.

    Returns
    -------
    out : ndarray, shape (N, C, H, W)
    cache : NormCache
    """
    x = _checked_x(x, spatial=True)
    num, channels, height, width = x.shape
    groups = _positive_int(G, "G (the number of groups)", 1)
    if channels % groups:
        raise ValueError(f"G = {groups} groups must divide the C = {channels} channels of x")
    if height * width < 1:
        raise ValueError(f"group norm needs at least one pixel per channel, got x {x.shape}")
    gamma, beta = _checked_scale_shift(gamma, beta, x, "group norm")
    eps = _eps(gn_param, "gn_param")
    layout = (num, groups, channels // groups, height * width)
    return _per_sample_norm(x, gamma, beta, eps, layout)


def spatial_groupnorm_backward(
    dout: np.ndarray, cache: NormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`spatial_groupnorm_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W)
    cache : NormCache from :func:`spatial_groupnorm_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma, dbeta : ndarray, shapes of gamma and beta
    """
    return _normalize_backward(dout, cache)
