"""The compiled spatial batch norm against the numpy reference (hypothesis), its gradients
numerically, threads, running statistics, NaN, bad input and the kernel's own checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from norm_reference import spatial_batchnorm_scales
from tolerances import GRAD_TOL, TOLERANCE, assert_matches

from convnet import _backend, _parallel
from convnet.fast_normalization import (
    BatchNormCache,
    spatial_batchnorm_backward_fast,
    spatial_batchnorm_forward_fast,
)
from convnet.gradient_check import numerical_gradient_array, relative_error
from convnet.normalization import spatial_batchnorm_backward, spatial_batchnorm_forward

needs_kernel = pytest.mark.skipif(
    _backend.batchnorm_kernel is None, reason="needs the compiled kernel convnet._batchnorm"
)


def both(x, gamma, beta, dout, param):
    """(forward, backward, bn_param) of the numpy reference and of the fast layer."""
    results = []
    for forward, backward in (
        (spatial_batchnorm_forward, spatial_batchnorm_backward),
        (spatial_batchnorm_forward_fast, spatial_batchnorm_backward_fast),
    ):
        bn_param = dict(param)
        out, cache = forward(x, gamma, beta, bn_param)
        results.append((out, backward(dout, cache), bn_param))
    return results


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(
        st.integers(1, 5), st.integers(1, 6), st.integers(1, 9), st.integers(1, 9)
    ).filter(lambda s: s[0] * s[2] * s[3] > 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    mode=st.sampled_from(["train", "test"]),
    param_4d=st.booleans(),
    offset=st.sampled_from([0.0, 3.0, -50.0]),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_fast_matches_the_reference(shape, dtype, mode, param_4d, offset, threads, seed):
    rng = np.random.default_rng(seed)
    channels = shape[1]
    param_shape = (1, channels, 1, 1) if param_4d else (channels,)
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    gamma = rng.standard_normal(param_shape).astype(dtype)
    beta = rng.standard_normal(param_shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    param = {
        "mode": mode,
        "momentum": 0.8,
        "running_mean": rng.standard_normal(channels).astype(dtype),
        "running_var": (rng.random(channels) + 0.5).astype(dtype),
    }
    previous = _parallel.set_num_threads(threads)
    small = _parallel.MEMORY_BOUND_MIN_ELEMENTS
    _parallel.MEMORY_BOUND_MIN_ELEMENTS = 0
    try:
        fast_param = dict(param)
        fast_out, cache = spatial_batchnorm_forward_fast(x, gamma, beta, fast_param)
        fast_grads = spatial_batchnorm_backward_fast(dout, cache)
    finally:
        _parallel.MEMORY_BOUND_MIN_ELEMENTS = small
        _parallel.set_num_threads(previous)
    # The reference in float64 from the same values: float32 results are held to the
    # float32 standard against the exact answer, relative to the size of the terms they
    # sum (dx of a channel with few values is a difference of terms ~ dout * gamma / std).
    reference_param = {
        key: value.astype(np.float64) if isinstance(value, np.ndarray) else value
        for key, value in param.items()
    }
    x64, gamma64, beta64, dout64 = (a.astype(np.float64) for a in (x, gamma, beta, dout))
    out, reference_cache = spatial_batchnorm_forward(x64, gamma64, beta64, reference_param)
    dx, dgamma, dbeta = spatial_batchnorm_backward(dout64, reference_cache)
    scales = spatial_batchnorm_scales(out, dout64, gamma64, reference_cache)
    tolerance = TOLERANCE[np.dtype(dtype)]
    for actual, expected, scale in zip(
        (fast_out, *fast_grads), (out, dx, dgamma, dbeta), scales, strict=True
    ):
        assert actual.dtype == dtype
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * scale)
    bn_param = dict(param)
    spatial_batchnorm_forward(x, gamma, beta, bn_param)
    for key in ("running_mean", "running_var"):
        assert fast_param[key].dtype == bn_param[key].dtype
        assert_matches(fast_param[key], bn_param[key])


@needs_kernel
@pytest.mark.parametrize("mode", ["train", "test"])
def test_gradients_match_numerical_ones(mode: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)) + 1.5
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    dout = rng.standard_normal(x.shape)
    param = {"mode": mode, "running_mean": rng.standard_normal(3), "running_var": rng.random(3) + 1}

    def forward(x_, gamma_, beta_):
        return spatial_batchnorm_forward_fast(x_, gamma_, beta_, dict(param))[0]

    _, cache = spatial_batchnorm_forward_fast(x, gamma, beta, dict(param))
    dx, dgamma, dbeta = spatial_batchnorm_backward_fast(dout, cache)
    for analytic, numeric in (
        (dx, numerical_gradient_array(lambda v: forward(v, gamma, beta), x, dout)),
        (dgamma, numerical_gradient_array(lambda v: forward(x, v, beta), gamma, dout)),
        (dbeta, numerical_gradient_array(lambda v: forward(x, gamma, v), beta, dout)),
    ):
        assert relative_error(analytic, numeric) < GRAD_TOL


@needs_kernel
def test_a_float64_upstream_gradient_promotes_like_the_reference() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    dout = rng.standard_normal(x.shape)
    (_, grads, _), (_, fast_grads, _) = both(x, gamma, beta, dout, {"mode": "train"})
    for fast_grad, grad in zip(fast_grads, grads, strict=True):
        assert fast_grad.dtype == grad.dtype == np.float64
        np.testing.assert_allclose(fast_grad, grad, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_nan_stays_in_its_channel() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5, 5))
    x[1, 2, 3, 4] = np.nan
    out, cache = spatial_batchnorm_forward_fast(x, np.ones(4), np.zeros(4), {"mode": "train"})
    assert np.isnan(out[:, 2]).all()
    assert np.isfinite(np.delete(out, 2, axis=1)).all()
    dx, _, _ = spatial_batchnorm_backward_fast(np.ones(x.shape), cache)
    assert np.isfinite(np.delete(dx, 2, axis=1)).all()


@needs_kernel
def test_inputs_and_upstream_gradients_are_left_alone() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 4))
    dout = rng.standard_normal(x.shape)
    x_copy, dout_copy = x.copy(), dout.copy()
    _, cache = spatial_batchnorm_forward_fast(x, np.ones(3), np.zeros(3), {"mode": "train"})
    spatial_batchnorm_backward_fast(dout, cache)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dout, dout_copy)


def test_bad_input_gets_the_references_errors() -> None:
    with pytest.raises(ValueError, match="more than one value"):
        spatial_batchnorm_forward_fast(
            np.ones((1, 2, 1, 1)), np.ones(2), np.zeros(2), {"mode": "train"}
        )
    with pytest.raises(ValueError):
        spatial_batchnorm_forward_fast(
            np.ones((2, 3, 4)), np.ones(3), np.zeros(3), {"mode": "train"}
        )
    with pytest.raises(ValueError):
        spatial_batchnorm_forward_fast(
            np.ones((2, 3, 4, 4)), np.ones(2), np.zeros(3), {"mode": "train"}
        )
    with pytest.raises(TypeError):
        spatial_batchnorm_forward_fast(
            np.ones((2, 3, 4, 4), dtype=complex), np.ones(3), np.zeros(3), {"mode": "train"}
        )
    with pytest.raises((TypeError, ValueError), match="mode"):
        spatial_batchnorm_forward_fast(np.ones((2, 3, 4, 4)), np.ones(3), np.zeros(3), {})


@needs_kernel
def test_a_foreign_or_mismatched_cache_is_refused() -> None:
    x = np.ones((2, 3, 4, 4))
    _, cache = spatial_batchnorm_forward_fast(x, np.ones(3), np.zeros(3), {"mode": "train"})
    assert isinstance(cache, BatchNormCache)
    with pytest.raises(TypeError, match="BatchNormCache"):
        spatial_batchnorm_backward_fast(np.ones(x.shape), (x, None))
    with pytest.raises(ValueError):
        spatial_batchnorm_backward_fast(np.ones((2, 3, 4, 5)), cache)


@needs_kernel
def test_the_kernel_checks_every_size_it_relies_on() -> None:
    kernel = _backend.batchnorm_kernel
    x = np.ones((2, 3, 4))
    one = np.ones(3)

    def forward(**changes):
        args = {"gamma": one, "beta": one, "center": np.empty(3), "inv_std": np.empty(3)}
        args.update(changes)
        out = args.pop("out", np.empty_like(x))
        start, stop = args.pop("start", 0), args.pop("stop", 3)
        kernel.forward_channels(
            x,
            args["gamma"],
            args["beta"],
            1e-5,
            True,
            args["center"],
            args["inv_std"],
            args.pop("var", np.empty(3)),
            out,
            start,
            stop,
        )

    def backward(**changes):
        args = {"center": one, "inv_std": one, "gamma": one, "dgamma": np.empty(3)}
        args.update(changes)
        dout, dx = args.pop("dout", x), args.pop("dx", np.empty_like(x))
        start, stop = args.pop("start", 0), args.pop("stop", 3)
        kernel.backward_channels(
            dout,
            x,
            args["center"],
            args["inv_std"],
            args["gamma"],
            True,
            dx,
            args["dgamma"],
            args.pop("dbeta", np.empty(3)),
            start,
            stop,
        )

    forward()
    backward()
    with pytest.raises(ValueError, match="channels"):
        forward(stop=4)
    with pytest.raises(ValueError, match="channels"):
        backward(start=-1)
    with pytest.raises(ValueError, match="out"):
        forward(out=np.empty((2, 3, 5)))
    for name in ("gamma", "beta", "center", "inv_std", "var"):
        with pytest.raises(ValueError, match=name):
            forward(**{name: np.ones(2)})
    with pytest.raises(ValueError, match="dout"):
        backward(dout=np.ones((1, 3, 4)))
    with pytest.raises(ValueError, match="dx"):
        backward(dx=np.empty((2, 2, 4)))
    for name in ("center", "inv_std", "gamma", "dgamma", "dbeta"):
        with pytest.raises(ValueError, match=name):
            backward(**{name: np.ones(4)})
