"""Padded max and average pooling (pool_param 'pad', 'count_include_pad'): the fast layers
against the naive ones, both against PyTorch's max_pool2d / avg_pool2d with autograd."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_pairs import AVG_POOL, MAX_POOL
from tolerances import assert_close_to_torch, assert_matches

from convnet._parallel import set_num_threads


@st.composite
def padded_pools(draw, torch_limits: bool = False):
    """A padded pool that fits: pads below the window (at most half of it, as PyTorch
    demands, with ``torch_limits``), the padded input at least one window."""
    window = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    limit = [k // 2 if torch_limits else k - 1 for k in window]
    pad = (draw(st.integers(0, limit[0])), draw(st.integers(0, limit[1])))
    size = [draw(st.integers(max(1, k - 2 * p), 8)) for k, p in zip(window, pad, strict=True)]
    param = {
        "pool_height": window[0],
        "pool_width": window[1],
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "pad": pad,
        "count_include_pad": draw(st.booleans()),
    }
    shape = (draw(st.integers(0, 3)), draw(st.integers(1, 3)), *size)
    return shape, param


def special_input(shape, kind: str, rng: np.random.Generator, dtype) -> np.ndarray:
    """Continuous data, ReLU'd data (ties at 0), data with -inf (ties with the padding),
    or with -inf, +inf and NaN."""
    x = rng.standard_normal(shape)
    if kind == "relu":
        x = np.maximum(x, 0)
    elif kind in ("minus-infinity", "specials"):
        mask = rng.random(shape) < 0.4
        specials = [-np.inf] if kind == "minus-infinity" else [-np.inf, np.inf, np.nan]
        x[mask] = rng.choice(specials, size=int(mask.sum()))
    return x.astype(dtype)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=padded_pools(),
    dtype=st.sampled_from([np.float32, np.float64]),
    kind=st.sampled_from(["continuous", "relu", "specials"]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_padded_max_pool_fast_matches_naive(case, dtype, kind, threads, seed, restore_num_threads):
    set_num_threads(threads)
    shape, param = case
    rng = np.random.default_rng(seed)
    x = special_input(shape, kind, rng, dtype)
    (naive_forward, naive_backward), (fast_forward, fast_backward) = MAX_POOL.values()
    out_naive, cache_naive = naive_forward(x, param)
    out_fast, cache_fast = fast_forward(x, param)
    np.testing.assert_array_equal(out_fast, out_naive)
    dout = rng.standard_normal(out_naive.shape).astype(dtype)
    dx = naive_backward(dout, cache_naive)
    assert_matches(fast_backward(dout, cache_fast), dx)
    assert_matches(naive_backward(dout, cache_fast), dx)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=padded_pools(),
    dtype=st.sampled_from([np.float32, np.float64]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_padded_avg_pool_fast_matches_naive(case, dtype, threads, seed, restore_num_threads):
    set_num_threads(threads)
    shape, param = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    (naive_forward, naive_backward), (fast_forward, fast_backward) = AVG_POOL.values()
    out_naive, cache_naive = naive_forward(x, param)
    out_fast, cache_fast = fast_forward(x, param)
    assert_matches(out_fast, out_naive)
    dout = rng.standard_normal(out_naive.shape).astype(dtype)
    dx = naive_backward(dout, cache_naive)
    assert_matches(fast_backward(dout, cache_fast), dx)
    assert_matches(naive_backward(dout, cache_fast), dx)


@pytest.mark.parametrize("impl", ["naive", "fast"])
@settings(max_examples=60)
@given(case=padded_pools(torch_limits=True), seed=st.integers(0, 2**32 - 1))
def test_padded_pools_match_torch(impl, case, seed):
    torch = pytest.importorskip("torch")
    shape, param = case
    rng = np.random.default_rng(seed)
    x = special_input((max(shape[0], 1), *shape[1:]), "relu", rng, np.float64)
    window = (param["pool_height"], param["pool_width"])
    for layers, pool, options in (
        (MAX_POOL, torch.nn.functional.max_pool2d, {}),
        (
            AVG_POOL,
            torch.nn.functional.avg_pool2d,
            {"count_include_pad": param["count_include_pad"]},
        ),
    ):
        forward, backward = layers[impl]
        out, cache = forward(x, param)
        dout = rng.standard_normal(out.shape)
        x_t = torch.tensor(x, requires_grad=True)
        out_t = pool(x_t, window, param["stride"], param["pad"], **options)
        out_t.backward(torch.from_numpy(dout))
        assert_close_to_torch(out, out_t)
        assert_close_to_torch(backward(dout, cache), x_t.grad)


@pytest.mark.parametrize("impl", ["naive", "fast"])
def test_a_window_of_minus_infinity_sends_its_gradient_to_its_first_input(impl):
    """The padding (-inf) comes first in the windows and ties with the inputs: the
    gradient still goes to an input, the first of the window (rows and columns 0..1 and
    1..2), as in PyTorch."""
    forward, backward = MAX_POOL[impl]
    x = np.full((1, 1, 3, 3), -np.inf)
    param = {"pool_height": 3, "pool_width": 3, "stride": 2, "pad": 1}
    out, cache = forward(x, param)
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), -np.inf))
    dx = backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 2.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("impl", ["naive", "fast"])
def test_count_include_pad_divides_by_the_inputs_a_window_holds(impl):
    forward, _ = AVG_POOL[impl]
    x = np.ones((1, 1, 2, 2))
    param = {"pool_height": 2, "pool_width": 2, "stride": 1, "pad": 1}
    counted, _ = forward(x, param)
    np.testing.assert_allclose(
        counted[0, 0], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]
    )
    uncounted, _ = forward(x, {**param, "count_include_pad": False})
    np.testing.assert_allclose(uncounted, np.ones((1, 1, 3, 3)))


@pytest.mark.parametrize("layers", [MAX_POOL, AVG_POOL], ids=["max", "avg"])
@pytest.mark.parametrize("impl", ["naive", "fast"])
@pytest.mark.parametrize(
    ("update", "error", "message"),
    [
        ({"pad": 2}, ValueError, "must be smaller than the window"),
        ({"pad": (0, 3)}, ValueError, "must be smaller than the window"),
        ({"pad": -1}, ValueError, "pad must be >= 0"),
        ({"pad": 1.5}, TypeError, "pad must be an integer"),
        ({"count_include_pad": 1}, TypeError, "count_include_pad"),
        ({"pool_height": 2, "pool_width": 2, "pad": 0, "stride": 1}, None, None),
    ],
)
def test_pool_padding_arguments_are_checked(layers, impl, update, error, message):
    forward, _ = layers[impl]
    x = np.zeros((1, 1, 1, 1))
    param = {"pool_height": 2, "pool_width": 2, "stride": 1, "pad": 1, **update}
    if error is None:  # a 2x2 window on a 1x1 input needs the padding
        with pytest.raises(ValueError, match="larger than the input 1x1"):
            forward(x, param)
        return
    with pytest.raises(error, match=message):
        forward(x, param)


@pytest.mark.parametrize("layers", [MAX_POOL, AVG_POOL], ids=["max", "avg"])
@pytest.mark.parametrize("impl", ["naive", "fast"])
def test_padding_that_would_exhaust_memory_is_refused_before_any_allocation(layers, impl):
    forward, _ = layers[impl]
    param = {"pool_height": 2**31 - 1, "pool_width": 2**31 - 1, "stride": 1, "pad": 2**30}
    with pytest.raises(ValueError, match=r"padded input of the pooling .* would need"):
        forward(np.zeros((1, 1, 1, 1)), param)
