"""Winograd convolution: the transforms, both tile sizes against the naive layers, the
algorithm choice, NaN and overflow, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
from conv_helpers import check_conv_matches_naive, use_workspace_and_threads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tolerances import assert_matches

from convnet import _backend, conv_plan, winograd
from convnet.fast_layers import (
    conv_algorithm_choice,
    conv_backward_fast,
    conv_forward_fast,
)
from convnet.layers import conv_backward_naive, conv_forward_naive

needs_winograd = pytest.mark.skipif(
    _backend.winograd_kernel is None, reason="the compiled Winograd kernel is not in use"
)
TILES = winograd.TILE_SIZES


def _correlate(d: np.ndarray, g: np.ndarray, size: int) -> np.ndarray:
    return np.array(
        [[np.sum(d[i : i + 3, j : j + 3] * g) for j in range(size)] for i in range(size)]
    )


@pytest.mark.parametrize("m", TILES)
def test_matrices_compute_the_correlation(m, rng):
    b_t, g, a_t = winograd.transform_matrices(m)
    d = rng.standard_normal((m + 2, m + 2))
    w = rng.standard_normal((3, 3))
    y = a_t @ ((g @ w @ g.T) * (b_t @ d @ b_t.T)) @ a_t.T
    np.testing.assert_allclose(y, _correlate(d, w, m), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("m", TILES)
def test_filter_transform_and_gradient_use_g(m, rng):
    _, g, _ = winograd.transform_matrices(m)
    w = rng.standard_normal((3, 2, 3, 3))
    u = winograd.filter_transform(w, m, np.dtype(np.float64))
    alpha = m + 2
    assert u.shape == (alpha * alpha, 2, 3)
    for f in range(3):
        for c in range(2):
            expected = g @ w[f, c] @ g.T
            np.testing.assert_allclose(u[:, c, f].reshape(alpha, alpha), expected, atol=1e-14)
    flipped = winograd.flipped_filter_transform(w, m, np.dtype(np.float64))
    assert flipped.shape == (alpha * alpha, 3, 2)
    for f in range(3):
        for c in range(2):
            expected = g @ w[f, c, ::-1, ::-1] @ g.T
            np.testing.assert_allclose(flipped[:, f, c].reshape(alpha, alpha), expected, atol=1e-14)
    du = rng.standard_normal((alpha * alpha, 3, 2))
    dw = winograd.filter_gradient(du, m)
    for f in range(3):
        for c in range(2):
            expected = g.T @ du[:, f, c].reshape(alpha, alpha) @ g
            np.testing.assert_allclose(dw[f, c], expected, atol=1e-13)


@needs_winograd
@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_transforms_match_the_matrices(m, dtype, rng):
    kernel = _backend.winograd_kernel
    b_t, _, a_t = winograd.transform_matrices(m)
    alpha, channels = m + 2, 5
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    tile = rng.standard_normal((1, channels, alpha, alpha)).astype(dtype)
    scratch = np.empty(((m + 2) * (m + 2) + alpha * alpha) * channels, dtype=dtype)
    v = np.empty((alpha * alpha, 1, channels), dtype=dtype)
    # One tile, no padding: it covers the whole (alpha x alpha) image.
    kernel.transform_tiles(tile, v, scratch, m, 1, 1, 0, 0, False)
    for c in range(channels):
        expected = b_t @ tile[0, c].astype(np.float64) @ b_t.T
        np.testing.assert_allclose(v[:, 0, c].reshape(alpha, alpha), expected, **tol)
    grad = tile[:, :, :m, :m].copy()
    kernel.transform_tiles(grad, v, scratch, m, 1, 1, 0, 0, True)
    for c in range(channels):
        expected = a_t.T @ grad[0, c].astype(np.float64) @ a_t
        np.testing.assert_allclose(v[:, 0, c].reshape(alpha, alpha), expected, **tol)
    out = np.empty((1, channels, m, m), dtype=dtype)
    bias = rng.standard_normal(channels).astype(dtype)
    assert kernel.untransform_tiles(v, out, bias, scratch, m, 1, 1)
    for c in range(channels):
        transformed = v[:, 0, c].reshape(alpha, alpha).astype(np.float64)
        expected = a_t @ transformed @ a_t.T + bias[c]
        np.testing.assert_allclose(out[0, c], expected, **tol)


@needs_winograd
def test_compiled_transforms_refuse_wrong_sizes():
    kernel = _backend.winograd_kernel
    x = np.zeros((2, 3, 6, 6), np.float32)
    v = np.zeros((36, 2, 3), np.float32)
    scratch = np.zeros(((6 * 6) + 36) * 3, np.float32)
    kernel.transform_tiles(x, v, scratch, 4, 1, 1, 0, 0, False)
    with pytest.raises(ValueError, match="tiles must be 2x2 or 4x4"):
        kernel.transform_tiles(x, v, scratch, 3, 1, 1, 0, 0, False)
    with pytest.raises(ValueError, match="v must have shape"):
        kernel.transform_tiles(x, np.zeros((36, 1, 3), np.float32), scratch, 4, 1, 1, 0, 0, False)
    with pytest.raises(ValueError, match="v must have shape"):
        kernel.transform_tiles(x, v, scratch, 4, 2, 1, 0, 0, False)
    with pytest.raises(ValueError, match="scratch needs"):
        kernel.transform_tiles(x, v, scratch[:-1], 4, 1, 1, 0, 0, False)
    out = np.zeros((2, 3, 4, 4), np.float32)
    bias = np.zeros(3, np.float32)
    assert kernel.untransform_tiles(v, out, bias, scratch, 4, 1, 1)
    with pytest.raises(ValueError, match="do not cover"):
        kernel.untransform_tiles(v, np.zeros((2, 3, 5, 4), np.float32), bias, scratch, 4, 1, 1)
    with pytest.raises(ValueError, match="bias must have"):
        kernel.untransform_tiles(v, out, bias[:2], scratch, 4, 1, 1)
    with pytest.raises(ValueError, match="scratch needs"):
        kernel.untransform_tiles(v, out, bias, scratch[:10], 4, 1, 1)


@needs_winograd
def test_padding_rows_between_the_planes_are_left_alone():
    """The workspace rounds each plane's rows up to an odd count (cache sets): the
    transforms use the first rows and never touch the others."""
    kernel = _backend.winograd_kernel
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    scratch = np.zeros(((6 * 6) + 36) * 3, np.float32)
    v = np.zeros((36, 2, 3), np.float32)
    kernel.transform_tiles(x, v, scratch, 4, 1, 1, 0, 0, False)
    padded = np.full((36, 3, 3), 7.0, np.float32)
    kernel.transform_tiles(x, padded, scratch, 4, 1, 1, 0, 0, False)
    np.testing.assert_array_equal(padded[:, :2], v)
    assert (padded[:, 2] == 7.0).all()
    out, padded_out = np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 4), np.float32)
    bias = np.ones(3, np.float32)
    kernel.untransform_tiles(v, out, bias, scratch, 4, 1, 1)
    kernel.untransform_tiles(padded, padded_out, bias, scratch, 4, 1, 1)
    np.testing.assert_array_equal(padded_out, out)


# --- fast Winograd against the naive reference ---------------------------------------------


@pytest.fixture(params=TILES)
def tile(request, monkeypatch) -> int:
    """Run every Winograd convolution with this output tile size."""
    monkeypatch.setattr(conv_plan, "winograd_tile", lambda geo: request.param)
    return request.param


def check_winograd_matches_naive(x, w, b, dout, pad) -> None:
    param = {"stride": 1, "pad": pad, "algorithm": "winograd"}
    assert check_conv_matches_naive(x, w, b, dout, param).algorithm == "winograd"


@needs_winograd
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    num=st.integers(0, 3),
    channels=st.integers(1, 5),
    filters=st.integers(1, 5),
    pad=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    size=st.tuples(st.integers(1, 11), st.integers(1, 11)),
    dtype=st.sampled_from([np.float32, np.float64]),
    workspace=st.sampled_from([None, 1, 5000]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_winograd_matches_naive(
    tile,
    num,
    channels,
    filters,
    pad,
    size,
    dtype,
    workspace,
    threads,
    seed,
    restore_workspace_limit,
    restore_num_threads,
):
    height, width = max(size[0], 3 - 2 * pad[0]), max(size[1], 3 - 2 * pad[1])
    use_workspace_and_threads(workspace, threads)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num, channels, height, width)).astype(dtype)
    w = rng.standard_normal((filters, channels, 3, 3)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype)
    out_shape = (num, filters, height + 2 * pad[0] - 2, width + 2 * pad[1] - 2)
    dout = rng.standard_normal(out_shape).astype(dtype)
    check_winograd_matches_naive(x, w, b, dout, pad)


@needs_winograd
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_error_on_wide_layers(tile, dtype, rng):
    """Many channels: the float32 error is largest here (measured ~1e-5 for 4x4 tiles)."""
    x = rng.standard_normal((4, 128, 9, 10)).astype(dtype)
    w = rng.standard_normal((64, 128, 3, 3)).astype(dtype)
    b = rng.standard_normal(64).astype(dtype)
    dout = rng.standard_normal((4, 64, 9, 10)).astype(dtype)
    check_winograd_matches_naive(x, w, b, dout, 1)


@needs_winograd
def test_mixed_dtypes_run_in_float64(tile, rng):
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3))
    b = rng.standard_normal(2).astype(np.float32)
    out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1, "algorithm": "winograd"})
    assert out.dtype == np.float64
    assert_matches(out, conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})[0])
    dx, dw, db = conv_backward_fast(np.ones_like(out, dtype=np.float32), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float64


# --- values that are not finite ------------------------------------------------------------


@needs_winograd
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_input_stays_where_it_belongs(tile, bad, dtype, rng):
    """Winograd would spread a NaN over whole tiles: such calls are redone by im2col."""
    x = rng.standard_normal((2, 3, 9, 9)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = np.zeros(4, dtype)
    x[1, 2, 4, 4] = bad
    dout = rng.standard_normal((2, 4, 9, 9)).astype(dtype)
    dout[0, 1, 0, 8] = bad
    param = {"stride": 1, "pad": 1}
    out_ref, cache_ref = conv_forward_naive(x, w, b, param)
    out, cache = conv_forward_fast(x, w, b, {**param, "algorithm": "winograd"})
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(out_ref))
    assert_matches(np.nan_to_num(out), np.nan_to_num(out_ref))
    grads_ref = conv_backward_naive(dout, cache_ref)
    for grad, ref in zip(conv_backward_fast(dout, cache), grads_ref, strict=True):
        np.testing.assert_array_equal(np.isfinite(grad), np.isfinite(ref))


@needs_winograd
def test_overflow_in_the_transforms_is_redone_exactly(tile):
    """Values near float32's limit overflow in Winograd's sums but not in a direct sum."""
    x = np.zeros((1, 1, 6, 6), np.float32)
    x[0, 0, 2:4, 2:4] = 1e38
    w = np.zeros((1, 1, 3, 3), np.float32)
    w[0, 0, 1, 1] = 1.0
    out, _ = conv_forward_fast(
        x, w, np.zeros(1, np.float32), {"stride": 1, "pad": 1, "algorithm": "winograd"}
    )
    np.testing.assert_array_equal(out[0, 0], x[0, 0])


# --- the algorithm choice ------------------------------------------------------------------


def test_algorithm_is_validated():
    x = np.zeros((1, 2, 5, 5))
    w = np.zeros((3, 2, 3, 3))
    b = np.zeros(3)
    for forward in (conv_forward_naive, conv_forward_fast):
        with pytest.raises(ValueError, match="must be one of 'auto', 'im2col', 'winograd'"):
            forward(x, w, b, {"stride": 1, "pad": 1, "algorithm": "fft"})
        with pytest.raises(TypeError, match="must be a str"):
            forward(x, w, b, {"stride": 1, "pad": 1, "algorithm": 1})


@needs_winograd
@pytest.mark.parametrize(
    ("w_shape", "param"),
    [
        ((3, 2, 5, 5), {"stride": 1}),
        ((3, 2, 3, 3), {"stride": 2}),
        ((3, 2, 3, 1), {"stride": 1}),
        ((3, 2, 3, 3), {"stride": 1, "dilation": 2}),
        ((4, 1, 3, 3), {"stride": 1, "groups": 2}),
    ],
)
def test_winograd_refuses_what_it_cannot_do(w_shape, param):
    x = np.zeros((1, 2, 7, 7))
    with pytest.raises(ValueError, match="needs 3x3 filters and stride 1"):
        conv_forward_fast(
            x, np.zeros(w_shape), np.zeros(w_shape[0]), {**param, "pad": 1, "algorithm": "winograd"}
        )


@pytest.mark.parametrize("param", [{"dilation": 2}, {"groups": 2}, {"groups": 4}])
def test_auto_on_dilated_and_grouped_convolutions_matches_naive(param):
    rng = np.random.default_rng(0)
    groups = param.get("groups", 1)
    x = rng.standard_normal((8, 64, 12, 12)).astype(np.float32)  # where auto picks Winograd
    w = rng.standard_normal((64, 64 // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    conv_param = {"stride": 1, "pad": 2 if "dilation" in param else 1, **param}
    out, cache = conv_forward_fast(x, w, b, conv_param)
    expected, expected_cache = conv_forward_naive(x, w, b, conv_param)
    assert_matches(out, expected)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    for grad, reference in zip(
        conv_backward_fast(dout, cache), conv_backward_naive(dout, expected_cache), strict=True
    ):
        assert_matches(grad, reference)


@needs_winograd
def test_auto_choice_follows_the_rule():
    wide = 64
    param = {"stride": 1, "pad": 1}
    assert conv_algorithm_choice((8, wide, 16, 16), (wide, wide, 3, 3), param) == ("winograd", 4)
    assert conv_algorithm_choice((64, wide, 2, 2), (wide, wide, 3, 3), param) == ("winograd", 2)
    assert conv_algorithm_choice((8, 3, 16, 16), (wide, 3, 3, 3), param)[0] == "im2col"
    assert conv_algorithm_choice((1, wide, 4, 4), (wide, wide, 3, 3), param)[0] == "im2col"
    assert conv_algorithm_choice((4, 8, 16, 16), (8, 8, 3, 3), param)[0] == "im2col"
    assert conv_algorithm_choice((16, 8, 16, 16), (8, 8, 3, 3), param)[0] == "winograd"
    # Wide layers need 2 * min(C, F) output pixels: 256 channels, 512 pixels.
    assert conv_algorithm_choice((1, 256, 16, 16), (256, 256, 3, 3), param)[0] == "im2col"
    assert conv_algorithm_choice((2, 256, 16, 16), (256, 256, 3, 3), param)[0] == "winograd"
    assert conv_algorithm_choice((8, wide, 16, 16), (wide, wide, 5, 5), {**param, "pad": 2}) == (
        "im2col",
        0,
    )
    assert conv_algorithm_choice(
        (8, wide, 16, 16), (wide, wide, 3, 3), {**param, "algorithm": "im2col"}
    ) == ("im2col", 0)
    assert (
        conv_algorithm_choice((8, 3, 6, 6), (4, 3, 3, 3), {**param, "algorithm": "winograd"})[0]
        == "winograd"
    )
    dilated = {"stride": 1, "pad": 2, "dilation": 2}
    assert conv_algorithm_choice((32, wide, 16, 16), (wide, wide, 3, 3), dilated) == (
        "winograd-phases",
        4,
    )
    assert conv_algorithm_choice(
        (32, wide, 16, 16), (wide, wide, 3, 3), {**dilated, "algorithm": "im2col"}
    ) == ("im2col", 0)


@needs_winograd
@pytest.mark.parametrize("algorithm", ["im2col", "winograd"])
def test_backward_uses_the_forward_request(algorithm, rng, monkeypatch):
    calls = []
    real_backward = winograd.backward

    def spy(*args, **kwargs):
        calls.append(1)
        return real_backward(*args, **kwargs)

    monkeypatch.setattr(winograd, "backward", spy)
    x = rng.standard_normal((2, 32, 6, 6))
    w = rng.standard_normal((32, 32, 3, 3))
    _, cache = conv_forward_fast(
        x, w, np.zeros(32), {"stride": 1, "pad": 1, "algorithm": algorithm}
    )
    conv_backward_fast(np.ones((2, 32, 6, 6)), cache)
    assert bool(calls) == (algorithm == "winograd")
