"""One numerical gradient check for every layer test: analytic gradients against centered
differences (float64)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tolerances import GRAD_TOL

from convnet.gradient_check import numerical_gradient_array, relative_error


def check_gradients(
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    arrays: Sequence[np.ndarray],
    *extra: Any,
    dout: np.ndarray | None = None,
    tol: float = GRAD_TOL,
) -> None:
    """``backward(dout, cache)`` gives the gradient of ``sum(forward(*arrays, *extra)[0] *
    dout)`` with respect to each of ``arrays``, in order, within relative error ``tol``.

    ``dout`` is random when None. A gradient that vanishes numerically (below 1e-9, such as
    a bias followed by a batch norm) must vanish analytically too (below 1e-12).
    """
    out, cache = forward(*arrays, *extra)
    if dout is None:
        dout = np.random.default_rng(1).standard_normal(out.shape)
    assert out.shape == dout.shape
    grads = backward(dout, cache)

    def output(_: np.ndarray) -> np.ndarray:
        return forward(*arrays, *extra)[0]

    for array, grad in zip(arrays, grads, strict=True):
        assert grad.shape == array.shape
        numeric = numerical_gradient_array(output, array, dout)
        if np.max(np.abs(numeric), initial=0.0) < 1e-9:
            np.testing.assert_allclose(grad, 0, atol=1e-12)
        else:
            assert relative_error(grad, numeric) < tol
