"""The threaded affine layers against the reference affine layers."""

from __future__ import annotations

import numpy as np
import pytest
from gradients import check_gradients
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tolerances import TOLERANCE

from convnet._parallel import set_num_threads
from convnet.fast_layers import affine_backward_fast, affine_forward_fast
from convnet.layers import affine_backward, affine_forward


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    num=st.integers(0, 7),
    feature_shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    outputs=st.integers(1, 6),
    dtype=st.sampled_from([np.float32, np.float64]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_fast_affine_matches_reference(
    num, feature_shape, outputs, dtype, threads, seed, restore_num_threads
):
    set_num_threads(threads)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num, *feature_shape)).astype(dtype)
    w = rng.standard_normal((x[0].size if num else int(np.prod(feature_shape)), outputs))
    w = w.astype(dtype)
    b = rng.standard_normal(outputs).astype(dtype)
    dout = rng.standard_normal((num, outputs)).astype(dtype)
    out_ref, cache_ref = affine_forward(x, w, b)
    out, cache = affine_forward_fast(x, w, b)
    assert out.dtype == out_ref.dtype == dtype
    tolerance = TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(out, out_ref, rtol=tolerance, atol=tolerance)
    for grad, ref in zip(
        affine_backward_fast(dout, cache), affine_backward(dout, cache_ref), strict=True
    ):
        assert grad.shape == ref.shape and grad.dtype == ref.dtype
        np.testing.assert_allclose(grad, ref, rtol=tolerance, atol=tolerance)


def test_fast_affine_gradients_are_numerically_right(rng, restore_num_threads):
    set_num_threads(2)
    x = rng.standard_normal((5, 3, 2))
    w = rng.standard_normal((6, 4))
    b = rng.standard_normal(4)
    dout = rng.standard_normal((5, 4))
    check_gradients(affine_forward_fast, affine_backward_fast, [x, w, b], dout=dout, tol=1e-8)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "b_shape", "match"),
    [
        ((2, 3), (4, 5), (5,), "features per sample"),
        ((2, 3), (3, 5), (4,), "b must have length"),
        ((2, 3), (3,), (3,), "w must be 2-dimensional"),
    ],
)
def test_fast_affine_refuses_mismatched_shapes(x_shape, w_shape, b_shape, match):
    with pytest.raises(ValueError, match=match):
        affine_forward_fast(np.ones(x_shape), np.ones(w_shape), np.ones(b_shape))


def test_fast_affine_backward_checks_dout():
    _, cache = affine_forward_fast(np.ones((2, 3)), np.ones((3, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="dout has shape"):
        affine_backward_fast(np.ones((2, 5)), cache)


def test_fast_affine_leaves_its_inputs_alone(rng):
    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((6, 3)), rng.standard_normal(3)
    dout = rng.standard_normal((4, 3))
    copies = [a.copy() for a in (x, w, b, dout)]
    _, cache = affine_forward_fast(x, w, b)
    affine_backward_fast(dout, cache)
    for original, copy in zip((x, w, b, dout), copies, strict=True):
        np.testing.assert_array_equal(original, copy)
