"""Inverted dropout: forward and backward passes.

In train mode each unit is kept with probability ``p`` and scaled by ``1 / p``, otherwise
set to zero, so the expected output equals the input and test mode needs no scaling:

    out = x * mask,    mask = keep / p,    keep ~ Bernoulli(p) independently per unit.

``p`` is the KEEP probability (CS231n's convention; PyTorch's ``p`` is the drop
probability, ``1 - p``). Masks are drawn with :func:`numpy.random.default_rng` from
``dropout_param['seed']``, in float64 whatever the dtype of ``x``: the same seed and shape
give the same mask in float32 and float64. A dropped unit outputs 0 and passes no gradient
even where ``x`` or ``dout`` holds a NaN or an infinity.

An int ``seed`` fixes the mask (CS231n's contract): every call with that seed and shape
drops the same units, so a loss through dropout is a deterministic function of the
parameters and a numerical gradient check can call it again and again. A model seeded
with ``seed`` gives its ``l``-th dropout layer the seed :func:`layer_seed` ``(seed, l)``,
so layers of equal width do not share a mask. A ``numpy.random.Generator`` as ``seed``
draws a fresh mask at every call (for training), reproducibly from the generator's state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from convnet._validation import check_dout, check_float_array, check_mode, check_seed, real_param


class DropoutCache(NamedTuple):
    """What :func:`dropout_backward` needs: the mask (``None`` when nothing was dropped)."""

    mask: np.ndarray | None
    x_shape: tuple[int, ...]


def layer_seed(seed: int, layer: int) -> int:
    """The fixed mask seed of dropout layer ``layer`` (counted from 1) of a model seeded
    with ``seed``: an int >= 0 from ``numpy.random.SeedSequence((seed, layer))``, so the
    layers' masks are independent and the same at every call."""
    return int(np.random.SeedSequence((seed, layer)).generate_state(1, np.uint64)[0])


def dropout_forward(x: np.ndarray, dropout_param: dict) -> tuple[np.ndarray, DropoutCache]:
    """Inverted dropout.

    Parameters
    ----------
    x : ndarray, any shape
    dropout_param : dict
        ``'p'``: KEEP probability in (0, 1] (required; 1 keeps every unit).
        ``'mode'``: 'train' or 'test' (required).
        ``'seed'``: optional int >= 0 (the same seed gives the same mask), or a
        ``numpy.random.Generator`` (each call draws the next mask from its stream);
        absent or None: fresh entropy at each call.

    Returns
    -------
    out : ndarray, shape and dtype of x
        Train mode: ``x * mask``. Test mode (and ``p == 1``): a copy of ``x``, never ``x``
        itself, so writing into ``out`` cannot change ``x``.
    cache : DropoutCache
        The mask, of x's dtype, holding 0 and ``1 / p``.
    """
    x = check_float_array(x, "x")
    mode = check_mode(dropout_param, "dropout_param")
    if "p" not in dropout_param:
        raise ValueError("dropout_param is missing the key 'p' (the keep probability)")
    keep_probability = real_param(dropout_param, "p", "dropout_param", 1.0, 0.0, 1.0, True)
    seed = check_seed(dropout_param.get("seed"), "dropout_param['seed']", generator=True)
    if mode == "test" or keep_probability == 1:
        return x.copy(), DropoutCache(None, x.shape)
    kept = np.random.default_rng(seed).random(x.shape) < keep_probability
    mask = kept.astype(x.dtype)
    mask *= x.dtype.type(1 / keep_probability)
    return _masked(x, mask), DropoutCache(mask, x.shape)


def _masked(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values * mask``, with 0 wherever the mask is 0 even if the value is NaN or inf."""
    if np.isfinite(values).all():
        return values * mask
    with np.errstate(invalid="ignore"):  # 0 * inf is nan, and so is 0 * nan
        out = values * mask
    out[mask == 0] = 0
    return out


def dropout_backward(dout: np.ndarray, cache: DropoutCache) -> np.ndarray:
    """Gradient of :func:`dropout_forward`: ``dout * mask`` (a copy of ``dout`` in test mode).

    Parameters
    ----------
    dout : ndarray, shape of x
    cache : DropoutCache from :func:`dropout_forward`

    Returns
    -------
    dx : ndarray, shape of x
    """
    if not isinstance(cache, DropoutCache):
        raise TypeError(
            f"cache must be the DropoutCache of dropout_forward, got {type(cache).__name__}"
        )
    dout = check_dout(dout, cache.x_shape)
    if cache.mask is None:
        return dout.copy()
    return _masked(dout, cache.mask)
