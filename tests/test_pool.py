"""Max pooling: gradient checks, fast against naive, ties, NaN, layouts and dtypes."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_pairs import MAX_POOL
from tolerances import GRAD_TOL, assert_matches

from convnet._parallel import set_num_threads
from convnet.fast_layers import max_pool_backward_fast, max_pool_forward_fast
from convnet.gradient_check import numerical_gradient_array, relative_error
from convnet.layers import max_pool_backward_naive, max_pool_forward_naive


class Geometry(NamedTuple):
    """One max pool's sizes; ``stride`` is what pool_param receives."""

    num: int
    channels: int
    height: int
    width: int
    pool_h: int
    pool_w: int
    stride: int | tuple[int, int]

    def strides(self) -> tuple[int, int]:
        return (self.stride, self.stride) if isinstance(self.stride, int) else self.stride

    def out_size(self) -> tuple[int, int]:
        sh, sw = self.strides()
        return (self.height - self.pool_h) // sh + 1, (self.width - self.pool_w) // sw + 1

    def pool_param(self) -> dict:
        return {"pool_height": self.pool_h, "pool_width": self.pool_w, "stride": self.stride}

    def x_shape(self) -> tuple[int, int, int, int]:
        return self.num, self.channels, self.height, self.width

    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.num, self.channels, *self.out_size())


