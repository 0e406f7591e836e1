"""The project's accuracy standard, shared by the tests: fast against reference layers
within 1e-10 relative in float64 and 1e-4 in float32; numerical gradients within 1e-7."""

from __future__ import annotations

import numpy as np

GRAD_TOL = 1e-7
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def assert_matches(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype and shape, equal within the dtype's tolerance relative to max |expected|."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    tol = TOLERANCE[expected.dtype]
    scale = float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def assert_close_to_torch(actual: np.ndarray, expected) -> None:
    """Same shape as the PyTorch tensor ``expected`` and equal within float64's tolerance
    relative to its max |value| (the PyTorch cross-checks run in float64)."""
    expected = expected.detach().numpy()
    assert actual.shape == expected.shape
    tol = TOLERANCE[np.dtype(np.float64)]
    scale = float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)
