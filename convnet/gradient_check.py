"""Numerical gradients by centered differences, to check analytic backward passes.

For a scalar function ``f`` the derivative along coordinate ``i`` is estimated as::

    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h),

whose error is O(h^2) for smooth ``f`` (plus rounding of order ``eps * |f| / h``). For an
array-valued ``f`` with upstream gradient ``dout`` the same estimate is applied to the
scalar ``sum(f(x) * dout)``, which is what a layer's backward pass computes.

The probes perturb ``x`` in place (so ``f`` may close over ``x`` and ignore its argument)
and put back the exact original value after each coordinate: ``x`` is unchanged on return.
Both need a writeable float64 ``x``: in float32 a step of ``1e-5`` loses most digits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_STEP = 1e-5
RELATIVE_ERROR_FLOOR = 1e-8


def _check_probe_array(x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(
            f"x must have dtype float64 for centered differences, got {x.dtype}; "
            "use x.astype(np.float64)"
        )
    if not x.flags.writeable:
        raise ValueError("x must be writeable: the probes perturb it in place and restore it")


def _centered_difference(
    scalar: Callable[[np.ndarray], float], x: np.ndarray, h: float
) -> np.ndarray:
    if not h > 0:
        raise ValueError(f"step h must be positive, got {h!r}")
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape):
        original = x[index]
        try:
            x[index] = original + h
            above = scalar(x)
            x[index] = original - h
            below = scalar(x)
        finally:
            x[index] = original
        grad[index] = (above - below) / (2 * h)
    return grad


def numerical_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = DEFAULT_STEP
) -> np.ndarray:
    """Gradient of a scalar function by centered differences.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``. It is called with ``x`` itself, perturbed in one coordinate.
    x : ndarray of float64, any shape, writeable
        The point; restored exactly after every probe.
    h : float, default 1e-5
        Step of the centered difference.

    Returns
    -------
    grad : ndarray of float64, shape of x
        ``grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2 h)``.
    """
    _check_probe_array(x)
    return _centered_difference(lambda point: float(f(point)), x, h)


def numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    dout: np.ndarray,
    h: float = DEFAULT_STEP,
) -> np.ndarray:
    """Gradient of ``sum(f(x) * dout)`` by centered differences.

    This is the input gradient a layer's backward pass returns for upstream gradient
    ``dout``.

    Parameters
    ----------
    f : callable
        ``f(x) -> ndarray`` of the shape of ``dout``. It is called with ``x`` itself,
        perturbed in one coordinate.
    x : ndarray of float64, any shape, writeable
        The point; restored exactly after every probe.
    dout : ndarray, shape of f(x)
        Upstream gradient; not modified.
    h : float, default 1e-5
        Step of the centered difference.

    Returns
    -------
    grad : ndarray of float64, shape of x
    """
    _check_probe_array(x)
    weights = np.asarray(dout, dtype=np.float64)

    def weighted_sum(point: np.ndarray) -> float:
        value = np.asarray(f(point), dtype=np.float64)
        if value.shape != weights.shape:
            raise ValueError(f"f(x) has shape {value.shape} but dout has shape {weights.shape}")
        return float(np.sum(value * weights))

    return _centered_difference(weighted_sum, x, h)


def relative_error(a: np.ndarray, b: np.ndarray, floor: float = RELATIVE_ERROR_FLOOR) -> float:
    """Largest elementwise relative difference ``|a - b| / max(floor, |a| + |b|)``.

    The ``floor`` keeps entries where both values are (nearly) zero from dividing by
    zero: there the difference is measured against ``floor`` instead, so rounding noise
    of 1e-12 around an exact 0 counts as 1e-4 rather than as 1.

    Parameters
    ----------
    a, b : array_like, same shape
    floor : float, default 1e-8
        Smallest denominator.

    Returns
    -------
    error : float
        0.0 for empty arrays; NaN if either array holds a NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    scale = np.maximum(np.abs(a) + np.abs(b), floor)
    return float(np.max(np.abs(a - b) / scale))