def distinct_values(shape, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Values 0.01 apart in random order: no tie, no near-tie within a probe step."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size / 2) * 0.01).reshape(shape).astype(dtype)


def first_max_gradient(x: np.ndarray, dout: np.ndarray, geo: Geometry) -> np.ndarray:
    """Reference backward pass: each window's gradient to its first maximum, row-major."""
    sh, sw = geo.strides()
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    for n, c, i, j in np.ndindex(dout.shape):
        best = None
        for a in range(geo.pool_h):
            for b in range(geo.pool_w):
                value = x[n, c, i * sh + a, j * sw + b]
                if best is None or value > best[0]:
                    best = (value, a, b)
        dx[n, c, i * sh + best[1], j * sw + best[2]] += dout[n, c, i, j]
    return dx


GEOMETRIES = [
    Geometry(2, 2, 4, 4, 2, 2, 2),
    Geometry(2, 2, 7, 5, 3, 3, 2),
    Geometry(1, 3, 5, 6, 2, 3, (1, 2)),
    Geometry(2, 1, 7, 8, 3, 2, (2, 3)),
    Geometry(1, 2, 3, 4, 3, 4, 1),
    Geometry(2, 2, 5, 5, 1, 1, (2, 1)),
]


def _ids(geometries):
    return [
        f"n{g.num}c{g.channels}_{g.height}x{g.width}_k{g.pool_h}x{g.pool_w}_s{g.stride}".replace(
            " ", ""
        )
        for g in geometries
    ]


# --- gradient checks ------------------------------------------------------------------------


@pytest.mark.parametrize("impl", MAX_POOL)
@pytest.mark.parametrize("geo", GEOMETRIES, ids=_ids(GEOMETRIES))
def test_max_pool_gradient(impl, geo, rng):
    forward, backward = MAX_POOL[impl]
    x = distinct_values(geo.x_shape(), rng)
    dout = rng.standard_normal(geo.out_shape())
    out, cache = forward(x, geo.pool_param())
    assert out.shape == geo.out_shape()
    dx = backward(dout, cache)
    numerical = numerical_gradient_array(lambda v: forward(v, geo.pool_param())[0], x, dout)
    assert relative_error(dx, numerical) < GRAD_TOL


def test_max_pool_forward_known_value():
    x = np.array([[1.0, 5.0, 2.0], [4.0, 3.0, 0.0], [7.0, 6.0, 9.0]]).reshape(1, 1, 3, 3)
    param = {"pool_height": 2, "pool_width": 2, "stride": 1}
    for forward, _ in MAX_POOL.values():
        out, _ = forward(x, param)
        np.testing.assert_array_equal(out, [[[[5.0, 5.0], [7.0, 9.0]]]])


# --- fast against naive ---------------------------------------------------------------------


@st.composite
def geometries(draw, max_num=3):
    """Any valid geometry: overlapping, gapped, and windows that do not tile the input."""
    pool_h, pool_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride_h, stride_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = stride_h if stride_h == stride_w and draw(st.booleans()) else (stride_h, stride_w)
    return Geometry(
        draw(st.integers(0, max_num)),
        draw(st.integers(1, 3)),
        draw(st.integers(pool_h, 8)),
        draw(st.integers(pool_w, 8)),
        pool_h,
        pool_w,
        stride,
    )


def make_input(kind: str, shape, rng: np.random.Generator, dtype) -> np.ndarray:
    """Continuous data, ReLU'd data (ties at 0), or small integers (ties everywhere)."""
    if kind == "continuous":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "relu":
        return np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    return rng.integers(-2, 3, size=shape).astype(dtype)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    geo=geometries(),
    dtype=st.sampled_from([np.float32, np.float64]),
    kind=st.sampled_from(["continuous", "relu", "integers"]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_matches_naive(geo, dtype, kind, threads, seed, restore_num_threads):
    set_num_threads(threads)
    rng = np.random.default_rng(seed)
    x = make_input(kind, geo.x_shape(), rng, dtype)
    dout = rng.standard_normal(geo.out_shape()).astype(dtype)
    out_naive, cache_naive = max_pool_forward_naive(x, geo.pool_param())
    out_fast, cache_fast = max_pool_forward_fast(x, geo.pool_param())
    assert out_naive.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out_fast, out_naive)
    assert out_fast.dtype == out_naive.dtype
    dx_naive = max_pool_backward_naive(dout, cache_naive)
    assert dx_naive.dtype == np.dtype(dtype)
    assert_matches(max_pool_backward_fast(dout, cache_fast), dx_naive)
    assert_matches(dx_naive, first_max_gradient(x, dout, geo))


def sprinkle_specials(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x with about one entry in eight replaced by NaN, +inf, -inf, 0.0 or -0.0."""
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=x.dtype)
    mask = rng.random(x.shape) < 0.125
    x = x.copy()
    x[mask] = rng.choice(specials, size=int(mask.sum()))
    return x


@st.composite
def wide_geometries(draw):
    """Rows long enough for the kernels' vectorized loops (8 or 16 lanes and a tail)."""
    if draw(st.booleans()):
        pool_h = pool_w = stride_h = stride_w = 2
    else:
        pool_h, pool_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        stride_h, stride_w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return Geometry(
        draw(st.integers(1, 2)),
        draw(st.integers(1, 2)),
        draw(st.integers(pool_h, 9)),
        draw(st.integers(max(pool_w, 17), 75)),
        pool_h,
        pool_w,
        (stride_h, stride_w),
    )


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(
    geo=wide_geometries(),
    dtype=st.sampled_from([np.float32, np.float64]),
    kind=st.sampled_from(["continuous", "relu", "integers"]),
    specials=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_matches_naive_on_wide_rows_with_nan_and_inf(geo, dtype, kind, specials, seed):
    rng = np.random.default_rng(seed)
    x = make_input(kind, geo.x_shape(), rng, dtype)
    if specials:
        x = sprinkle_specials(x, rng)
    dout = rng.standard_normal(geo.out_shape()).astype(dtype)
    out_naive, cache_naive = max_pool_forward_naive(x, geo.pool_param())
    out_fast, cache_fast = max_pool_forward_fast(x, geo.pool_param())
    np.testing.assert_array_equal(out_fast, out_naive)
    np.testing.assert_array_equal(np.signbit(out_fast), np.signbit(out_naive))
    assert_matches(
        max_pool_backward_fast(dout, cache_fast), max_pool_backward_naive(dout, cache_naive)
    )


@pytest.mark.parametrize("impl", MAX_POOL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch(impl, dtype):
    forward, backward = MAX_POOL[impl]
    geo = Geometry(0, 3, 5, 4, 2, 3, (2, 1))
    out, cache = forward(np.zeros(geo.x_shape(), dtype), geo.pool_param())
    assert out.shape == geo.out_shape() and out.dtype == np.dtype(dtype)
    dx = backward(np.zeros(geo.out_shape(), dtype), cache)
    assert dx.shape == geo.x_shape() and dx.dtype == np.dtype(dtype)


@pytest.mark.parametrize(
    ("forward", "backward"),
    [
        (max_pool_forward_naive, max_pool_backward_fast),
        (max_pool_forward_fast, max_pool_backward_naive),
    ],
    ids=["naive-cache-to-fast", "fast-cache-to-naive"],
)
def test_caches_are_interchangeable(forward, backward, rng):
    geo = GEOMETRIES[1]
    x = distinct_values(geo.x_shape(), rng)
    dout = rng.standard_normal(geo.out_shape())
    _, cache = forward(x, geo.pool_param())
    np.testing.assert_array_equal(backward(dout, cache), first_max_gradient(x, dout, geo))


# --- ties: the first maximum in row-major order ---------------------------------------------


@pytest.mark.parametrize("impl", MAX_POOL)
@pytest.mark.parametrize("geo", GEOMETRIES, ids=_ids(GEOMETRIES))
@pytest.mark.parametrize("fill", [0.0, -np.inf])
def test_constant_input_sends_gradient_to_window_corner(impl, geo, fill, rng):
    forward, backward = MAX_POOL[impl]
    x = np.full(geo.x_shape(), fill)
    dout = rng.standard_normal(geo.out_shape())
    out, cache = forward(x, geo.pool_param())
    np.testing.assert_array_equal(out, np.full(geo.out_shape(), fill))
    sh, sw = geo.strides()
    expected = np.zeros(geo.x_shape())
    for i, j in np.ndindex(*geo.out_size()):
        expected[:, :, i * sh, j * sw] += dout[:, :, i, j]
    np.testing.assert_allclose(backward(dout, cache), expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("impl", MAX_POOL)
@pytest.mark.parametrize("geo", GEOMETRIES, ids=_ids(GEOMETRIES))
def test_relu_input_ties_go_to_first_maximum(impl, geo, rng):
    forward, backward = MAX_POOL[impl]
    x = np.maximum(rng.standard_normal(geo.x_shape()) - 0.5, 0)
    dout = rng.standard_normal(geo.out_shape())
    _, cache = forward(x, geo.pool_param())
    np.testing.assert_allclose(
        backward(dout, cache), first_max_gradient(x, dout, geo), rtol=1e-15, atol=0
    )


@pytest.mark.parametrize("impl", MAX_POOL)
def test_tie_inside_one_window_picks_the_earlier_row(impl):
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 3.0
    forward, backward = MAX_POOL[impl]
    _, cache = forward(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dx = backward(np.ones((1, 1, 1, 1)), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0.0, 1.0], [0.0, 0.0]])


# --- NaN ---------------------------------------------------------------------------------------


def windows_containing(index: int, count: int, stride: int, window: int) -> np.ndarray:
    """Which of ``count`` windows along one axis contain input position ``index``."""
    starts = np.arange(count) * stride
    return (starts <= index) & (index < starts + window)


NAN_GEOMETRY = Geometry(2, 2, 7, 8, 3, 2, (2, 3))


@pytest.mark.parametrize("impl", MAX_POOL)
@pytest.mark.parametrize("position", [(0, 0), (2, 1), (4, 6), (6, 7), (3, 2)])
def test_nan_reaches_exactly_the_windows_holding_it(impl, position, rng):
    forward, backward = MAX_POOL[impl]
    geo = NAN_GEOMETRY
    x = rng.standard_normal(geo.x_shape())
    row, col = position
    x[1, 0, row, col] = np.nan
    out, cache = forward(x, geo.pool_param())
    sh, sw = geo.strides()
    out_h, out_w = geo.out_size()
    holding = np.outer(
        windows_containing(row, out_h, sh, geo.pool_h),
        windows_containing(col, out_w, sw, geo.pool_w),
    )
    expected = np.zeros(out.shape, dtype=bool)
    expected[1, 0] = holding
    np.testing.assert_array_equal(np.isnan(out), expected)
    # a NaN is the maximum of every window holding it: those windows' gradient goes there
    dout = rng.standard_normal(out.shape)
    dx = backward(dout, cache)
    assert np.all(np.isfinite(dx))
    np.testing.assert_allclose(dx[1, 0, row, col], dout[1, 0][holding].sum(), rtol=1e-14)


@pytest.mark.parametrize("impl", MAX_POOL)
def test_first_nan_of_a_window_takes_its_gradient(impl):
    x = np.zeros((1, 1, 2, 3))
    x[0, 0, 0, 2] = x[0, 0, 1, 0] = np.nan
    x[0, 0, 0, 0] = 5.0
    forward, backward = MAX_POOL[impl]
    _, cache = forward(x, {"pool_height": 2, "pool_width": 3, "stride": 1})
    dx = backward(np.ones((1, 1, 1, 1)), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])


# --- layouts, dtypes, inputs left alone --------------------------------------------------------


@pytest.mark.parametrize("impl", MAX_POOL)
def test_any_layout_gives_the_same_result(impl, to_layout, rng):
    forward, backward = MAX_POOL[impl]
    geo = GEOMETRIES[3]
    x = distinct_values(geo.x_shape(), rng)
    dout = rng.standard_normal(geo.out_shape())
    out_ref, cache = forward(x, geo.pool_param())
    dx_ref = backward(dout, cache)
    out, cache = forward(to_layout(x), geo.pool_param())
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(backward(to_layout(dout), cache), dx_ref)


@pytest.mark.parametrize("impl", MAX_POOL)
def test_inputs_and_dout_are_not_modified(impl, rng):
    forward, backward = MAX_POOL[impl]
    geo = GEOMETRIES[1]
    x = distinct_values(geo.x_shape(), rng)
    dout = rng.standard_normal(geo.out_shape())
    x_copy, dout_copy = x.copy(), dout.copy()
    out, cache = forward(x, geo.pool_param())
    out[...] = 7.0
    backward(dout, cache)[...] = 7.0
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dout, dout_copy)


@pytest.mark.parametrize("impl", MAX_POOL)
@pytest.mark.parametrize(
    ("x_dtype", "dout_dtype", "expected"),
    [
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.float64, np.float32, np.float64),
    ],
)
def test_output_dtype(impl, x_dtype, dout_dtype, expected, rng):
    forward, backward = MAX_POOL[impl]
    geo = GEOMETRIES[2]
    out, cache = forward(distinct_values(geo.x_shape(), rng, x_dtype), geo.pool_param())
    assert out.dtype == x_dtype
    dx = backward(rng.standard_normal(geo.out_shape()).astype(dout_dtype), cache)
    assert dx.dtype == expected


@pytest.mark.parametrize("impl", MAX_POOL)
def test_non_native_byte_order_is_accepted(impl, rng):
    forward, backward = MAX_POOL[impl]
    geo = GEOMETRIES[1]
    x = distinct_values(geo.x_shape(), rng)
    dout = rng.standard_normal(geo.out_shape())
    out_ref, cache = forward(x, geo.pool_param())
    dx_ref = backward(dout, cache)
    out, cache = forward(x.astype(">f8"), geo.pool_param())
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(backward(dout.astype(">f8"), cache), dx_ref)


@pytest.mark.parametrize("impl", MAX_POOL)
def test_zero_channels(impl):
    forward, backward = MAX_POOL[impl]
    geo = Geometry(2, 0, 5, 4, 2, 3, (2, 1))
    out, cache = forward(np.zeros(geo.x_shape()), geo.pool_param())
    assert out.shape == geo.out_shape()
    assert backward(np.zeros(geo.out_shape()), cache).shape == geo.x_shape()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("pool_h", "pool_w", "stride"), [(3, 3, 2), (2, 3, (3, 1)), (4, 2, 1), (1, 5, (2, 4))]
)
def test_tall_wide_planes_pooled_in_several_bands_match_naive(pool_h, pool_w, stride, dtype):
    """Planes of 100x300: the kernel pools them in several bands of rows."""
    rng = np.random.default_rng(7)
    x = sprinkle_specials(rng.integers(-3, 4, size=(1, 2, 100, 300)).astype(dtype), rng)
    param = {"pool_height": pool_h, "pool_width": pool_w, "stride": stride}
    out_naive, cache_naive = max_pool_forward_naive(x, param)
    out_fast, cache_fast = max_pool_forward_fast(x, param)
    np.testing.assert_array_equal(out_fast, out_naive)
    dout = rng.standard_normal(out_naive.shape).astype(dtype)
    assert_matches(
        max_pool_backward_fast(dout, cache_fast), max_pool_backward_naive(dout, cache_naive)
    )
