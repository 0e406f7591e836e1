"""Affine, ReLU and the losses: gradient checks, known values, dtypes and input handling."""

from __future__ import annotations

import numpy as np
import pytest
from gradients import check_gradients
from tolerances import GRAD_TOL

from convnet.gradient_check import numerical_gradient, numerical_gradient_array, relative_error
from convnet.layers import (
    affine_backward,
    affine_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)


def _away_from_zero(rng, shape, gap=0.1):
    """Random values with |v| >= gap, so a ReLU kink is never within a probe step."""
    return rng.uniform(gap, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


# --- gradient checks (float64, centered differences) -------------------------------------


def test_affine_gradients(rng):
    x = rng.standard_normal((3, 2, 4))
    w = rng.standard_normal((8, 5))
    b = rng.standard_normal(5)
    dout = rng.standard_normal((3, 5))
    out, cache = affine_forward(x, w, b)
    dx, dw, db = affine_backward(dout, cache)
    assert out.shape == (3, 5) and dx.shape == x.shape and dw.shape == w.shape
    assert db.shape == (5,)
    check_gradients(affine_forward, affine_backward, [x, w, b], dout=dout)


def test_affine_forward_value(rng):
    x = rng.standard_normal((4, 3, 2))
    w = rng.standard_normal((6, 2))
    b = rng.standard_normal(2)
    out, _ = affine_forward(x, w, b)
    expected = np.einsum("nd,dm->nm", x.reshape(4, 6), w) + b
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_relu_gradient(rng):
    x = _away_from_zero(rng, (4, 5))
    dout = rng.standard_normal((4, 5))
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(out, np.where(x > 0, x, 0))
    dx = relu_backward(dout, cache)
    assert (
        relative_error(dx, numerical_gradient_array(lambda v: relu_forward(v)[0], x, dout))
        < GRAD_TOL
    )


def test_relu_at_zero_and_nan():
    x = np.array([-1.0, 0.0, 2.0, np.nan])
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(out, [0.0, 0.0, 2.0, np.nan])
    np.testing.assert_array_equal(relu_backward(np.full(4, 3.0), cache), [0.0, 0.0, 3.0, 0.0])


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float64, np.float32)])
def test_relu_backward_is_where_bit_for_bit(rng, dtypes):
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-38, -1e-45]
    x = np.concatenate([rng.standard_normal(50), special, np.zeros(7), -np.ones(7)])
    dout = np.concatenate([rng.standard_normal(57), special, special])
    x, dout = x.astype(dtypes[0]), dout.astype(dtypes[1])[::-1]  # dout not contiguous
    dx = relu_backward(dout, relu_forward(x)[1])
    expected = np.where(x > 0, dout, 0).astype(np.float64 if np.float64 in dtypes else np.float32)
    assert dx.dtype == expected.dtype
    np.testing.assert_array_equal(dx.view(f"i{dx.itemsize}"), expected.view(f"i{dx.itemsize}"))


def test_softmax_loss_gradient(rng):
    x = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, size=6)
    loss, dx = softmax_loss(x, y)
    assert isinstance(loss, float) and loss > 0
    assert relative_error(dx, numerical_gradient(lambda v: softmax_loss(v, y)[0], x)) < GRAD_TOL


def test_svm_loss_gradient(rng):
    x = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, size=6)
    margins = x - x[np.arange(6), y][:, None] + 1
    margins[np.arange(6), y] = 1.0
    assert np.abs(margins).min() > 1e-3, "a hinge kink lies within a probe step"
    loss, dx = svm_loss(x, y)
    assert isinstance(loss, float) and loss > 0
    assert relative_error(dx, numerical_gradient(lambda v: svm_loss(v, y)[0], x)) < GRAD_TOL


# --- known values ----------------------------------------------------------------------


def test_softmax_loss_of_uniform_scores():
    num, classes = 5, 7
    y = np.arange(num) % classes
    loss, dx = softmax_loss(np.zeros((num, classes)), y)
    assert loss == pytest.approx(np.log(classes), rel=1e-12)
    expected = np.full((num, classes), 1.0 / classes)
    expected[np.arange(num), y] -= 1
    np.testing.assert_allclose(dx, expected / num, rtol=1e-12)


def test_softmax_loss_is_stable_for_huge_scores():
    x = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0]])
    loss, dx = softmax_loss(x, np.array([1, 0]))
    assert loss == pytest.approx((1e4 + np.log(2)) / 2, rel=1e-12)
    assert np.all(np.isfinite(dx))


