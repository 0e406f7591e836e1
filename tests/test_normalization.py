"""Batch, layer and group normalization: the naive reference checked numerically, the
vectorized layers against it (hypothesis), running statistics, dtypes and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from norm_reference import (
    batchnorm_groups,
    groupnorm_groups,
    layernorm_groups,
    normalize_backward,
    normalize_forward,
    running_update,
)
from tolerances import GRAD_TOL, assert_matches

from convnet import layers
from convnet.gradient_check import numerical_gradient_array, relative_error
from convnet.layers import (
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)

EPS = 1e-5


def run(kind: str, x, gamma, beta, param, groups: int = 1):
    """Forward pass of one of the four normalizations, by name."""
    if kind == "batchnorm":
        return batchnorm_forward(x, gamma, beta, param)
    if kind == "spatial_batchnorm":
        return spatial_batchnorm_forward(x, gamma, beta, param)
    if kind == "layernorm":
        return layernorm_forward(x, gamma, beta, param)
    return spatial_groupnorm_forward(x, gamma, beta, groups, param)


BACKWARD = {
    "batchnorm": batchnorm_backward,
    "spatial_batchnorm": spatial_batchnorm_backward,
    "layernorm": layernorm_backward,
    "groupnorm": spatial_groupnorm_backward,
}


def index_groups(kind: str, shape: tuple[int, ...], groups: int = 1):
    if kind in ("batchnorm", "spatial_batchnorm"):
        return batchnorm_groups(shape)
    if kind == "layernorm":
        return layernorm_groups(shape)
    return groupnorm_groups(shape, groups)


# (kind, x shape, gamma shape, G)
CASES = [
    ("batchnorm", (5, 4), (4,), 1),
    ("spatial_batchnorm", (3, 2, 3, 2), (2,), 1),
    ("spatial_batchnorm", (2, 3, 2, 2), (1, 3, 1, 1), 1),
    ("layernorm", (4, 6), (6,), 1),
    ("groupnorm", (2, 6, 2, 2), (1, 6, 1, 1), 3),
    ("groupnorm", (2, 4, 3, 1), (4,), 1),
    ("groupnorm", (2, 4, 2, 3), (4,), 4),
]
CASE_IDS = [f"{kind}-{shape}-G{groups}" for kind, shape, _, groups in CASES]


def case_arrays(rng, x_shape, gamma_shape):
    x = 2 * rng.standard_normal(x_shape) + 1
    gamma = rng.standard_normal(gamma_shape)
    beta = rng.standard_normal(gamma_shape)
    dout = rng.standard_normal(x_shape)
    return x, gamma, beta, dout


# --- the naive reference, checked numerically --------------------------------------------


@pytest.mark.parametrize(("kind", "x_shape", "gamma_shape", "groups"), CASES, ids=CASE_IDS)
def test_naive_reference_gradients(kind, x_shape, gamma_shape, groups, rng):
    x, gamma, beta, dout = case_arrays(rng, x_shape, gamma_shape)
    index = index_groups(kind, x_shape, groups)
    dx, dgamma, dbeta = normalize_backward(dout, x, gamma, index, EPS)

    def output(_: np.ndarray) -> np.ndarray:
        return normalize_forward(x, gamma, beta, index, EPS)

    assert relative_error(dx, numerical_gradient_array(output, x, dout)) < GRAD_TOL
    assert relative_error(dgamma, numerical_gradient_array(output, gamma, dout).ravel()) < 1e-7
    assert relative_error(dbeta, numerical_gradient_array(output, beta, dout).ravel()) < 1e-7


def test_naive_reference_test_mode_gradients(rng):
    x, gamma, beta, dout = case_arrays(rng, (4, 3), (3,))
    fixed = (rng.standard_normal(3), rng.uniform(0.5, 2.0, 3))
    index = batchnorm_groups(x.shape)
    dx, _, _ = normalize_backward(dout, x, gamma, index, EPS, fixed)
    numeric = numerical_gradient_array(
        lambda _: normalize_forward(x, gamma, beta, index, EPS, fixed), x, dout
    )
    assert relative_error(dx, numeric) < GRAD_TOL


# --- the layers, checked numerically ------------------------------------------------------


# Batch norm has a test mode of its own; layer and group norm are the same in both modes.
MODE_CASES = [
    (*case, mode)
    for case in CASES
    for mode in ("train", "test")
    if mode == "train" or "batch" in case[0]
]


@pytest.mark.parametrize(
    ("kind", "x_shape", "gamma_shape", "groups", "mode"),
    MODE_CASES,
    ids=[f"{kind}-{shape}-G{groups}-{mode}" for kind, shape, _, groups, mode in MODE_CASES],
)
def test_layer_gradients(kind, x_shape, gamma_shape, groups, mode, rng):
    x, gamma, beta, dout = case_arrays(rng, x_shape, gamma_shape)
    channels = x_shape[1]
    running = {"running_mean": rng.standard_normal(channels)}
    running["running_var"] = rng.uniform(0.5, 2.0, channels)

    def output(_: np.ndarray) -> np.ndarray:
        return run(kind, x, gamma, beta, {"mode": mode, **running}, groups)[0]

    _, cache = run(kind, x, gamma, beta, {"mode": mode, **running}, groups)
    dx, dgamma, dbeta = BACKWARD[kind](dout, cache)
    assert dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    assert relative_error(dx, numerical_gradient_array(output, x, dout)) < GRAD_TOL
    assert relative_error(dgamma, numerical_gradient_array(output, gamma, dout)) < GRAD_TOL
    assert relative_error(dbeta, numerical_gradient_array(output, beta, dout)) < GRAD_TOL


def test_batchnorm_backward_alt_is_the_same(rng):
    x, gamma, beta, dout = case_arrays(rng, (6, 5), (5,))
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    for grad, alt in zip(
        batchnorm_backward(dout, cache), batchnorm_backward_alt(dout, cache), strict=True
    ):
        np.testing.assert_array_equal(grad, alt)


# --- vectorized against naive, under hypothesis ------------------------------------------


@st.composite
def norm_cases(draw):
    kind = draw(st.sampled_from(list(BACKWARD)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    num = draw(st.integers(1, 4))
    groups = 1
    if kind in ("batchnorm", "layernorm"):
        num = draw(st.integers(4 if kind == "batchnorm" else 1, 6))
        shape = (num, draw(st.integers(4 if kind == "layernorm" else 1, 6)))
    else:
        channels = draw(st.integers(1, 4))
        height, width = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        if kind == "groupnorm":
            groups = draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
            height = max(height, -(-4 * groups // (channels * width)))  # >= 4 values a group
        else:
            num = max(num, -(-4 // (height * width)))  # >= 4 values a channel
        shape = (num, channels, height, width)
    channels = shape[1]
    gamma_shape = (channels,)
    if kind in ("spatial_batchnorm", "groupnorm") and draw(st.booleans()):
        gamma_shape = (1, channels, 1, 1)
    mode = draw(st.sampled_from(["train", "test"])) if "batchnorm" in kind else "train"
    return kind, shape, gamma_shape, groups, dtype, mode, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=120)
@given(case=norm_cases())
def test_layers_match_the_naive_reference(case):
    kind, shape, gamma_shape, groups, dtype, mode, seed = case
    rng = np.random.default_rng(seed)
    x, gamma, beta, dout = (a.astype(dtype) for a in case_arrays(rng, shape, gamma_shape))
    channels = shape[1]
    running = (rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels))
    param = {"mode": mode, "running_mean": running[0], "running_var": running[1]}
    out, cache = run(kind, x, gamma, beta, param, groups)
    dx, dgamma, dbeta = BACKWARD[kind](dout, cache)

    index = index_groups(kind, shape, groups)
    fixed = running if mode == "test" else None
    expected_out = normalize_forward(x, gamma, beta, index, EPS, fixed)
    expected = normalize_backward(dout, x, gamma, index, EPS, fixed)
    assert_matches(out, expected_out.astype(dtype))
    assert_matches(dx, expected[0].astype(dtype))
    assert_matches(dgamma, expected[1].reshape(gamma_shape).astype(dtype))
    assert_matches(dbeta, expected[2].reshape(gamma_shape).astype(dtype))
    if "batchnorm" in kind and mode == "train":
        mean, var = running_update(x, index, running, 0.9)
        np.testing.assert_allclose(param["running_mean"], mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(param["running_var"], var, rtol=1e-6, atol=1e-6)


# --- what the normalizations do -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["batchnorm", "spatial_batchnorm"])
def test_batchnorm_standardizes_per_feature_then_scales_and_shifts(kind, rng):
    shape = (50, 3) if kind == "batchnorm" else (20, 3, 4, 5)
    x = 5 * rng.standard_normal(shape) + 11
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([0.0, -1.0, 4.0])
    out, _ = run(kind, x, gamma, beta, {"mode": "train"})
    axes = (0,) if kind == "batchnorm" else (0, 2, 3)
    np.testing.assert_allclose(out.mean(axis=axes), beta, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=axes), gamma, rtol=1e-5)


def test_layernorm_and_groupnorm_standardize_per_sample(rng):
    x = 3 * rng.standard_normal((4, 30)) - 2
    out, _ = layernorm_forward(x, np.ones(30), np.zeros(30), {})
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=1), 1, rtol=1e-5)
    images = 3 * rng.standard_normal((2, 6, 4, 4)) + 1
    out, _ = spatial_groupnorm_forward(images, np.ones(6), np.zeros(6), 2, {})
    grouped = out.reshape(2, 2, 3 * 16)
    np.testing.assert_allclose(grouped.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(grouped.std(axis=2), 1, rtol=1e-5)


def test_running_statistics_created_updated_and_used(rng):
    x = 3 * rng.standard_normal((8, 4)) + 2
    gamma, beta = np.ones(4), np.zeros(4)
    bn_param = {"mode": "train", "momentum": 0.7}
    batchnorm_forward(x, gamma, beta, bn_param)
    # From zeros and ones: 0.7 * start + 0.3 * batch, with the unbiased batch variance.
    np.testing.assert_allclose(bn_param["running_mean"], 0.3 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        bn_param["running_var"], 0.7 + 0.3 * x.var(axis=0, ddof=1), rtol=1e-12
    )
    before = {key: bn_param[key] for key in ("running_mean", "running_var")}
    frozen = {key: value.copy() for key, value in before.items()}
    batchnorm_forward(x + 1, gamma, beta, bn_param)
    for key, array in before.items():
        assert bn_param[key] is not array  # new arrays; the old ones are untouched
        np.testing.assert_array_equal(array, frozen[key])
    np.testing.assert_allclose(
        bn_param["running_mean"], 0.7 * before["running_mean"] + 0.3 * (x.mean(axis=0) + 1)
    )

    bn_param["mode"] = "test"
    stats = {key: bn_param[key] for key in ("running_mean", "running_var")}
    out, _ = batchnorm_forward(x, gamma, beta, bn_param)
    expected = (x - stats["running_mean"]) / np.sqrt(stats["running_var"] + EPS)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    for key, array in stats.items():
        assert bn_param[key] is array  # test mode leaves the statistics alone


def test_test_mode_without_statistics_uses_zero_mean_unit_variance(rng):
    x = rng.standard_normal((3, 2, 2, 2))
    bn_param = {"mode": "test"}
    out, _ = spatial_batchnorm_forward(x, np.ones(2), np.zeros(2), bn_param)
    np.testing.assert_allclose(out, x / np.sqrt(1 + EPS), rtol=1e-14)
    np.testing.assert_array_equal(bn_param["running_mean"], np.zeros(2))
    np.testing.assert_array_equal(bn_param["running_var"], np.ones(2))


def test_warmed_up_test_mode_matches_the_population():
    # CS231n's check: after many training batches, test mode standardizes new data.
    rng = np.random.default_rng(0)
    gamma, beta = np.array([1.0, 2.0]), np.array([0.0, 3.0])
    bn_param = {"mode": "train"}
    for _ in range(100):
        batchnorm_forward(rng.normal(5.0, 2.0, (100, 2)), gamma, beta, bn_param)
    bn_param["mode"] = "test"
    out, _ = batchnorm_forward(rng.normal(5.0, 2.0, (10000, 2)), gamma, beta, bn_param)
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=0.1)
    np.testing.assert_allclose(out.std(axis=0), gamma, rtol=0.05)


def test_layernorm_ignores_mode_and_groupnorm_g1_is_layernorm_over_chw(rng):
    x = rng.standard_normal((3, 2, 3, 2))
    gamma, beta = rng.standard_normal(12), rng.standard_normal(12)
    flat, _ = layernorm_forward(x.reshape(3, 12), gamma, beta, {"mode": "test", "eps": 1e-3})
    again, _ = layernorm_forward(x.reshape(3, 12), gamma, beta, {"mode": "train", "eps": 1e-3})
    np.testing.assert_array_equal(flat, again)
    ones = np.ones(2)
    grouped, _ = spatial_groupnorm_forward(x, ones, 0 * ones, 1, {"eps": 1e-3})
    plain, _ = layernorm_forward(x.reshape(3, 12), np.ones(12), np.zeros(12), {"eps": 1e-3})
    np.testing.assert_allclose(grouped.reshape(3, 12), plain, rtol=1e-12, atol=1e-14)


# --- dtypes, layouts, never in place ------------------------------------------------------


@pytest.mark.parametrize(("kind", "x_shape", "gamma_shape", "groups"), CASES, ids=CASE_IDS)
def test_float32_stays_float32(kind, x_shape, gamma_shape, groups, rng):
    x, gamma, beta, dout = (a.astype(np.float32) for a in case_arrays(rng, x_shape, gamma_shape))
    for mode in ("train", "test"):
        param = {"mode": mode}
        out, cache = run(kind, x, gamma, beta, param, groups)
        assert out.dtype == np.float32
        assert all(g.dtype == np.float32 for g in BACKWARD[kind](dout, cache))
        if "batchnorm" in kind:
            assert param["running_mean"].dtype == param["running_var"].dtype == np.float32


def test_mixed_dtypes_promote_to_float64(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    out, cache = batchnorm_forward(x, np.ones(3), np.zeros(3, np.float32), {"mode": "train"})
    assert out.dtype == np.float64
    assert all(g.dtype == np.float64 for g in batchnorm_backward(np.ones((4, 3)), cache))
    stats64 = {"mode": "test", "running_mean": np.zeros(3), "running_var": np.ones(3)}
    ones32 = np.ones(3, np.float32)
    out, _ = batchnorm_forward(x, ones32, 0 * ones32, stats64)
    assert out.dtype == np.float32  # statistics do not change the output dtype


@pytest.mark.parametrize(("kind", "x_shape", "gamma_shape", "groups"), CASES, ids=CASE_IDS)
def test_any_layout_gives_the_same_result(kind, x_shape, gamma_shape, groups, to_layout, rng):
    x, gamma, beta, dout = case_arrays(rng, x_shape, gamma_shape)
    out, cache = run(kind, x, gamma, beta, {"mode": "train"}, groups)
    grads = BACKWARD[kind](dout, cache)
    out_l, cache_l = run(
        kind, to_layout(x), to_layout(gamma), to_layout(beta), {"mode": "train"}, groups
    )
    np.testing.assert_allclose(out_l, out, rtol=1e-12, atol=1e-12)
    for grad_l, grad in zip(BACKWARD[kind](to_layout(dout), cache_l), grads, strict=True):
        np.testing.assert_allclose(grad_l, grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("kind", "x_shape", "gamma_shape", "groups"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("mode", ["train", "test"])
def test_inputs_are_never_modified(kind, x_shape, gamma_shape, groups, mode, rng):
    x, gamma, beta, dout = case_arrays(rng, x_shape, gamma_shape)
    channels = x_shape[1]
    running_mean, running_var = rng.standard_normal(channels), rng.uniform(1, 2, channels)
    arrays = (x, gamma, beta, dout, running_mean, running_var)
    originals = [a.copy() for a in arrays]
    param = {"mode": mode, "running_mean": running_mean, "running_var": running_var}
    out, cache = run(kind, x, gamma, beta, param, groups)
    out[...] = 7.0
    for grad in BACKWARD[kind](dout, cache):
        grad[...] = 7.0
    for grad in BACKWARD[kind](dout, cache):  # the cache survived the writes above
        assert np.all(grad != 7.0)
    for array, original in zip(arrays, originals, strict=True):
        np.testing.assert_array_equal(array, original)


# --- bad input ----------------------------------------------------------------------------

X2, X4 = np.zeros((4, 3)), np.zeros((2, 4, 2, 2))
ONES3, ONES4 = np.ones(3), np.ones(4)
BAD = {
    "bn-no-mode": (lambda: batchnorm_forward(X2, ONES3, ONES3, {}), ValueError, "'mode'"),
    "bn-bad-mode": (
        lambda: batchnorm_forward(X2, ONES3, ONES3, {"mode": "eval"}),
        ValueError,
        "'train' or 'test'",
    ),
    "bn-not-dict": (lambda: batchnorm_forward(X2, ONES3, ONES3, "train"), TypeError, "dict"),
    "bn-eps-0": (
        lambda: batchnorm_forward(X2, ONES3, ONES3, {"mode": "train", "eps": 0}),
        ValueError,
        "eps",
    ),
    "bn-momentum": (
        lambda: batchnorm_forward(X2, ONES3, ONES3, {"mode": "train", "momentum": 1.5}),
        ValueError,
        "momentum",
    ),
    "bn-momentum-str": (
        lambda: batchnorm_forward(X2, ONES3, ONES3, {"mode": "train", "momentum": "0.9"}),
        TypeError,
        "momentum",
    ),
    "bn-gamma-shape": (
        lambda: batchnorm_forward(X2, ONES4, ONES3, {"mode": "train"}),
        ValueError,
        r"gamma must have shape \(3,\)",
    ),
    "bn-beta-shape": (
        lambda: batchnorm_forward(X2, ONES3, np.ones((1, 3)), {"mode": "train"}),
        ValueError,
        "beta must have shape",
    ),
    "bn-x-4d": (
        lambda: batchnorm_forward(X4, ONES4, ONES4, {"mode": "train"}),
        ValueError,
        "x must be 2-dimensional",
    ),
    "bn-x-int": (
        lambda: batchnorm_forward(X2.astype(int), ONES3, ONES3, {"mode": "train"}),
        TypeError,
        "float32 or float64",
    ),
    "bn-one-sample": (
        lambda: batchnorm_forward(X2[:1], ONES3, ONES3, {"mode": "train"}),
        ValueError,
        "more than one value",
    ),
    "bn-running-shape": (
        lambda: batchnorm_forward(X2, ONES3, ONES3, {"mode": "train", "running_mean": ONES4}),
        ValueError,
        r"running_mean'\] must have shape \(3,\)",
    ),
    "sbn-gamma-shape": (
        lambda: spatial_batchnorm_forward(X4, ONES3, ONES4, {"mode": "train"}),
        ValueError,
        r"gamma must have shape \(4,\) or \(1, 4, 1, 1\)",
    ),
    "sbn-no-mode": (
        lambda: spatial_batchnorm_forward(X4, ONES4, ONES4, {"eps": 1e-5}),
        ValueError,
        "'mode'",
    ),
    "sbn-x-2d": (
        lambda: spatial_batchnorm_forward(X2, ONES3, ONES3, {"mode": "train"}),
        ValueError,
        "x must be 4-dimensional",
    ),
    "ln-gamma-shape": (
        lambda: layernorm_forward(X2, ONES4, ONES3, {}),
        ValueError,
        "gamma must have shape",
    ),
    "ln-eps": (lambda: layernorm_forward(X2, ONES3, ONES3, {"eps": -1}), ValueError, "eps"),
    "ln-no-features": (
        lambda: layernorm_forward(np.zeros((2, 0)), np.ones(0), np.ones(0), {}),
        ValueError,
        "at least one feature",
    ),
    "gn-g-divides": (
        lambda: spatial_groupnorm_forward(X4, ONES4, ONES4, 3, {}),
        ValueError,
        "G = 3 groups must divide the C = 4",
    ),
    "gn-g-zero": (lambda: spatial_groupnorm_forward(X4, ONES4, ONES4, 0, {}), ValueError, "G"),
    "gn-g-float": (lambda: spatial_groupnorm_forward(X4, ONES4, ONES4, 2.0, {}), TypeError, "G"),
    "gn-beta-shape": (
        lambda: spatial_groupnorm_forward(X4, ONES4, ONES3, 2, {}),
        ValueError,
        "beta must have shape",
    ),
    "gn-param": (lambda: spatial_groupnorm_forward(X4, ONES4, ONES4, 2, None), TypeError, "dict"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_refused(name):
    call, error, message = BAD[name]
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("backward", list(BACKWARD.values()))
def test_backward_refuses_bad_dout_and_foreign_caches(backward):
    _, cache = batchnorm_forward(X2 + np.arange(4)[:, None], ONES3, ONES3, {"mode": "train"})
    with pytest.raises(ValueError, match=r"dout has shape \(4, 4\)"):
        backward(np.zeros((4, 4)), cache)
    with pytest.raises(TypeError, match="NormCache"):
        backward(np.zeros((4, 3)), (X2, ONES3))


def test_layers_module_re_exports_the_normalizations():
    from convnet import normalization

    for backward in BACKWARD.values():
        assert getattr(layers, backward.__name__) is getattr(normalization, backward.__name__)
    assert layers.batchnorm_forward is normalization.batchnorm_forward
