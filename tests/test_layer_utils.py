"""Sandwich layers: numerical gradients, and agreement with the single layers composed."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from gradients import check_gradients

from convnet import layer_utils
from convnet.layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_forward,
    conv_backward_naive,
    conv_forward_naive,
    layernorm_backward,
    layernorm_forward,
    max_pool_backward_naive,
    max_pool_forward_naive,
    relu_backward,
    relu_forward,
)

CONV_PARAM = {"stride": 1, "pad": 1}
# Numerical gradients through a ReLU (and a max pool) agree to about 1e-7 here.
check_sandwich = partial(check_gradients, tol=1e-6)
POOL_PARAM = {"pool_height": 2, "pool_width": 2, "stride": 2}


def test_affine_relu_gradients():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 2, 3)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    check_sandwich(layer_utils.affine_relu_forward, layer_utils.affine_relu_backward, [x, w, b])


def test_conv_relu_gradients():
    rng = np.random.default_rng(0)
    x, w, b = (
        rng.standard_normal((2, 3, 5, 4)),
        rng.standard_normal((3, 3, 3, 2)),
        rng.standard_normal(3),
    )
    check_sandwich(
        layer_utils.conv_relu_forward, layer_utils.conv_relu_backward, [x, w, b], CONV_PARAM
    )


@pytest.mark.parametrize("shape", [(2, 2, 6, 6), (2, 2, 7, 5)])
def test_conv_relu_pool_gradients(shape):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(shape), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    check_sandwich(
        layer_utils.conv_relu_pool_forward,
        layer_utils.conv_relu_pool_backward,
        [x, w, b],
        CONV_PARAM,
        POOL_PARAM,
    )


def reference_conv_relu_pool(x, w, b, dout):
    """conv -> ReLU -> pool from the naive layers, in that order: output and gradients."""
    conv_out, conv_cache = conv_forward_naive(x, w, b, CONV_PARAM)
    relu_out, relu_cache = relu_forward(conv_out)
    out, pool_cache = max_pool_forward_naive(relu_out, POOL_PARAM)
    drelu = max_pool_backward_naive(dout, pool_cache)
    return out, conv_backward_naive(relu_backward(drelu, relu_cache), conv_cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_relu_pool_equals_the_layers_in_order_even_with_ties(dtype):
    # Strongly negative biases make most ReLU outputs 0: pool windows full of ties.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 6, 7)).astype(dtype)
    w = rng.standard_normal((4, 2, 3, 3)).astype(dtype)
    b = np.array([-9.0, -3.0, 0.0, 2.0], dtype=dtype)
    out, cache = layer_utils.conv_relu_pool_forward(x, w, b, CONV_PARAM, POOL_PARAM)
    dout = rng.standard_normal(out.shape).astype(dtype)
    expected_out, expected_grads = reference_conv_relu_pool(x, w, b, dout)
    assert np.mean(out == 0) > 0.2
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, expected_out, rtol=tolerance, atol=tolerance)
    grads = layer_utils.conv_relu_pool_backward(dout, cache)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert grad.dtype == dtype
        np.testing.assert_allclose(grad, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    ("forward", "backward", "extra"),
    [
        (layer_utils.conv_relu_forward, layer_utils.conv_relu_backward, (CONV_PARAM,)),
        (
            layer_utils.conv_relu_pool_forward,
            layer_utils.conv_relu_pool_backward,
            (CONV_PARAM, POOL_PARAM),
        ),
    ],
)
def test_conv_sandwich_without_dx(forward, backward, extra):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    out, cache = forward(x, w, b, *extra)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = backward(dout, cache)
    no_dx, dw_only, db_only = backward(dout, cache, compute_dx=False)
    assert dx is not None and dx.shape == x.shape
    assert no_dx is None
    np.testing.assert_array_equal(dw_only, dw)
    np.testing.assert_array_equal(db_only, db)


def test_float32_in_float32_out_and_inputs_untouched():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    w_fc = rng.standard_normal((36, 5)).astype(np.float32)
    b_fc = rng.standard_normal(5).astype(np.float32)
    originals = [a.copy() for a in (x, w, b, w_fc, b_fc)]

    pooled, pool_cache = layer_utils.conv_relu_pool_forward(x, w, b, CONV_PARAM, POOL_PARAM)
    hidden, fc_cache = layer_utils.affine_relu_forward(pooled, w_fc, b_fc)
    dhidden = np.ones_like(hidden)
    dpooled, dw_fc, db_fc = layer_utils.affine_relu_backward(dhidden, fc_cache)
    dpooled_copy = dpooled.copy()
    dx, dw, db = layer_utils.conv_relu_pool_backward(dpooled, pool_cache)

    for array in (pooled, hidden, dpooled, dw_fc, db_fc, dx, dw, db):
        assert array.dtype == np.float32
    for array, original in zip((x, w, b, w_fc, b_fc), originals, strict=True):
        np.testing.assert_array_equal(array, original)
    np.testing.assert_array_equal(dhidden, 1)
    np.testing.assert_array_equal(dpooled, dpooled_copy)


# --- sandwiches with a normalization ------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "test"])
def test_affine_bn_relu_gradients(mode):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    bn_param = {"mode": mode, "running_mean": rng.standard_normal(5), "running_var": np.ones(5)}
    check_sandwich(
        layer_utils.affine_bn_relu_forward,
        layer_utils.affine_bn_relu_backward,
        [x, w, b, gamma, beta],
        bn_param,
    )


def test_affine_ln_relu_gradients():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 6)), rng.standard_normal(6)
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    check_sandwich(
        layer_utils.affine_ln_relu_forward,
        layer_utils.affine_ln_relu_backward,
        [x, w, b, gamma, beta],
        {"eps": 1e-5},
    )


def test_conv_bn_relu_gradients():
    rng = np.random.default_rng(0)
    x, w, b = (
        rng.standard_normal((2, 2, 4, 3)),
        rng.standard_normal((3, 2, 3, 3)),
        rng.standard_normal(3),
    )
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    check_sandwich(
        layer_utils.conv_bn_relu_forward,
        layer_utils.conv_bn_relu_backward,
        [x, w, b, gamma, beta],
        CONV_PARAM,
        {"mode": "train"},
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_sandwiches_equal_the_layers_in_order(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4)).astype(dtype)
    w = rng.standard_normal((4, 3)).astype(dtype)
    b, gamma, beta = (rng.standard_normal(3).astype(dtype) for _ in range(3))
    dout = rng.standard_normal((5, 3)).astype(dtype)
    pairs = [
        (layer_utils.affine_bn_relu_forward, layer_utils.affine_bn_relu_backward),
        (layer_utils.affine_ln_relu_forward, layer_utils.affine_ln_relu_backward),
    ]
    norms = [(batchnorm_forward, batchnorm_backward), (layernorm_forward, layernorm_backward)]
    for (forward, backward), (norm_forward, norm_backward) in zip(pairs, norms, strict=True):
        sandwich_param, layer_param = {"mode": "train"}, {"mode": "train"}
        out, cache = forward(x, w, b, gamma, beta, sandwich_param)
        scores, affine_cache = affine_forward(x, w, b)
        normalized, norm_cache = norm_forward(scores, gamma, beta, layer_param)
        expected, relu_cache = relu_forward(normalized)
        np.testing.assert_array_equal(out, expected)
        assert out.dtype == dtype
        dnorm, dgamma, dbeta = norm_backward(relu_backward(dout, relu_cache), norm_cache)
        expected_grads = (*affine_backward(dnorm, affine_cache), dgamma, dbeta)
        for grad, want in zip(backward(dout, cache), expected_grads, strict=True):
            assert grad.dtype == dtype
            np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-5)
        for key in ("running_mean", "running_var"):
            if key in layer_param:
                np.testing.assert_array_equal(sandwich_param[key], layer_param[key])


def test_conv_bn_relu_without_dx():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b, gamma, beta = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
    out, cache = layer_utils.conv_bn_relu_forward(
        x, w, b, gamma, beta, CONV_PARAM, {"mode": "train"}
    )
    dout = rng.standard_normal(out.shape).astype(np.float32)
    full = layer_utils.conv_bn_relu_backward(dout, cache)
    partial = layer_utils.conv_bn_relu_backward(dout, cache, compute_dx=False)
    assert partial[0] is None and full[0].shape == x.shape
    for grad, same in zip(full[1:], partial[1:], strict=True):
        assert grad.dtype == np.float32
        np.testing.assert_array_equal(grad, same)