def test_svm_loss_of_zero_scores():
    num, classes = 4, 5
    y = np.array([0, 4, 2, 2])
    loss, dx = svm_loss(np.zeros((num, classes)), y)
    assert loss == pytest.approx(classes - 1)
    expected = np.ones((num, classes))
    expected[np.arange(num), y] = -(classes - 1)
    np.testing.assert_allclose(dx, expected / num)


@pytest.mark.parametrize("loss_fn", [softmax_loss, svm_loss])
def test_losses_on_empty_batch(loss_fn):
    loss, dx = loss_fn(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    assert loss == 0.0
    assert dx.shape == (0, 3)


@pytest.mark.parametrize("loss_fn", [softmax_loss, svm_loss])
@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_losses_accept_any_integer_labels(loss_fn, label_dtype, rng):
    x = rng.standard_normal((3, 4))
    y = np.array([0, 3, 1])
    loss, dx = loss_fn(x, y.astype(label_dtype))
    loss_ref, dx_ref = loss_fn(x, y)
    assert loss == loss_ref
    np.testing.assert_array_equal(dx, dx_ref)


# --- dtypes and input handling ---------------------------------------------------------


def test_float32_stays_float32(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 2)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    out, cache = affine_forward(x, w, b)
    grads = affine_backward(np.ones((3, 2), np.float32), cache)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads)
    out, cache = relu_forward(x)
    assert out.dtype == np.float32
    assert relu_backward(np.ones_like(x), cache).dtype == np.float32
    y = np.array([0, 1, 3])
    for loss_fn in (softmax_loss, svm_loss):
        assert loss_fn(x, y)[1].dtype == np.float32


def test_affine_mixed_dtypes_promote_to_float64(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 2))
    b = rng.standard_normal(2).astype(np.float32)
    out, cache = affine_forward(x, w, b)
    assert out.dtype == np.float64
    assert all(g.dtype == np.float64 for g in affine_backward(np.ones((3, 2)), cache))


def test_affine_and_relu_accept_any_layout(to_layout, rng):
    x = _away_from_zero(rng, (3, 2, 4))
    w = rng.standard_normal((8, 5))
    b = rng.standard_normal(5)
    dout = rng.standard_normal((3, 5))
    dout_relu = rng.standard_normal(x.shape)
    out_ref, cache = affine_forward(x, w, b)
    grads_ref = affine_backward(dout, cache)
    out, cache = affine_forward(to_layout(x), to_layout(w), to_layout(b))
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    for grad, ref in zip(affine_backward(to_layout(dout), cache), grads_ref, strict=True):
        np.testing.assert_allclose(grad, ref, rtol=1e-12, atol=1e-12)
    out, cache = relu_forward(to_layout(x))
    np.testing.assert_array_equal(out, relu_forward(x)[0])
    np.testing.assert_array_equal(
        relu_backward(to_layout(dout_relu), cache), relu_backward(dout_relu, x)
    )


@pytest.mark.parametrize("loss_fn", [softmax_loss, svm_loss])
def test_losses_accept_any_layout(loss_fn, to_layout, rng):
    x = rng.standard_normal((5, 3))
    y = np.array([0, 2, 1, 1, 0])
    loss_ref, dx_ref = loss_fn(x, y)
    loss, dx = loss_fn(to_layout(x), to_layout(y))
    assert loss == pytest.approx(loss_ref, rel=1e-14)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-14, atol=1e-15)


def test_inputs_are_never_modified(rng):
    x = _away_from_zero(rng, (3, 4))
    w = rng.standard_normal((4, 2))
    b = rng.standard_normal(2)
    dout = rng.standard_normal((3, 2))
    dout_relu = rng.standard_normal((3, 4))
    y = np.array([1, 0, 1])
    originals = [a.copy() for a in (x, w, b, dout, dout_relu, y)]
    _, cache = affine_forward(x, w, b)
    affine_backward(dout, cache)
    out, cache = relu_forward(x)
    out[:] = 7.0
    dx = relu_backward(dout_relu, cache)
    dx[:] = 7.0
    softmax_loss(x[:, :2], y)[1][:] = 7.0
    svm_loss(x[:, :2], y)[1][:] = 7.0
    for array, original in zip((x, w, b, dout, dout_relu, y), originals, strict=True):
        np.testing.assert_array_equal(array, original)
