"""Sandwich layers: common stacks of layers as one forward and one backward function.

affine - relu, affine - batch norm - relu, affine - layer norm - relu, conv - relu,
conv - spatial batch norm - relu, and conv - relu - max pool.

Each ``*_forward`` returns ``(out, cache)`` and each ``*_backward(dout, cache)`` returns the
gradients of the stack's inputs, like the single layers. The convolutions and pools run on
:mod:`convnet.fast_layers`. No function here modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from convnet.fast_activation import relu_backward_fast, relu_forward_fast
from convnet.fast_layers import (
    affine_backward_fast,
    affine_forward_fast,
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from convnet.fast_normalization import (
    spatial_batchnorm_backward_fast,
    spatial_batchnorm_forward_fast,
)
from convnet.layers import (
    ConvCache,
    NormCache,
    PoolCache,
    batchnorm_backward,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
)


class AffineReluCache(NamedTuple):
    """What :func:`affine_relu_backward` needs."""

    affine: tuple[np.ndarray, np.ndarray, np.ndarray]
    relu: np.ndarray


class AffineNormReluCache(NamedTuple):
    """What :func:`affine_bn_relu_backward` and :func:`affine_ln_relu_backward` need."""

    affine: tuple[np.ndarray, np.ndarray, np.ndarray]
    norm: NormCache
    relu: np.ndarray


class ConvNormReluCache(NamedTuple):
    """What :func:`conv_bn_relu_backward` needs."""

    conv: ConvCache
    norm: NormCache
    relu: np.ndarray


class ConvReluCache(NamedTuple):
    """What :func:`conv_relu_backward` needs."""

    conv: ConvCache
    relu: np.ndarray


class ConvReluPoolCache(NamedTuple):
    """What :func:`conv_relu_pool_backward` needs (the pool runs before the ReLU)."""

    conv: ConvCache
    pool: PoolCache
    relu: np.ndarray


def affine_relu_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, AffineReluCache]:
    """Affine layer followed by a ReLU: ``out = max(x.reshape(N, D) @ w + b, 0)``.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), with D = d_1 * ... * d_k
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : AffineReluCache
    """
    scores, affine_cache = affine_forward_fast(x, w, b)
    out, relu_cache = relu_forward_fast(scores)
    return out, AffineReluCache(affine_cache, relu_cache)


def affine_relu_backward(
    dout: np.ndarray, cache: AffineReluCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`affine_relu_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : AffineReluCache

    Returns
    -------
    dx : ndarray, shape of x
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)
    """
    return affine_backward_fast(relu_backward_fast(dout, cache.relu), cache.affine)


def _affine_norm_relu_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    norm_param: dict,
    norm_forward: Callable[..., tuple[np.ndarray, NormCache]],
) -> tuple[np.ndarray, AffineNormReluCache]:
    """Affine layer, ``norm_forward(scores, gamma, beta, norm_param)``, then ReLU."""
    scores, affine_cache = affine_forward_fast(x, w, b)
    normalized, norm_cache = norm_forward(scores, gamma, beta, norm_param)
    out, relu_cache = relu_forward_fast(normalized)
    return out, AffineNormReluCache(affine_cache, norm_cache, relu_cache)


def _affine_norm_relu_backward(
    dout: np.ndarray,
    cache: AffineNormReluCache,
    norm_backward: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`_affine_norm_relu_forward`, given its norm's backward."""
    dnormalized = relu_backward_fast(dout, cache.relu)
    dscores, dgamma, dbeta = norm_backward(dnormalized, cache.norm)
    dx, dw, db = affine_backward_fast(dscores, cache.affine)
    return dx, dw, db, dgamma, dbeta


def affine_bn_relu_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    bn_param: dict,
) -> tuple[np.ndarray, AffineNormReluCache]:
    """Affine layer, batch norm, then ReLU.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), with D = d_1 * ... * d_k
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)
    gamma, beta : ndarray, shape (M,)
    bn_param : dict
        As for :func:`convnet.layers.batchnorm_forward` (``'mode'`` required); train mode
        stores new running statistics in it.

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : AffineNormReluCache
    """
    return _affine_norm_relu_forward(x, w, b, gamma, beta, bn_param, batchnorm_forward)


