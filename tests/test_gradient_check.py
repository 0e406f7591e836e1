"""The numerical-gradient helpers against functions whose gradients are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from convnet.gradient_check import numerical_gradient, numerical_gradient_array, relative_error


def test_sum_of_squares_gradient_is_twice_x(rng):
    x = rng.standard_normal((3, 4))
    grad = numerical_gradient(lambda v: float(np.sum(v**2)), x)
    np.testing.assert_allclose(grad, 2 * x, rtol=1e-8, atol=1e-9)


def test_cubic_gradient_within_centered_difference_error(rng):
    x = rng.uniform(-2, 2, size=5)
    grad = numerical_gradient(lambda v: float(np.sum(v**3)), x, h=1e-4)
    # centered differences of a cubic are off by exactly h^2 per coordinate
    np.testing.assert_allclose(grad, 3 * x**2 + 1e-8, rtol=0, atol=1e-9)


def test_gradient_of_closure_that_ignores_its_argument(rng):
    x = rng.standard_normal(6)
    weights = rng.standard_normal(6)
    grad = numerical_gradient(lambda _: float(weights @ x), x)
    np.testing.assert_allclose(grad, weights, rtol=1e-8, atol=1e-9)


def test_matrix_product_array_gradient(rng):
    a = rng.standard_normal((3, 4))
    b = rng.standard_normal((4, 5))
    dout = rng.standard_normal((3, 5))
    grad_a = numerical_gradient_array(lambda v: v @ b, a, dout)
    grad_b = numerical_gradient_array(lambda v: a @ v, b, dout)
    np.testing.assert_allclose(grad_a, dout @ b.T, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(grad_b, a.T @ dout, rtol=1e-8, atol=1e-9)


def test_elementwise_array_gradient_on_non_contiguous_view(rng):
    base = rng.uniform(0.5, 2.0, size=(4, 6))
    x = base[:, ::2]
    dout = rng.standard_normal(x.shape)
    grad = numerical_gradient_array(np.log, x, dout)
    np.testing.assert_allclose(grad, dout / x, rtol=1e-8)


def test_probes_leave_x_unchanged_and_restore_before_each_call(rng):
    x = rng.standard_normal((2, 3))
    before = x.copy()
    seen_changes = []

    def f(v):
        seen_changes.append(int(np.count_nonzero(v != before)))
        return float(np.sum(np.sin(v)))

    numerical_gradient(f, x)
    np.testing.assert_array_equal(x, before)
    assert seen_changes == [1] * (2 * x.size)


def test_x_restored_when_f_raises(rng):
    x = rng.standard_normal(3)
    before = x.copy()

    def failing(_):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(failing, x)
    np.testing.assert_array_equal(x, before)


def test_array_gradient_does_not_modify_dout(rng):
    x = rng.standard_normal(4)
    dout = rng.standard_normal(4)
    dout_before = dout.copy()
    numerical_gradient_array(np.tanh, x, dout)
    np.testing.assert_array_equal(dout, dout_before)


def test_array_gradient_checks_dout_shape(rng):
    x = rng.standard_normal(4)
    with pytest.raises(ValueError, match="dout has shape"):
        numerical_gradient_array(np.tanh, x, np.ones(5))


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_non_float64_x_is_refused(dtype):
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(np.sum, np.ones(3, dtype=dtype))


def test_read_only_x_is_refused():
    x = np.ones(3)
    x.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        numerical_gradient(np.sum, x)


@pytest.mark.parametrize("step", [0.0, -1e-5])
def test_non_positive_step_is_refused(step):
    with pytest.raises(ValueError, match="step"):
        numerical_gradient(np.sum, np.ones(3), h=step)


def test_relative_error_values():
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert relative_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    assert relative_error(np.array([1.0, -1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_relative_error_measures_noise_near_zero_against_the_floor():
    assert relative_error(np.array([0.0]), np.array([1e-12])) == pytest.approx(1e-4)
    assert relative_error(np.array([0.0]), np.array([1e-12]), floor=1e-12) == pytest.approx(1.0)


def test_relative_error_edge_cases():
    assert relative_error(np.empty((0, 3)), np.empty((0, 3))) == 0.0
    assert np.isnan(relative_error(np.array([np.nan]), np.array([1.0])))
    with pytest.raises(ValueError, match="same shape"):
        relative_error(np.ones(2), np.ones(3))
