"""Bad arguments raise ValueError or TypeError naming the problem, in the naive and fast layers."""

from __future__ import annotations

import numpy as np
import pytest
from layer_pairs import CONV, MAX_POOL

from convnet import fast_layers
from convnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    set_workspace_limit,
)
from convnet.layers import (
    affine_backward,
    affine_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)

GOOD_CONV = {"stride": 1, "pad": 1}
GOOD_POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def conv_arrays():
    """Valid x (2, 3, 5, 5), w (4, 3, 3, 3) and b (4,)."""
    return np.zeros((2, 3, 5, 5)), np.zeros((4, 3, 3, 3)), np.zeros(4)


# --- convolution arrays ---------------------------------------------------------------------

CONV_ARRAY_ERRORS = {
    "x-3d": ((0, np.zeros((3, 5, 5))), ValueError, r"x must be 4-dimensional"),
    "x-5d": ((0, np.zeros((1, 2, 3, 5, 5))), ValueError, r"x must be 4-dimensional"),
    "w-3d": ((1, np.zeros((3, 3, 3))), ValueError, r"w must be 4-dimensional"),
    "b-2d": ((2, np.zeros((4, 1))), ValueError, r"b must be 1-dimensional"),
    "channels": ((1, np.zeros((4, 2, 3, 3))), ValueError, r"channel mismatch"),
    "bias-length": ((2, np.zeros(3)), ValueError, r"b must have length F = 4"),
    "kernel-too-tall": ((1, np.zeros((4, 3, 8, 3))), ValueError, r"larger than the padded input"),
    "kernel-too-wide": ((1, np.zeros((4, 3, 3, 8))), ValueError, r"larger than the padded input"),
    "empty-kernel": ((1, np.zeros((4, 3, 0, 3))), ValueError, r"filter size must be at least"),
    "x-int": ((0, np.zeros((2, 3, 5, 5), np.int64)), TypeError, r"x must have dtype float32"),
    "x-int32": ((0, np.zeros((2, 3, 5, 5), np.int32)), TypeError, r"x must have dtype float32"),
    "x-bool": ((0, np.zeros((2, 3, 5, 5), bool)), TypeError, r"x must have dtype float32"),
    "x-complex": ((0, np.zeros((2, 3, 5, 5), complex)), TypeError, r"x must have dtype float32"),
    "x-object": ((0, np.zeros((2, 3, 5, 5), object)), TypeError, r"x must have dtype float32"),
    "x-float16": ((0, np.zeros((2, 3, 5, 5), np.float16)), TypeError, r"x must have dtype"),
    "x-string": ((0, "not an array"), TypeError, r"x must be a numpy array"),
    "x-none": ((0, None), TypeError, r"x must be a numpy array"),
    "w-int": ((1, np.zeros((4, 3, 3, 3), np.int64)), TypeError, r"w must have dtype float32"),
    "b-int": ((2, np.zeros(4, np.int64)), TypeError, r"b must have dtype float32"),
}


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("case", CONV_ARRAY_ERRORS)
def test_conv_rejects_bad_arrays(impl, case):
    (position, bad), error, message = CONV_ARRAY_ERRORS[case]
    arrays = list(conv_arrays())
    arrays[position] = bad
    with pytest.raises(error, match=message):
        CONV[impl][0](*arrays, GOOD_CONV)


def test_conv_kernel_covered_by_padding_is_accepted():
    x, _, b = conv_arrays()
    for forward, _ in CONV.values():
        out, _ = forward(x, np.zeros((4, 3, 7, 6)), b, {"stride": 1, "pad": (1, 1)})
        assert out.shape == (2, 4, 1, 2)


# --- convolution parameters -----------------------------------------------------------------