def affine_bn_relu_backward(
    dout: np.ndarray, cache: AffineNormReluCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`affine_bn_relu_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : AffineNormReluCache

    Returns
    -------
    dx : ndarray, shape of x
    dw : ndarray, shape (D, M)
    db, dgamma, dbeta : ndarray, shape (M,)
    """
    return _affine_norm_relu_backward(dout, cache, batchnorm_backward)


def affine_ln_relu_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    ln_param: dict,
) -> tuple[np.ndarray, AffineNormReluCache]:
    """Affine layer, layer norm, then ReLU: :func:`affine_bn_relu_forward`'s shapes.

    Parameters
    ----------
    x, w, b, gamma, beta : ndarray
        Shapes (N, d_1, ..., d_k), (D, M), (M,), (M,), (M,), with D = d_1 * ... * d_k.
    ln_param : dict
        As for :func:`convnet.layers.layernorm_forward` (``'eps'``; other keys ignored).

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : AffineNormReluCache
    """
    return _affine_norm_relu_forward(x, w, b, gamma, beta, ln_param, layernorm_forward)


def affine_ln_relu_backward(
    dout: np.ndarray, cache: AffineNormReluCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`affine_ln_relu_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : AffineNormReluCache

    Returns
    -------
    dx, dw, db, dgamma, dbeta : ndarray
        Shapes of x, (D, M), (M,), (M,), (M,).
    """
    return _affine_norm_relu_backward(dout, cache, layernorm_backward)


def conv_bn_relu_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    conv_param: dict,
    bn_param: dict,
) -> tuple[np.ndarray, ConvNormReluCache]:
    """Convolution, spatial batch norm, then ReLU (CS231n's argument order).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    gamma, beta : ndarray, shape (F,)
    conv_param : dict
        As for :func:`convnet.fast_layers.conv_forward_fast`.
    bn_param : dict
        As for :func:`convnet.layers.spatial_batchnorm_forward` (``'mode'`` required).

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
    cache : ConvNormReluCache
    """
    conv_out, conv_cache = conv_forward_fast(x, w, b, conv_param)
    normalized, norm_cache = spatial_batchnorm_forward_fast(conv_out, gamma, beta, bn_param)
    out, relu_cache = relu_forward_fast(normalized)
    return out, ConvNormReluCache(conv_cache, norm_cache, relu_cache)


def conv_bn_relu_backward(
    dout: np.ndarray, cache: ConvNormReluCache, *, compute_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_bn_relu_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
    cache : ConvNormReluCache
    compute_dx : bool, default True
        ``False`` skips the input gradient (``dx`` is then ``None``).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), or None
    dw : ndarray, shape (F, C, HH, WW)
    db, dgamma, dbeta : ndarray, shape (F,)
    """
    dnormalized = relu_backward_fast(dout, cache.relu)
    dconv, dgamma, dbeta = spatial_batchnorm_backward_fast(dnormalized, cache.norm)
    dx, dw, db = conv_backward_fast(dconv, cache.conv, compute_dx=compute_dx)
    return dx, dw, db, dgamma, dbeta


def conv_relu_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> tuple[np.ndarray, ConvReluCache]:
    """Convolution followed by a ReLU.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'`` and ``'pad'``, as for :func:`convnet.fast_layers.conv_forward_fast`.

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
    cache : ConvReluCache
    """
    conv_out, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward_fast(conv_out)
    return out, ConvReluCache(conv_cache, relu_cache)


def conv_relu_backward(
    dout: np.ndarray, cache: ConvReluCache, *, compute_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_relu_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
    cache : ConvReluCache
    compute_dx : bool, default True
        ``False`` skips the input gradient (``dx`` is then ``None``).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), or None
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    dconv = relu_backward_fast(dout, cache.relu)
    return conv_backward_fast(dconv, cache.conv, compute_dx=compute_dx)


def conv_relu_pool_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict, pool_param: dict
) -> tuple[np.ndarray, ConvReluPoolCache]:
    """Convolution, ReLU, then max pooling.

    ReLU is non-decreasing, so it commutes with taking a maximum: the ReLU runs after the
    pool, on a quarter of the values for a 2x2 pool. Outputs and gradients are exactly
    those of conv -> ReLU -> pool (a window whose maximum is not positive passes no
    gradient either way).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'`` and ``'pad'``, as for :func:`convnet.fast_layers.conv_forward_fast`.
    pool_param : dict
        ``'pool_height'``, ``'pool_width'`` and ``'stride'``, as for
        :func:`convnet.fast_layers.max_pool_forward_fast`.

    Returns
    -------
    out : ndarray, shape (N, F, H_pool, W_pool)
    cache : ConvReluPoolCache
    """
    conv_out, conv_cache = conv_forward_fast(x, w, b, conv_param)
    pooled, pool_cache = max_pool_forward_fast(conv_out, pool_param)
    out, relu_cache = relu_forward_fast(pooled)
    return out, ConvReluPoolCache(conv_cache, pool_cache, relu_cache)


def conv_relu_pool_backward(
    dout: np.ndarray, cache: ConvReluPoolCache, *, compute_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_relu_pool_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_pool, W_pool)
    cache : ConvReluPoolCache
    compute_dx : bool, default True
        ``False`` skips the input gradient (``dx`` is then ``None``).

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), or None
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    dpooled = relu_backward_fast(dout, cache.relu)
    dconv = max_pool_backward_fast(dpooled, cache.pool)
    return conv_backward_fast(dconv, cache.conv, compute_dx=compute_dx)
