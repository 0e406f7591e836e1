"""Average and global average pooling: gradient checks, fast against naive, known values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_pairs import AVG_POOL
from tolerances import GRAD_TOL, assert_matches

from convnet._parallel import set_num_threads
from convnet.fast_layers import avg_pool_backward_fast, avg_pool_forward_fast
from convnet.gradient_check import numerical_gradient_array, relative_error
from convnet.layers import (
    avg_pool_backward_naive,
    avg_pool_forward_naive,
    global_avg_pool_backward,
    global_avg_pool_forward,
)

# (x shape, pool_h, pool_w, stride): tiling, overlapping, gapped, not tiling, 1x1
CASES = [
    ((2, 2, 4, 4), 2, 2, 2),
    ((2, 2, 7, 5), 3, 3, 2),
    ((1, 3, 5, 6), 2, 3, (1, 2)),
    ((2, 1, 7, 8), 2, 2, (3, 2)),
    ((1, 2, 3, 4), 3, 4, 1),
    ((2, 2, 5, 5), 1, 1, (2, 1)),
]


def _param(pool_h: int, pool_w: int, stride) -> dict:
    return {"pool_height": pool_h, "pool_width": pool_w, "stride": stride}


@pytest.mark.parametrize("impl", AVG_POOL)
@pytest.mark.parametrize("case", CASES, ids=[str(case).replace(" ", "") for case in CASES])
def test_avg_pool_gradient(impl, case, rng):
    forward, backward = AVG_POOL[impl]
    shape, pool_h, pool_w, stride = case
    param = _param(pool_h, pool_w, stride)
    x = rng.standard_normal(shape)
    out, cache = forward(x, param)
    dout = rng.standard_normal(out.shape)
    numerical = numerical_gradient_array(lambda v: forward(v, param)[0], x, dout)
    assert relative_error(backward(dout, cache), numerical) < GRAD_TOL


def test_avg_pool_known_value():
    x = np.arange(12.0).reshape(1, 1, 3, 4)
    for forward, backward in AVG_POOL.values():
        out, cache = forward(x, _param(2, 2, (1, 2)))
        np.testing.assert_array_equal(out[0, 0], [[2.5, 4.5], [6.5, 8.5]])
        dx = backward(np.ones((1, 1, 2, 2)), cache)
        np.testing.assert_array_equal(dx[0, 0], [[0.25] * 4, [0.5] * 4, [0.25] * 4])


@st.composite
def pool_cases(draw):
    pool_h, pool_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    shape = (
        draw(st.integers(0, 3)),
        draw(st.integers(1, 3)),
        draw(st.integers(pool_h, 9)),
        draw(st.integers(pool_w, 9)),
    )
    stride = draw(st.sampled_from([2, (draw(st.integers(1, 4)), draw(st.integers(1, 4)))]))
    return shape, pool_h, pool_w, stride


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=pool_cases(),
    dtype=st.sampled_from([np.float32, np.float64]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_matches_naive(case, dtype, threads, seed, restore_num_threads):
    set_num_threads(threads)
    shape, pool_h, pool_w, stride = case
    param = _param(pool_h, pool_w, stride)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    out_naive, cache_naive = avg_pool_forward_naive(x, param)
    out_fast, cache_fast = avg_pool_forward_fast(x, param)
    assert out_naive.dtype == np.dtype(dtype)
    assert_matches(out_fast, out_naive)
    dout = rng.standard_normal(out_naive.shape).astype(dtype)
    assert_matches(
        avg_pool_backward_fast(dout, cache_fast), avg_pool_backward_naive(dout, cache_naive)
    )
    assert_matches(
        avg_pool_backward_naive(dout, cache_fast), avg_pool_backward_naive(dout, cache_naive)
    )


@pytest.mark.parametrize("impl", AVG_POOL)
def test_avg_pool_layouts_dtypes_and_inputs_untouched(impl, to_layout, rng):
    forward, backward = AVG_POOL[impl]
    param = _param(*CASES[1][1:])
    x = rng.standard_normal(CASES[1][0])
    out_ref, cache = forward(x, param)
    dout = rng.standard_normal(out_ref.shape)
    dx_ref = backward(dout, cache)
    x_view, dout_view = to_layout(x), to_layout(dout)
    copies = x_view.copy(), dout_view.copy()
    out, cache = forward(x_view, param)
    assert_matches(out, out_ref)
    assert_matches(backward(dout_view, cache), dx_ref)
    np.testing.assert_array_equal(x_view, copies[0])
    np.testing.assert_array_equal(dout_view, copies[1])
    out32, cache32 = forward(x.astype(np.float32), param)
    assert out32.dtype == np.float32
    assert backward(dout.astype(np.float32), cache32).dtype == np.float32
    assert backward(dout, cache32).dtype == np.float64


@pytest.mark.parametrize("impl", AVG_POOL)
def test_avg_pool_nan_reaches_exactly_the_windows_holding_it(impl, rng):
    forward, _ = AVG_POOL[impl]
    x = rng.standard_normal((1, 1, 5, 5))
    x[0, 0, 2, 3] = np.nan
    out, _ = forward(x, _param(2, 2, 1))
    expected = np.zeros((4, 4), dtype=bool)
    expected[1:3, 2:4] = True
    np.testing.assert_array_equal(np.isnan(out[0, 0]), expected)


@pytest.mark.parametrize("impl", AVG_POOL)
@pytest.mark.parametrize(
    ("param", "error", "message"),
    [
        (_param(6, 2, 2), ValueError, r"pool window 6x2 is larger than the input 5x5"),
        (_param(2, 0, 2), ValueError, r"pool_width must be >= 1"),
        (_param(2, 2, 0), ValueError, r"stride must be >= 1"),
        ({"pool_height": 2, "stride": 2}, ValueError, r"missing the key 'pool_width'"),
    ],
)
def test_avg_pool_rejects_bad_parameters(impl, param, error, message):
    with pytest.raises(error, match=message):
        AVG_POOL[impl][0](np.zeros((1, 1, 5, 5)), param)


# --- global average pooling ---------------------------------------------------------------------


def test_global_avg_pool_gradient(rng):
    x = rng.standard_normal((3, 4, 3, 5))
    out, cache = global_avg_pool_forward(x)
    assert out.shape == (3, 4)
    assert_matches(out, x.mean(axis=(2, 3)))
    dout = rng.standard_normal(out.shape)
    numerical = numerical_gradient_array(lambda v: global_avg_pool_forward(v)[0], x, dout)
    assert relative_error(global_avg_pool_backward(dout, cache), numerical) < GRAD_TOL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_avg_pool_matches_a_full_window_avg_pool(dtype, rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    out, cache = global_avg_pool_forward(x)
    assert out.dtype == np.dtype(dtype)
    pooled, pool_cache = avg_pool_forward_naive(x, _param(4, 5, 1))
    assert_matches(out, pooled.reshape(2, 3))
    dout = rng.standard_normal((2, 3)).astype(dtype)
    dx = global_avg_pool_backward(dout, cache)
    assert_matches(dx, avg_pool_backward_naive(dout.reshape(2, 3, 1, 1), pool_cache))
    dout_copy = dout.copy()
    dx[...] = 7.0
    np.testing.assert_array_equal(dout, dout_copy)


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (np.zeros((2, 3, 4)), ValueError, r"x must be 4-dimensional"),
        (np.zeros((2, 3, 0, 4)), ValueError, r"at least one position to average"),
        (np.zeros((2, 3, 4, 4), np.int64), TypeError, r"x must have dtype float32"),
    ],
)
def test_global_avg_pool_rejects_bad_input(x, error, message):
    with pytest.raises(error, match=message):
        global_avg_pool_forward(x)


def test_global_avg_pool_backward_checks_dout():
    _, cache = global_avg_pool_forward(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"dout has shape \(3, 2\)"):
        global_avg_pool_backward(np.zeros((3, 2)), cache)


@pytest.mark.parametrize("impl", AVG_POOL)
def test_avg_pool_refuses_caches_of_other_passes(impl, rng):
    forward, backward = AVG_POOL[impl]
    x = rng.standard_normal((2, 2, 5, 5))
    out, cache = forward(x, _param(2, 2, 2))
    dout = np.ones(out.shape)
    for bad in (None, (), "cache", [x] * 3):
        with pytest.raises(TypeError, match="cache"):
            backward(dout, bad)
    with pytest.raises(ValueError, match="does not fit together"):
        backward(dout, cache._replace(x=np.ones((2, 2, 9, 9))))
    with pytest.raises(ValueError, match="comes from a max pool"):
        backward(dout, cache._replace(argmax=np.zeros(out.shape, np.intc)))
    with pytest.raises(TypeError, match="global avg pool cache"):
        global_avg_pool_backward(np.ones((2, 2)), "not x")
