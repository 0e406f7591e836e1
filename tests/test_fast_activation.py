"""The compiled ReLU against the numpy layers: exactly equal, NaN and infinities included,
any shape, layout, dtype and thread split; the kernel's own size checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convnet import _backend, _parallel
from convnet.fast_activation import relu_backward_fast, relu_forward_fast
from convnet.layers import relu_backward, relu_forward

needs_kernel = pytest.mark.skipif(
    _backend.relu_kernel is None, reason="needs the compiled kernel convnet._relu"
)
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 2.0**-100, -(2.0**-100)]  # exact in float32


def values(dtype):
    finite = st.floats(-1e6, 1e6, width=32 if dtype == np.float32 else 64)
    return st.one_of(finite, st.sampled_from(SPECIAL))


@needs_kernel
@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    dtype=st.sampled_from([np.float32, np.float64]),
    dout_dtype=st.sampled_from([np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    transposed=st.booleans(),
    threads=st.sampled_from([1, 2]),
)
def test_fast_relu_equals_the_numpy_layers(data, dtype, dout_dtype, shape, transposed, threads):
    x = data.draw(hnp.arrays(dtype, shape, elements=values(dtype)))
    dout = data.draw(hnp.arrays(dout_dtype, shape, elements=values(dout_dtype)))
    if transposed:
        x, dout = x.T, dout.T
    x_copy, dout_copy = x.copy(), dout.copy()
    previous = _parallel.set_num_threads(threads)
    smallest = _parallel.MEMORY_BOUND_MIN_ELEMENTS
    _parallel.MEMORY_BOUND_MIN_ELEMENTS = 0
    try:
        out, cache = relu_forward_fast(x)
        dx = relu_backward_fast(dout, cache)
    finally:
        _parallel.MEMORY_BOUND_MIN_ELEMENTS = smallest
        _parallel.set_num_threads(previous)
    expected, expected_cache = relu_forward(x)
    expected_dx = relu_backward(dout, expected_cache)
    assert out.dtype == expected.dtype and dx.dtype == expected_dx.dtype
    assert out.shape == expected.shape and dx.shape == expected_dx.shape
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(dx, expected_dx)
    np.testing.assert_array_equal(relu_backward(dout, cache), expected_dx)
    np.testing.assert_array_equal(relu_backward_fast(dout, expected_cache), expected_dx)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dout, dout_copy)


def test_bad_input_gets_the_layers_errors():
    with pytest.raises(TypeError):
        relu_forward_fast(np.ones(3, dtype=np.int64))
    with pytest.raises(TypeError):
        relu_forward_fast(np.ones(3, dtype=complex))
    _, cache = relu_forward_fast(np.ones((2, 3)))
    with pytest.raises(ValueError):
        relu_backward_fast(np.ones((3, 2)), cache)
    with pytest.raises(TypeError):
        relu_backward_fast(np.ones((2, 3)), None)


@needs_kernel
def test_the_kernel_checks_every_size_it_relies_on():
    kernel = _backend.relu_kernel
    x = np.ones(5)
    kernel.relu_forward(x, np.empty(5), 0, 5)
    kernel.relu_backward(x, x, np.empty(5), 2, 4)
    with pytest.raises(ValueError, match="out"):
        kernel.relu_forward(x, np.empty(4), 0, 4)
    with pytest.raises(ValueError, match="range"):
        kernel.relu_forward(x, np.empty(5), 0, 6)
    with pytest.raises(ValueError, match="range"):
        kernel.relu_backward(x, x, np.empty(5), 3, 2)
    with pytest.raises(ValueError, match="dout"):
        kernel.relu_backward(np.ones(4), x, np.empty(5), 0, 4)
    with pytest.raises(ValueError, match="dx"):
        kernel.relu_backward(x, x, np.empty(6), 0, 5)