CONV_PARAM_ERRORS = {
    "stride-0": ({"stride": 0, "pad": 0}, ValueError, r"stride must be >= 1, got 0"),
    "stride-negative": ({"stride": -2, "pad": 0}, ValueError, r"stride must be >= 1, got -2"),
    "stride-pair-0": ({"stride": (1, 0), "pad": 0}, ValueError, r"stride\[1\] must be >= 1"),
    "pad-negative": ({"stride": 1, "pad": -1}, ValueError, r"pad must be >= 0, got -1"),
    "pad-pair-negative": ({"stride": 1, "pad": (-1, 0)}, ValueError, r"pad\[0\] must be >= 0"),
    "stride-float": ({"stride": 1.0, "pad": 0}, TypeError, r"stride must be an integer"),
    "stride-bool": ({"stride": True, "pad": 0}, TypeError, r"stride must be an integer"),
    "stride-numpy-bool": ({"stride": np.True_, "pad": 0}, TypeError, r"stride must be an integer"),
    "stride-string": ({"stride": "1", "pad": 0}, TypeError, r"stride must be an integer"),
    "pad-float": ({"stride": 1, "pad": 0.5}, TypeError, r"pad must be an integer"),
    "pad-bool": ({"stride": 1, "pad": False}, TypeError, r"pad must be an integer"),
    "pad-pair-float": ({"stride": 1, "pad": (1, 1.0)}, TypeError, r"pad\[1\] must be an integer"),
    "stride-triple": (
        {"stride": (1, 1, 1), "pad": 0},
        ValueError,
        r"stride must be an int or a pair",
    ),
    "missing-stride": ({"pad": 0}, ValueError, r"missing the key 'stride'"),
    "missing-pad": ({"stride": 1}, ValueError, r"missing the key 'pad'"),
    "not-a-dict": ([1, 1], TypeError, r"conv_param must be a dict"),
    "none": (None, TypeError, r"conv_param must be a dict"),
}


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("case", CONV_PARAM_ERRORS)
def test_conv_rejects_bad_params(impl, case):
    param, error, message = CONV_PARAM_ERRORS[case]
    with pytest.raises(error, match=message):
        CONV[impl][0](*conv_arrays(), param)


def test_numpy_integer_params_are_accepted():
    x, w, b = conv_arrays()
    param = {"stride": np.int64(2), "pad": (np.int32(1), np.uint8(0))}
    for forward, _ in CONV.values():
        assert forward(x, w, b, param)[0].shape == (2, 4, 3, 2)


# --- upstream gradients ---------------------------------------------------------------------

DOUT_ERRORS = {
    "dout-short": (np.zeros((2, 4, 5)), ValueError, r"dout has shape \(2, 4, 5\)"),
    "dout-batch": (np.zeros((3, 4, 5, 5)), ValueError, r"forward pass produced \(2, 4, 5, 5\)"),
    "dout-spatial": (np.zeros((2, 4, 5, 4)), ValueError, r"dout has shape"),
    "dout-int": (np.zeros((2, 4, 5, 5), np.int64), TypeError, r"dout must have dtype"),
}


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("case", DOUT_ERRORS)
def test_conv_backward_rejects_bad_dout(impl, case):
    dout, error, message = DOUT_ERRORS[case]
    forward, backward = CONV[impl]
    _, cache = forward(*conv_arrays(), GOOD_CONV)
    with pytest.raises(error, match=message):
        backward(dout, cache)


def test_conv_backward_fast_rejects_bad_dout_without_dx():
    _, cache = conv_forward_fast(*conv_arrays(), GOOD_CONV)
    with pytest.raises(ValueError, match="dout has shape"):
        conv_backward_fast(np.zeros((2, 4, 5, 4)), cache, compute_dx=False)


@pytest.mark.parametrize("impl", MAX_POOL)
@pytest.mark.parametrize(
    ("dout", "error", "message"),
    [
        (np.zeros((2, 3, 3, 2)), ValueError, r"forward pass produced \(2, 3, 2, 2\)"),
        (np.zeros((2, 3, 4)), ValueError, r"dout has shape"),
        (np.zeros((2, 3, 2, 2), np.float16), TypeError, r"dout must have dtype"),
    ],
)
def test_pool_backward_rejects_bad_dout(impl, dout, error, message):
    forward, backward = MAX_POOL[impl]
    _, cache = forward(np.zeros((2, 3, 4, 5)), GOOD_POOL)
    with pytest.raises(error, match=message):
        backward(dout, cache)


