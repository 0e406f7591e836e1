"""First-order update rules: ``next_w, config = rule(w, dw, config)``.

``config`` is the rule's hyperparameters and its state (velocity, moment estimates, step
count), as in CS231n: each call fills in missing hyperparameters with the defaults below,
stores the updated state into the SAME dict it was given and returns that dict (a new one
when ``config`` is None). So a notebook can read ``config["velocity"]`` after the call, and a
training loop keeps one dict per parameter. Arrays are never modified in place: ``w``,
``dw`` and the state arrays passed in keep their values, and the updated state is stored
as new arrays. ``next_w`` and every state array have ``w``'s dtype; hyperparameters are
stored back as Python floats (so a numpy scalar cannot promote float32 weights).

=================  ====================================================================
rule               hyperparameters (default); state the rule stores into config
=================  ====================================================================
``sgd``            learning_rate (1e-2)
``sgd_momentum``   learning_rate (1e-2), momentum (0.9); velocity
``nesterov``       learning_rate (1e-2), momentum (0.9); velocity
``rmsprop``        learning_rate (1e-3), decay_rate (0.99), epsilon (1e-8); cache
``adam``           learning_rate (1e-3), beta1 (0.9), beta2 (0.999), epsilon (1e-8);
                   m, v, t
=================  ====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convnet._validation import check_float_array

UpdateRule = Callable[[np.ndarray, np.ndarray, "dict[str, Any] | None"], tuple[np.ndarray, dict]]


def _prepare(
    w: np.ndarray, dw: np.ndarray, config: dict[str, Any] | None, defaults: dict[str, float]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Check ``w`` and ``dw``, cast ``dw`` to ``w``'s dtype, and fill in ``config`` itself.

    Missing hyperparameters get their defaults and every hyperparameter becomes a Python
    float, in the caller's dict (a new dict when ``config`` is None).
    """
    w = check_float_array(w, "w")
    dw = check_float_array(dw, "dw")
    if dw.shape != w.shape:
        raise ValueError(f"dw has shape {dw.shape} but w has shape {w.shape}")
    if config is None:
        config = {}
    elif not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
    for key, default in defaults.items():
        config[key] = float(config.get(key, default))
    return w, dw.astype(w.dtype, copy=False), config


def _state(config: dict[str, Any], key: str, w: np.ndarray) -> np.ndarray:
    """The state array ``config[key]`` (zeros at the first step) in ``w``'s shape and dtype."""
    value = config.get(key)
    if value is None:
        return np.zeros_like(w)
    value = np.asarray(value)
    if value.shape != w.shape:
        raise ValueError(f"config[{key!r}] has shape {value.shape} but w has shape {w.shape}")
    return value.astype(w.dtype, copy=False)


