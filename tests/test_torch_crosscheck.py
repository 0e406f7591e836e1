"""Convolution (dilated, grouped, transposed) and max and average pooling against PyTorch's
conv2d, conv_transpose2d, max_pool2d and avg_pool2d with autograd (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_pairs import AVG_POOL, CONV, MAX_POOL, TRANSPOSE
from tolerances import TOLERANCE, assert_close_to_torch

from convnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
)
from convnet.layers import (
    global_avg_pool_backward,
    global_avg_pool_forward,
)

torch = pytest.importorskip("torch")
functional = torch.nn.functional


def check_matches_torch(layer, arrays, args, torch_forward, rng) -> None:
    """``layer`` = (forward, backward) run on ``arrays`` (and ``args``) gives the output of
    ``torch_forward`` on the same arrays as tensors, and with a random ``dout`` drawn from
    ``rng``, the gradients PyTorch's autograd gives for each array."""
    forward, backward = layer
    out, cache = forward(*arrays, *args)
    dout = rng.standard_normal(out.shape)
    grads = backward(dout, cache)
    if isinstance(grads, np.ndarray):
        grads = (grads,)
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    out_t = torch_forward(*tensors)
    out_t.backward(torch.from_numpy(dout))
    assert_close_to_torch(out, out_t)
    for grad, tensor in zip(grads, tensors, strict=True):
        assert_close_to_torch(grad, tensor.grad)


@st.composite
def conv_cases(draw):
    kernel_h, kernel_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    return {
        "num": draw(st.integers(1, 3)),
        "channels": draw(st.integers(1, 3)),
        "filters": draw(st.integers(1, 4)),
        "height": draw(st.integers(max(1, kernel_h - 2 * pad[0]), 7)),
        "width": draw(st.integers(max(1, kernel_w - 2 * pad[1]), 7)),
        "kernel": (kernel_h, kernel_w),
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "pad": pad,
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@pytest.mark.parametrize("impl", CONV)
@settings(max_examples=100)
@given(case=conv_cases())
def test_conv_matches_torch(impl, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["num"], case["channels"], case["height"], case["width"]))
    w = rng.standard_normal((case["filters"], case["channels"], *case["kernel"]))
    b = rng.standard_normal(case["filters"])
    param = {"stride": case["stride"], "pad": case["pad"]}

    def conv2d(*tensors):
        return functional.conv2d(*tensors, stride=case["stride"], padding=case["pad"])

    check_matches_torch(CONV[impl], (x, w, b), (param,), conv2d, rng)


