"""Convolution and max pooling against PyTorch's conv2d and max_pool2d with autograd (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from convnet.layers import (
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)

torch = pytest.importorskip("torch")
functional = torch.nn.functional

CONV = {
    "naive": (conv_forward_naive, conv_backward_naive),
    "fast": (conv_forward_fast, conv_backward_fast),
}
POOL = {
    "naive": (max_pool_forward_naive, max_pool_backward_naive),
    "fast": (max_pool_forward_fast, max_pool_backward_fast),
}
TOL = 1e-10


def assert_close_to_torch(actual: np.ndarray, expected) -> None:
    expected = expected.detach().numpy()
    assert actual.shape == expected.shape
    scale = float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=TOL, atol=TOL * scale)


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
    forward, backward = CONV[impl]
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["num"], case["channels"], case["height"], case["width"]))
    w = rng.standard_normal((case["filters"], case["channels"], *case["kernel"]))
    b = rng.standard_normal(case["filters"])
    out, cache = forward(x, w, b, {"stride": case["stride"], "pad": case["pad"]})
    dout = rng.standard_normal(out.shape)
    dx, dw, db = backward(dout, cache)

    x_t, w_t, b_t = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out_t = functional.conv2d(x_t, w_t, b_t, stride=case["stride"], padding=case["pad"])
    out_t.backward(torch.from_numpy(dout))
    assert_close_to_torch(out, out_t)
    assert_close_to_torch(dx, x_t.grad)
    assert_close_to_torch(dw, w_t.grad)
    assert_close_to_torch(db, b_t.grad)


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


@pytest.mark.parametrize("impl", POOL)
@settings(max_examples=100)
@given(case=pool_cases())
def test_max_pool_matches_torch(impl, case):
    forward, backward = POOL[impl]
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["num"], case["channels"], case["height"], case["width"]))
    param = {"pool_height": case["window"][0], "pool_width": case["window"][1]}
    out, cache = forward(x, {**param, "stride": case["stride"]})
    dout = rng.standard_normal(out.shape)
    dx = backward(dout, cache)

    x_t = torch.tensor(x, requires_grad=True)
    out_t = functional.max_pool2d(x_t, kernel_size=case["window"], stride=case["stride"])
    out_t.backward(torch.from_numpy(dout))
    assert_close_to_torch(out, out_t)
    assert_close_to_torch(dx, x_t.grad)


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
    from convnet import _backend, fast_layers

    if _backend.winograd_kernel is None:
        pytest.skip("the compiled Winograd kernel is not in use")
    height, width = max(size[0], 3 - 2 * pad[0]), max(size[1], 3 - 2 * pad[1])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num, channels, height, width))
    w = rng.standard_normal((filters, channels, 3, 3))
    b = rng.standard_normal(filters)
    original = fast_layers._winograd_tile
    fast_layers._winograd_tile = lambda geo: tile
    try:
        param = {"stride": 1, "pad": pad, "algorithm": "winograd"}
        cast = [a.astype(dtype) for a in (x, w, b)]
        out, cache = conv_forward_fast(*cast, param)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = conv_backward_fast(dout.astype(dtype), cache)
    finally:
        fast_layers._winograd_tile = original
    x_t, w_t, b_t = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out_t = functional.conv2d(x_t, w_t, b_t, padding=pad)
    out_t.backward(torch.from_numpy(dout))
    tol = TOL if dtype == np.float64 else 1e-4
    for actual, expected in ((out, out_t), (dx, x_t.grad), (dw, w_t.grad), (db, b_t.grad)):
        expected = expected.detach().numpy()
        scale = float(np.max(np.abs(expected), initial=0.0))
        np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)