def test_affine_and_relu_backward_reject_bad_dout():
    _, cache = affine_forward(np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(4))
    with pytest.raises(ValueError, match=r"forward pass produced \(2, 4\)"):
        affine_backward(np.zeros((4, 2)), cache)
    with pytest.raises(TypeError, match="dout must have dtype"):
        affine_backward(np.zeros((2, 4), np.int64), cache)
    _, cache = relu_forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"forward pass produced \(2, 3\)"):
        relu_backward(np.zeros(6), cache)
    with pytest.raises(TypeError, match="dout must have dtype"):
        relu_backward(np.zeros((2, 3), np.int64), cache)


# --- max pool ---------------------------------------------------------------------------------

POOL_ERRORS = {
    "x-3d": (np.zeros((3, 4, 4)), GOOD_POOL, ValueError, r"x must be 4-dimensional"),
    "x-int": (np.zeros((1, 1, 4, 4), np.int64), GOOD_POOL, TypeError, r"x must have dtype"),
    "x-bool": (np.zeros((1, 1, 4, 4), bool), GOOD_POOL, TypeError, r"x must have dtype"),
    "x-complex": (np.zeros((1, 1, 4, 4), complex), GOOD_POOL, TypeError, r"x must have dtype"),
    "x-object": (np.zeros((1, 1, 4, 4), object), GOOD_POOL, TypeError, r"x must have dtype"),
    "window-too-tall": (
        np.zeros((1, 1, 1, 4)),
        GOOD_POOL,
        ValueError,
        r"pool window 2x2 is larger than the input 1x4",
    ),
    "window-too-wide": (
        np.zeros((1, 1, 4, 3)),
        {"pool_height": 2, "pool_width": 4, "stride": 1},
        ValueError,
        r"larger than the input",
    ),
    "height-0": (
        np.zeros((1, 1, 4, 4)),
        {"pool_height": 0, "pool_width": 2, "stride": 1},
        ValueError,
        r"pool_height must be >= 1",
    ),
    "width-float": (
        np.zeros((1, 1, 4, 4)),
        {"pool_height": 2, "pool_width": 2.0, "stride": 1},
        TypeError,
        r"pool_width must be an integer",
    ),
    "height-bool": (
        np.zeros((1, 1, 4, 4)),
        {"pool_height": True, "pool_width": 2, "stride": 1},
        TypeError,
        r"pool_height must be an integer",
    ),
    "stride-0": (
        np.zeros((1, 1, 4, 4)),
        {"pool_height": 2, "pool_width": 2, "stride": 0},
        ValueError,
        r"stride must be >= 1",
    ),
    "stride-negative-pair": (
        np.zeros((1, 1, 4, 4)),
        {"pool_height": 2, "pool_width": 2, "stride": (2, -1)},
        ValueError,
        r"stride\[1\] must be >= 1",
    ),
    "stride-float": (
        np.zeros((1, 1, 4, 4)),
        {"pool_height": 2, "pool_width": 2, "stride": 2.0},
        TypeError,
        r"stride must be an integer",
    ),
    "missing-height": (
        np.zeros((1, 1, 4, 4)),
        {"pool_width": 2, "stride": 2},
        ValueError,
        r"missing the key 'pool_height'",
    ),
    "missing-width": (
        np.zeros((1, 1, 4, 4)),
        {"pool_height": 2, "stride": 2},
        ValueError,
        r"missing the key 'pool_width'",
    ),
    "missing-stride": (
        np.zeros((1, 1, 4, 4)),
        {"pool_height": 2, "pool_width": 2},
        ValueError,
        r"missing the key 'stride'",
    ),
    "not-a-dict": (np.zeros((1, 1, 4, 4)), (2, 2, 2), TypeError, r"pool_param must be a dict"),
}