@st.composite
def pool_cases(draw):
    window = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return {
        "num": draw(st.integers(1, 3)),
        "channels": draw(st.integers(1, 3)),
        "height": draw(st.integers(window[0], 8)),
        "width": draw(st.integers(window[1], 8)),
        "window": window,
        "stride": (draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@pytest.mark.parametrize("impl", MAX_POOL)
@settings(max_examples=100)
@given(case=pool_cases())
def test_max_pool_matches_torch(impl, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["num"], case["channels"], case["height"], case["width"]))
    window, stride = case["window"], case["stride"]
    param = {"pool_height": window[0], "pool_width": window[1], "stride": stride}

    def max_pool2d(x_t):
        return functional.max_pool2d(x_t, kernel_size=window, stride=stride)

    check_matches_torch(MAX_POOL[impl], (x,), (param,), max_pool2d, rng)


# --- dilated, grouped, depthwise and transposed convolution; average pooling ----------------


@st.composite
def grouped_cases(draw, transpose: bool = False):
    """Groups (depthwise among them: one input channel per group), dilation with padding,
    and for a transposed convolution output padding below the stride or the dilation."""
    groups = draw(st.integers(1, 4))
    per_group_in = draw(st.sampled_from([1, 1, 2]))
    per_group_out = draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    span = [dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
    if transpose:
        size = [draw(st.integers(1, 4)) for _ in (0, 1)]
        pad = tuple(min(pad[a], ((size[a] - 1) * stride[a] + span[a] - 1) // 2) for a in (0, 1))
        output_pad = tuple(draw(st.integers(0, max(stride[a], dilation[a]) - 1)) for a in (0, 1))
    else:
        size = [draw(st.integers(max(1, span[a] - 2 * pad[a]), span[a] + 4)) for a in (0, 1)]
        output_pad = (0, 0)
    return {
        "num": draw(st.integers(1, 2)),
        "groups": groups,
        "in": groups * per_group_in,
        "out": groups * per_group_out,
        "size": size,
        "kernel": kernel,
        "stride": stride,
        "pad": pad,
        "dilation": dilation,
        "output_pad": output_pad,
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@pytest.mark.parametrize("impl", CONV)
@settings(max_examples=60)
@given(case=grouped_cases())
def test_grouped_dilated_conv_matches_torch(impl, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["num"], case["in"], *case["size"]))
    w = rng.standard_normal((case["out"], case["in"] // case["groups"], *case["kernel"]))
    b = rng.standard_normal(case["out"])
    param = {key: case[key] for key in ("stride", "pad", "dilation", "groups")}

    def conv2d(*tensors):
        return functional.conv2d(
            *tensors,
            stride=case["stride"],
            padding=case["pad"],
            dilation=case["dilation"],
            groups=case["groups"],
        )

    check_matches_torch(CONV[impl], (x, w, b), (param,), conv2d, rng)


@pytest.mark.parametrize("impl", TRANSPOSE)
@settings(max_examples=60)
@given(case=grouped_cases(transpose=True))
def test_conv_transpose_matches_torch(impl, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["num"], case["in"], *case["size"]))
    w = rng.standard_normal((case["in"], case["out"] // case["groups"], *case["kernel"]))
    b = rng.standard_normal(case["out"])
    param = {key: case[key] for key in ("stride", "pad", "dilation", "groups", "output_pad")}

    def conv_transpose2d(*tensors):
        return functional.conv_transpose2d(
            *tensors,
            stride=case["stride"],
            padding=case["pad"],
            output_padding=case["output_pad"],
            groups=case["groups"],
            dilation=case["dilation"],
        )

    check_matches_torch(TRANSPOSE[impl], (x, w, b), (param,), conv_transpose2d, rng)


@pytest.mark.parametrize("impl", CONV)
def test_depthwise_dilated_conv_with_padding_matches_torch(impl):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 6, 9, 8)), rng.standard_normal((6, 1, 3, 3)), np.zeros(6)
    param = {"stride": 1, "pad": 2, "dilation": 2, "groups": 6}

    def conv2d(*tensors):
        return functional.conv2d(*tensors, padding=2, dilation=2, groups=6)

    check_matches_torch(CONV[impl], (x, w, b), (param,), conv2d, rng)


@pytest.mark.parametrize("impl", AVG_POOL)
@settings(max_examples=60)
@given(case=pool_cases())
def test_avg_pool_matches_torch(impl, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["num"], case["channels"], case["height"], case["width"]))
    window, stride = case["window"], case["stride"]
    param = {"pool_height": window[0], "pool_width": window[1], "stride": stride}

    def avg_pool2d(x_t):
        return functional.avg_pool2d(x_t, kernel_size=window, stride=stride)

    check_matches_torch(AVG_POOL[impl], (x,), (param,), avg_pool2d, rng)


def test_global_avg_pool_matches_torch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 4, 6))
    layer = (global_avg_pool_forward, global_avg_pool_backward)

    def global_pool(x_t):
        return functional.adaptive_avg_pool2d(x_t, 1).flatten(1)

    check_matches_torch(layer, (x,), (), global_pool, rng)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=40, deadline=None)
@given(
    num=st.integers(1, 3),
    channels=st.integers(1, 6),
    filters=st.integers(1, 6),
    size=st.tuples(st.integers(1, 10), st.integers(1, 10)),
    pad=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    seed=st.integers(0, 2**32 - 1),
)
def test_winograd_matches_torch(tile, dtype, num, channels, filters, size, pad, seed):
    """Winograd with either tile size against PyTorch in float64 (float32 within 1e-4)."""
    from convnet import _backend, conv_plan

    if _backend.winograd_kernel is None:
        pytest.skip("the compiled Winograd kernel is not in use")
    height, width = max(size[0], 3 - 2 * pad[0]), max(size[1], 3 - 2 * pad[1])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num, channels, height, width))
    w = rng.standard_normal((filters, channels, 3, 3))
    b = rng.standard_normal(filters)
    original = conv_plan.winograd_tile
    conv_plan.winograd_tile = lambda geo: tile
    try:
        param = {"stride": 1, "pad": pad, "algorithm": "winograd"}
        cast = [a.astype(dtype) for a in (x, w, b)]
        out, cache = conv_forward_fast(*cast, param)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = conv_backward_fast(dout.astype(dtype), cache)
    finally:
        conv_plan.winograd_tile = original
    x_t, w_t, b_t = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out_t = functional.conv2d(x_t, w_t, b_t, padding=pad)
    out_t.backward(torch.from_numpy(dout))
    tol = TOLERANCE[np.dtype(dtype)]
    for actual, expected in ((out, out_t), (dx, x_t.grad), (dw, w_t.grad), (db, b_t.grad)):
        expected = expected.detach().numpy()
        scale = float(np.max(np.abs(expected), initial=0.0))
        np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)