def sgd(
    w: np.ndarray, dw: np.ndarray, config: dict[str, Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Plain gradient descent: ``w - learning_rate * dw``.

    Parameters
    ----------
    w : ndarray, any shape
        Current weights.
    dw : ndarray, shape of w
        Gradient of the loss with respect to ``w``.
    config : dict, optional
        ``learning_rate`` (default 1e-2).

    Returns
    -------
    next_w : ndarray, shape and dtype of w
    config : dict
        The ``config`` given (or a new dict), holding the updated state.
    """
    w, dw, config = _prepare(w, dw, config, {"learning_rate": 1e-2})
    return w - config["learning_rate"] * dw, config


def sgd_momentum(
    w: np.ndarray, dw: np.ndarray, config: dict[str, Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Gradient descent with momentum.

    ``v <- momentum * v - learning_rate * dw``, then ``w <- w + v``; ``v`` starts at zero.

    Parameters
    ----------
    w : ndarray, any shape
    dw : ndarray, shape of w
    config : dict, optional
        ``learning_rate`` (1e-2), ``momentum`` (0.9), state ``velocity`` (shape of w).

    Returns
    -------
    next_w : ndarray, shape and dtype of w
    config : dict
        The ``config`` given (or a new dict), holding the updated state.
    """
    w, dw, config = _prepare(w, dw, config, {"learning_rate": 1e-2, "momentum": 0.9})
    velocity = config["momentum"] * _state(config, "velocity", w) - config["learning_rate"] * dw
    config["velocity"] = velocity
    return w + velocity, config


def nesterov(
    w: np.ndarray, dw: np.ndarray, config: dict[str, Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Nesterov accelerated gradient, written for the gradient at the current weights.

    With the look-ahead point ``u = w + momentum * v`` as the tracked variable (so ``dw``
    is taken at ``w``): ``v' = momentum * v - learning_rate * dw`` and
    ``w' = w + v' + momentum * (v' - v)``, i.e. ``w' = w - momentum * v + (1 + momentum) * v'``.

    Parameters
    ----------
    w : ndarray, any shape
    dw : ndarray, shape of w
    config : dict, optional
        ``learning_rate`` (1e-2), ``momentum`` (0.9), state ``velocity`` (shape of w).

    Returns
    -------
    next_w : ndarray, shape and dtype of w
    config : dict
        The ``config`` given (or a new dict), holding the updated state.
    """
    w, dw, config = _prepare(w, dw, config, {"learning_rate": 1e-2, "momentum": 0.9})
    momentum = config["momentum"]
    previous = _state(config, "velocity", w)
    velocity = momentum * previous - config["learning_rate"] * dw
    config["velocity"] = velocity
    return w + velocity + momentum * (velocity - previous), config


def rmsprop(
    w: np.ndarray, dw: np.ndarray, config: dict[str, Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """RMSProp: scale each step by a running root mean square of the gradient.

    ``cache <- decay_rate * cache + (1 - decay_rate) * dw**2``, then
    ``w <- w - learning_rate * dw / (sqrt(cache) + epsilon)``.

    Parameters
    ----------
    w : ndarray, any shape
    dw : ndarray, shape of w
    config : dict, optional
        ``learning_rate`` (1e-3), ``decay_rate`` (0.99), ``epsilon`` (1e-8), state ``cache``.

    Returns
    -------
    next_w : ndarray, shape and dtype of w
    config : dict
        The ``config`` given (or a new dict), holding the updated state.
    """
    defaults = {"learning_rate": 1e-3, "decay_rate": 0.99, "epsilon": 1e-8}
    w, dw, config = _prepare(w, dw, config, defaults)
    decay = config["decay_rate"]
    cache = decay * _state(config, "cache", w) + (1 - decay) * dw * dw
    config["cache"] = cache
    return w - config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"]), config


def adam(
    w: np.ndarray, dw: np.ndarray, config: dict[str, Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Adam: momentum on the gradient and on its square, both bias-corrected.

    ``t <- t + 1``, ``m <- beta1 * m + (1 - beta1) * dw``,
    ``v <- beta2 * v + (1 - beta2) * dw**2``, then
    ``w <- w - learning_rate * m_hat / (sqrt(v_hat) + epsilon)`` with
    ``m_hat = m / (1 - beta1**t)`` and ``v_hat = v / (1 - beta2**t)``.

    Parameters
    ----------
    w : ndarray, any shape
    dw : ndarray, shape of w
    config : dict, optional
        ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999), ``epsilon`` (1e-8),
        state ``m``, ``v`` (shape of w) and the step count ``t`` (0 before the first step).

    Returns
    -------
    next_w : ndarray, shape and dtype of w
    config : dict
        The ``config`` given (or a new dict), holding the updated state.
    """
    defaults = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
    w, dw, config = _prepare(w, dw, config, defaults)
    beta1, beta2 = config["beta1"], config["beta2"]
    step = int(config.get("t", 0)) + 1
    m = beta1 * _state(config, "m", w) + (1 - beta1) * dw
    v = beta2 * _state(config, "v", w) + (1 - beta2) * dw * dw
    config.update(m=m, v=v, t=step)
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    return w - config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"]), config


UPDATE_RULES: dict[str, UpdateRule] = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "nesterov": nesterov,
    "rmsprop": rmsprop,
    "adam": adam,
}