@pytest.mark.parametrize("impl", MAX_POOL)
@pytest.mark.parametrize("case", POOL_ERRORS)
def test_pool_rejects_bad_input(impl, case):
    x, param, error, message = POOL_ERRORS[case]
    with pytest.raises(error, match=message):
        MAX_POOL[impl][0](x, param)


# --- affine, ReLU -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "w", "b", "error", "message"),
    [
        (np.zeros((2, 3)), np.zeros((4, 5)), np.zeros(5), ValueError, r"D = 3 features"),
        (np.zeros((2, 2, 3)), np.zeros((5, 5)), np.zeros(5), ValueError, r"D = 6 features"),
        (np.zeros((2, 3)), np.zeros((3, 5)), np.zeros(4), ValueError, r"b must have length M = 5"),
        (np.zeros((2, 3)), np.zeros(3), np.zeros(5), ValueError, r"w must be 2-dimensional"),
        (np.zeros((2, 3)), np.zeros((3, 5)), np.zeros((1, 5)), ValueError, r"b must be 1-dim"),
        (np.float64(1.0), np.zeros((1, 5)), np.zeros(5), ValueError, r"batch dimension"),
        (
            np.zeros((2, 3), np.int64),
            np.zeros((3, 5)),
            np.zeros(5),
            TypeError,
            r"x must have dtype",
        ),
        (np.zeros((2, 3)), np.zeros((3, 5), complex), np.zeros(5), TypeError, r"w must have dtype"),
    ],
)
def test_affine_rejects_bad_input(x, w, b, error, message):
    with pytest.raises(error, match=message):
        affine_forward(x, w, b)


@pytest.mark.parametrize("dtype", [np.int64, bool, complex, object])
def test_relu_rejects_non_float(dtype):
    with pytest.raises(TypeError, match="x must have dtype"):
        relu_forward(np.zeros(3, dtype))


# --- losses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_fn", [softmax_loss, svm_loss])
@pytest.mark.parametrize(
    ("x", "y", "error", "message"),
    [
        (np.zeros((3, 4)), np.array([0, 4, 1]), ValueError, r"labels must lie in \[0, 4\)"),
        (np.zeros((3, 4)), np.array([0, -1, 1]), ValueError, r"labels must lie in \[0, 4\)"),
        (np.zeros((3, 4)), np.array([0, 1]), ValueError, r"must have shape \(3,\)"),
        (np.zeros((3, 4)), np.array([[0, 1, 2]]), ValueError, r"must have shape \(3,\)"),
        (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), TypeError, r"labels y must be integers"),
        (np.zeros((3, 4)), np.array([True, False, True]), TypeError, r"labels y must be integers"),
        (np.zeros(4), np.array([0]), ValueError, r"scores x must be 2-dimensional"),
        (np.zeros((3, 0)), np.zeros(3, np.int64), ValueError, r"at least one class"),
        (np.zeros((3, 4), np.int64), np.array([0, 1, 2]), TypeError, r"x must have dtype"),
    ],
)
def test_losses_reject_bad_input(loss_fn, x, y, error, message):
    with pytest.raises(error, match=message):
        loss_fn(x, y)


# --- workspace limit --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "error", "message"),
    [
        (0, ValueError, "workspace limit must be at least 1 byte, got 0"),
        (-1, ValueError, "workspace limit must be at least 1 byte, got -1"),
        (1.5, TypeError, "workspace limit must be an int of bytes, got 1.5"),
        (True, TypeError, "workspace limit must be an int of bytes, got True"),
        ("64MB", TypeError, "workspace limit must be an int of bytes"),
        (None, TypeError, "workspace limit must be an int of bytes, got None"),
    ],
)
def test_set_workspace_limit_rejects_bad_values(limit, error, message, restore_workspace_limit):
    previous = fast_layers.get_workspace_limit()
    with pytest.raises(error, match=message):
        set_workspace_limit(limit)
    assert fast_layers.get_workspace_limit() == previous


def test_set_workspace_limit_accepts_numpy_integers(restore_workspace_limit):
    set_workspace_limit(np.int64(2**20))
    assert fast_layers.get_workspace_limit() == 2**20
