"""Inverted dropout: gradients, masks and seeds, test mode, dtypes and bad parameters."""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import GRAD_TOL

from convnet import layers
from convnet.dropout import DropoutCache
from convnet.gradient_check import numerical_gradient_array, relative_error
from convnet.layers import dropout_backward, dropout_forward


def test_gradient_with_a_fixed_seed(rng):
    x = rng.standard_normal((5, 6))
    dout = rng.standard_normal((5, 6))
    param = {"mode": "train", "p": 0.4, "seed": 123}
    out, cache = dropout_forward(x, param)
    dx = dropout_backward(dout, cache)
    numeric = numerical_gradient_array(lambda v: dropout_forward(v, param)[0], x, dout)
    assert relative_error(dx, numeric) < GRAD_TOL
    assert 0 < np.count_nonzero(out) < out.size


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.8])
def test_kept_units_are_scaled_and_the_rest_are_zero(keep, rng):
    x = rng.uniform(1.0, 2.0, (200, 500))
    out, cache = dropout_forward(x, {"mode": "train", "p": keep, "seed": 0})
    kept = out != 0
    assert kept.mean() == pytest.approx(keep, abs=0.01)
    np.testing.assert_array_equal(out[kept], x[kept] * (1 / keep))
    assert out.mean() == pytest.approx(x.mean(), rel=0.02)  # inverted: same expectation
    np.testing.assert_array_equal(cache.mask, np.where(kept, 1 / keep, 0))
    dout = rng.standard_normal(x.shape)
    expected = np.where(kept, dout * (1 / keep), 0)
    np.testing.assert_array_equal(dropout_backward(dout, cache), expected)


def test_seeds_and_generators():
    x = np.ones((20, 30))

    def mask(seed, dtype=np.float64) -> np.ndarray:
        param = {"mode": "train", "p": 0.5, "seed": seed}
        return dropout_forward(x.astype(dtype), param)[0] != 0

    np.testing.assert_array_equal(mask(7), mask(7))  # same seed, same mask
    np.testing.assert_array_equal(mask(7), mask(7, np.float32))  # whatever the dtype
    assert not np.array_equal(mask(7), mask(8))
    assert not np.array_equal(mask(None), mask(None))  # fresh entropy without a seed
    generator, replay = np.random.default_rng(3), np.random.default_rng(3)
    first, second = mask(generator), mask(generator)
    assert not np.array_equal(first, second)  # a generator moves on at every call
    np.testing.assert_array_equal(mask(replay), first)
    np.testing.assert_array_equal(mask(replay), second)


@pytest.mark.parametrize("param", [{"mode": "test", "p": 0.3}, {"mode": "train", "p": 1.0}])
def test_test_mode_and_keep_one_return_a_copy_of_x(param, rng):
    x = rng.standard_normal((4, 3, 2))
    out, cache = dropout_forward(x, param)
    np.testing.assert_array_equal(out, x)
    assert out is not x and not np.shares_memory(out, x)
    dout = rng.standard_normal(x.shape)
    dx = dropout_backward(dout, cache)
    np.testing.assert_array_equal(dx, dout)
    assert not np.shares_memory(dx, dout)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, rng):
    x = rng.standard_normal((6, 7)).astype(dtype)
    out, cache = dropout_forward(x, {"mode": "train", "p": 0.3, "seed": 1})
    assert out.dtype == cache.mask.dtype == dtype
    assert dropout_backward(np.ones_like(x), cache).dtype == dtype
    out, cache = dropout_forward(x, {"mode": "test", "p": 0.3})
    assert out.dtype == dropout_backward(np.ones_like(x), cache).dtype == dtype


def test_dropped_units_do_not_pass_nan_or_inf():
    x = np.array([np.nan, np.inf, 1.0, np.nan] * 50)
    out, cache = dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 2})
    dropped = cache.mask == 0
    assert dropped.any() and (~dropped).any()
    np.testing.assert_array_equal(out[dropped], 0)
    dx = dropout_backward(np.full(x.shape, np.nan), cache)
    np.testing.assert_array_equal(dx[dropped], 0)
    assert np.isnan(dx[~dropped]).all()


def test_inputs_are_never_modified(rng):
    x, dout = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    originals = (x.copy(), dout.copy())
    for mode in ("train", "test"):
        out, cache = dropout_forward(x, {"mode": mode, "p": 0.5, "seed": 0})
        out[...] = 7.0
        dropout_backward(dout, cache)[...] = 7.0
    np.testing.assert_array_equal(x, originals[0])
    np.testing.assert_array_equal(dout, originals[1])


def test_any_layout(to_layout, rng):
    x, dout = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    param = {"mode": "train", "p": 0.6, "seed": 5}
    out, cache = dropout_forward(x, param)
    out_l, cache_l = dropout_forward(to_layout(x), param)
    np.testing.assert_array_equal(out_l, out)
    np.testing.assert_array_equal(
        dropout_backward(to_layout(dout), cache_l), dropout_backward(dout, cache)
    )


X = np.zeros((3, 4))
BAD = {
    "no-mode": ({"p": 0.5}, ValueError, "'mode'"),
    "bad-mode": ({"mode": "eval", "p": 0.5}, ValueError, "'train' or 'test'"),
    "no-p": ({"mode": "train"}, ValueError, "'p'"),
    "p-zero": ({"mode": "train", "p": 0.0}, ValueError, r"must lie in \(0, 1\]"),
    "p-above-one": ({"mode": "test", "p": 1.5}, ValueError, r"must lie in \(0, 1\]"),
    "p-negative": ({"mode": "train", "p": -0.2}, ValueError, r"must lie in \(0, 1\]"),
    "p-nan": ({"mode": "train", "p": float("nan")}, ValueError, r"must lie in \(0, 1\]"),
    "p-string": ({"mode": "train", "p": "0.5"}, TypeError, "real number"),
    "seed-negative": ({"mode": "train", "p": 0.5, "seed": -1}, ValueError, "seed"),
    "seed-float": ({"mode": "train", "p": 0.5, "seed": 1.5}, TypeError, "seed"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_parameters_are_refused(name):
    param, error, message = BAD[name]
    with pytest.raises(error, match=message):
        dropout_forward(X, param)


def test_bad_arrays_and_caches_are_refused():
    with pytest.raises(TypeError, match="dict"):
        dropout_forward(X, None)
    with pytest.raises(TypeError, match="float32 or float64"):
        dropout_forward(X.astype(int), {"mode": "train", "p": 0.5})
    _, cache = dropout_forward(X, {"mode": "train", "p": 0.5})
    with pytest.raises(ValueError, match="dout has shape"):
        dropout_backward(np.zeros((4, 3)), cache)
    with pytest.raises(TypeError, match="DropoutCache"):
        dropout_backward(X, ({"mode": "train", "p": 0.5}, X))
    assert isinstance(cache, DropoutCache)
    assert layers.dropout_forward is dropout_forward
