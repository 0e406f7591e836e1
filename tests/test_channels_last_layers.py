"""Batch norm (and its fused ReLU), ReLU and max pooling on channels-last images, on every
instruction set: against the reference layers, the fused pass against the two layers it
replaces, layouts kept, NaN, mixed dtypes, foreign caches; and convnet.memory_format."""

from __future__ import annotations

import numpy as np
import pytest
from channels_last_helpers import (
    CHANNEL_COUNTS,
    EXAMPLES_PER_INSTRUCTION_SET,
    laid_out_channels_last,
    needs_channels_last,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from norm_reference import spatial_batchnorm_scales
from tolerances import TOLERANCE, assert_matches

from convnet._parallel import set_num_threads
from convnet.fast_activation import add_fast, relu_backward_fast, relu_forward_fast
from convnet.fast_layers import max_pool_backward_fast, max_pool_forward_fast
from convnet.fast_normalization import (
    BatchNormCache,
    ChannelsLastNormCache,
    spatial_batchnorm_backward_fast,
    spatial_batchnorm_forward_fast,
    spatial_batchnorm_relu_backward_fast,
    spatial_batchnorm_relu_forward_fast,
)
from convnet.layers import (
    max_pool_backward_naive,
    max_pool_forward_naive,
    relu_backward,
    relu_forward,
)
from convnet.memory_format import (
    MEMORY_FORMATS,
    is_channels_last,
    to_channels_last,
    to_contiguous,
)
from convnet.normalization import spatial_batchnorm_backward, spatial_batchnorm_forward

pytestmark = needs_channels_last
FUNCTION_SCOPED = [HealthCheck.function_scoped_fixture]


# --- batch norm ----------------------------------------------------------------------------------


def batch_norm(relu: bool):
    """The fast (forward, backward) pair: batch norm, or batch norm fused with a ReLU."""
    if relu:
        return spatial_batchnorm_relu_forward_fast, spatial_batchnorm_relu_backward_fast
    return spatial_batchnorm_forward_fast, spatial_batchnorm_backward_fast


def bn_inputs(shape, rng, *, param_4d=False, offset=0.0, mode="train", **extra):
    """x (channels-last float32), gamma, beta, dout and a bn_param with running statistics."""
    channels = shape[1]
    param_shape = (1, channels, 1, 1) if param_4d else (channels,)
    x = to_channels_last((rng.standard_normal(shape) * 2 + offset).astype(np.float32))
    gamma = rng.standard_normal(param_shape).astype(np.float32)
    beta = rng.standard_normal(param_shape).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    param = {
        "mode": mode,
        "running_mean": rng.standard_normal(channels).astype(np.float32),
        "running_var": (rng.random(channels) + 0.5).astype(np.float32),
        **extra,
    }
    return x, gamma, beta, dout, param


def bn_reference(x, gamma, beta, dout, param, relu_mask=None):
    """The numpy reference in float64 from the same values: (out, dx, dgamma, dbeta), the
    scale each is held to (dx of a channel is a difference of terms ~ dout * gamma / std)
    and the bn_param it leaves. ``relu_mask``: where the fused ReLU passed its input on (the
    fast forward's, so a value within rounding of 0 cannot flip it)."""
    param64 = {
        k: v.astype(np.float64) if isinstance(v, np.ndarray) else v for k, v in param.items()
    }
    x64, gamma64, beta64, dout64 = (a.astype(np.float64) for a in (x, gamma, beta, dout))
    out, cache = spatial_batchnorm_forward(x64, gamma64, beta64, param64)
    if relu_mask is not None:
        out = np.maximum(out, 0)
        dout64 = np.where(relu_mask, dout64, 0)
    grads = spatial_batchnorm_backward(dout64, cache)
    return (out, *grads), spatial_batchnorm_scales(out, dout64, gamma64, cache), param64


def assert_within(actual, expected, scale) -> None:
    """float32, expected's shape, within float32's standard relative to ``scale``."""
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    tolerance = TOLERANCE[np.dtype(np.float32)]
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * scale)


@settings(max_examples=EXAMPLES_PER_INSTRUCTION_SET, suppress_health_check=FUNCTION_SCOPED)
@given(
    shape=st.tuples(
        st.integers(1, 4),
        CHANNEL_COUNTS,
        st.integers(1, 6),
        st.integers(1, 6),
    ).filter(lambda s: s[0] * s[2] * s[3] > 1),
    mode=st.sampled_from(["train", "test"]),
    relu=st.booleans(),
    param_4d=st.booleans(),
    offset=st.sampled_from([0.0, 3.0, -50.0]),
    eps=st.sampled_from([1e-5, 1e-3, 0.5]),
    momentum=st.sampled_from([0.9, 0.5, 0.0, 1.0]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_batchnorm_matches_the_reference(
    instruction_set,
    shape,
    mode,
    relu,
    param_4d,
    offset,
    eps,
    momentum,
    threads,
    seed,
    restore_num_threads,
):
    """Output, dx, dgamma, dbeta and the running statistics of batch norm (and of batch
    norm then ReLU) on channels-last float32 images, within float32's standard of the
    reference in float64; the output and dx channels-last, float32 throughout."""
    # Two values 50 away from 0 can lie so close together that rounding their mean to
    # float32 (as every float32 kernel does) moves the output by more than the tolerance.
    assume(offset != -50.0 or shape[0] * shape[2] * shape[3] > 2)
    rng = np.random.default_rng(seed)
    x, gamma, beta, dout, param = bn_inputs(
        shape, rng, param_4d=param_4d, offset=offset, mode=mode, eps=eps, momentum=momentum
    )
    set_num_threads(threads)
    forward, backward = batch_norm(relu)
    fast_param = dict(param)
    out, cache = forward(x, gamma, beta, fast_param)
    dx, dgamma, dbeta = backward(dout, cache)
    if is_channels_last(x):
        assert isinstance(cache, ChannelsLastNormCache)
        assert is_channels_last(out) and laid_out_channels_last(dx)
    expected, scales, reference_param = bn_reference(
        x, gamma, beta, dout, param, relu_mask=out > 0 if relu else None
    )
    for actual, wanted, scale in zip((out, dx, dgamma, dbeta), expected, scales, strict=True):
        assert_within(actual, wanted, scale)
    assert dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    for key in ("running_mean", "running_var"):
        assert fast_param[key].dtype == np.float32
        assert_matches(fast_param[key], reference_param[key].astype(np.float32))


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
def test_statistics_of_data_far_from_zero(instruction_set, relu, restore_num_threads):
    """Channels 150 standard deviations away from 0: the variance comes out right (sums of
    squares about 0 would cancel catastrophically in float32)."""
    set_num_threads(2)
    rng = np.random.default_rng(22)
    x, gamma, beta, dout, param = bn_inputs((4, 24, 5, 5), rng, offset=300.0)
    forward, backward = batch_norm(relu)
    fast_param = dict(param)
    out, cache = forward(x, gamma, beta, fast_param)
    grads = backward(dout, cache)
    expected, scales, reference_param = bn_reference(
        x, gamma, beta, dout, param, relu_mask=out > 0 if relu else None
    )
    for actual, wanted, scale in zip((out, *grads), expected, scales, strict=True):
        assert_within(actual, wanted, scale)
    assert_matches(fast_param["running_var"], reference_param["running_var"].astype(np.float32))


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
def test_a_channel_far_from_zero_is_centered_before_it_is_scaled(instruction_set, relu):
    """Values 1000 +- 2**-6 (their mean exact in float32): x - mean is exact, so the output
    is too; x * scale - mean * scale would round two terms of 64000 (ulp 2**-8)."""
    signs = np.array([1, -1, -1, 1, -1, 1, 1, -1], np.float32).reshape(2, 1, 2, 2)
    x = to_channels_last(np.concatenate([1000 + signs * 2.0**-6, 3 - signs], axis=1))
    gamma, beta = np.array([1.0, 0.5], np.float32), np.array([0.25, 0.0], np.float32)
    dout = np.random.default_rng(23).standard_normal(x.shape).astype(np.float32)
    forward, backward = batch_norm(relu)
    out, cache = forward(x, gamma, beta, {"mode": "train"})
    grads = backward(dout, cache)
    expected, scales, _ = bn_reference(
        x, gamma, beta, dout, {"mode": "train"}, relu_mask=out > 0 if relu else None
    )
    for actual, wanted, scale in zip((out, *grads), expected, scales, strict=True):
        assert_within(actual, wanted, scale)


BN_SHAPES = [(2, 3, 4, 5), (3, 17, 5, 3), (1, 40, 6, 6), (4, 16, 1, 2), (2, 1, 3, 3)]


@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
@pytest.mark.parametrize("mode", ["train", "test"])
def test_fused_relu_is_bit_identical_to_batchnorm_then_relu(
    instruction_set, shape, mode, restore_num_threads
):
    """The fused pass is the same multiply-add then max(., 0): its output and gradients
    equal, bit for bit, batch norm's followed by the fast ReLU's, on two threads too."""
    set_num_threads(2)
    rng = np.random.default_rng(12)
    x, gamma, beta, dout, param = bn_inputs(shape, rng, mode=mode)
    x[0, 0, 0, 0] = np.nan
    fused_param, plain_param = dict(param), dict(param)
    fused, fused_cache = spatial_batchnorm_relu_forward_fast(x, gamma, beta, fused_param)
    normalized, norm_cache = spatial_batchnorm_forward_fast(x, gamma, beta, plain_param)
    activated, relu_cache = relu_forward_fast(normalized)
    np.testing.assert_array_equal(fused, activated)
    assert is_channels_last(fused) == is_channels_last(activated) == is_channels_last(x)
    for key in ("running_mean", "running_var"):
        np.testing.assert_array_equal(fused_param[key], plain_param[key])
    fused_grads = spatial_batchnorm_relu_backward_fast(dout, fused_cache)
    plain_grads = spatial_batchnorm_backward_fast(relu_backward_fast(dout, relu_cache), norm_cache)
    for mine, theirs in zip(fused_grads, plain_grads, strict=True):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_a_float64_dout_into_a_float32_channels_last_cache(instruction_set, relu, mode):
    """float64 gradients, within float32's standard of the float32 dout's (the same values),
    and of the reference."""
    rng = np.random.default_rng(13)
    x, gamma, beta, dout, param = bn_inputs((3, 9, 4, 5), rng, mode=mode)
    forward, backward = batch_norm(relu)
    out, cache = forward(x, gamma, beta, dict(param))
    grads32 = backward(dout, cache)
    grads64 = backward(dout.astype(np.float64), cache)
    expected, scales, _ = bn_reference(x, gamma, beta, dout, param, out > 0 if relu else None)
    for grad64, grad32, wanted, scale in zip(
        grads64, grads32, expected[1:], scales[1:], strict=True
    ):
        assert grad64.dtype == np.float64
        assert_within(grad64.astype(np.float32), grad32, scale)
        assert_within(grad64.astype(np.float32), wanted, scale)


def test_fused_relus_mask_is_the_forward_outputs_for_a_float64_dout(instruction_set):
    """The gradient flows exactly where the fused forward pass gave a positive output, for a
    float64 dout too: here x * gamma + beta is 2**-46 by a fused multiply-add but 0 in two
    roundings, so a mask recomputed another way would disagree with the forward pass."""
    eps = 2.0**-10  # running_var + eps == 1: the scale is gamma itself, the offset beta
    one = np.float32(1 + 2**-23)
    x = np.ones((2, 2, 2, 2), np.float32)
    x[0, 0, 0, 0] = one
    x = to_channels_last(x)
    gamma = np.array([one, 1], np.float32)
    beta = np.array([-(1 + 2**-22), 0], np.float32)
    param = {
        "mode": "test",
        "eps": eps,
        "running_mean": np.zeros(2, np.float32),
        "running_var": np.full(2, 1 - eps, np.float32),
    }
    out, cache = spatial_batchnorm_relu_forward_fast(x, gamma, beta, param)
    dout = np.ones(x.shape)
    passed = out > 0
    for dtype in (np.float32, np.float64):
        dx, _, _ = spatial_batchnorm_relu_backward_fast(dout.astype(dtype), cache)
        np.testing.assert_array_equal(dx != 0, passed)


def test_the_wrong_backward_function_refuses_a_cache():
    rng = np.random.default_rng(14)
    x, gamma, beta, dout, param = bn_inputs((2, 3, 4, 4), rng)
    _, plain = spatial_batchnorm_forward_fast(x, gamma, beta, dict(param))
    _, fused = spatial_batchnorm_relu_forward_fast(x, gamma, beta, dict(param))
    _, contiguous = spatial_batchnorm_forward_fast(
        np.ascontiguousarray(x), gamma, beta, dict(param)
    )
    assert isinstance(plain, ChannelsLastNormCache) and isinstance(contiguous, BatchNormCache)
    with pytest.raises(ValueError, match="spatial_batchnorm_relu_backward_fast"):
        spatial_batchnorm_backward_fast(dout, fused)
    with pytest.raises(ValueError, match="without the fused ReLU"):
        spatial_batchnorm_relu_backward_fast(dout, plain)
    with pytest.raises(TypeError, match="spatial_batchnorm_relu_forward_fast"):
        spatial_batchnorm_relu_backward_fast(dout, contiguous)
    with pytest.raises(TypeError, match="BatchNormCache"):
        spatial_batchnorm_backward_fast(dout, (x, None, None))
    for backward, cache in (
        (spatial_batchnorm_backward_fast, plain),
        (spatial_batchnorm_relu_backward_fast, fused),
    ):
        with pytest.raises(ValueError, match="dout has shape"):
            backward(np.ones((2, 3, 4, 5), np.float32), cache)
        with pytest.raises(TypeError, match="dtype"):
            backward(dout.astype(np.complex64), cache)


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
def test_float64_channels_last_batchnorm_runs_the_contiguous_path(relu):
    """A float64 operand (x or gamma) makes the computation float64, by the contiguous
    kernels, with float64's standard."""
    rng = np.random.default_rng(15)
    x, gamma, beta, dout, param = bn_inputs((2, 5, 3, 4), rng)
    forward, backward = batch_norm(relu)
    for x_in, gamma_in in ((x.astype(np.float64), gamma), (x, gamma.astype(np.float64))):
        assert is_channels_last(x_in)
        out, cache = forward(x_in, gamma_in, beta, dict(param))
        assert out.dtype == np.float64 and not isinstance(cache, ChannelsLastNormCache)
        grads = backward(dout, cache)
        reference_out, reference_cache = spatial_batchnorm_forward(
            x_in, gamma_in, beta, dict(param)
        )
        dout64 = dout.astype(np.float64)
        if relu:
            reference_out = np.maximum(reference_out, 0)
            dout64 = np.where(reference_out > 0, dout64, 0)
        assert_matches(out, reference_out)
        for grad, wanted in zip(
            grads, spatial_batchnorm_backward(dout64, reference_cache), strict=True
        ):
            assert_matches(grad, wanted)


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
def test_nan_stays_in_its_channel(instruction_set, relu):
    rng = np.random.default_rng(16)
    x, gamma, beta, dout, param = bn_inputs((3, 20, 4, 4), rng)
    x[1, 17, 2, 3] = np.nan
    forward, backward = batch_norm(relu)
    out, cache = forward(x, gamma, beta, dict(param))
    assert np.isnan(out[:, 17]).all()
    assert np.isfinite(np.delete(out, 17, axis=1)).all()
    dx, dgamma, dbeta = backward(dout, cache)
    assert np.isfinite(np.delete(dx, 17, axis=1)).all()
    assert np.isfinite(np.delete(dgamma, 17)).all() and np.isfinite(np.delete(dbeta, 17)).all()


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
def test_batchnorm_leaves_its_inputs_alone(relu):
    rng = np.random.default_rng(17)
    x, gamma, beta, dout, param = bn_inputs((2, 6, 3, 4), rng)
    dout = to_channels_last(dout)
    copies = [a.copy() for a in (x, gamma, beta, dout)]
    forward, backward = batch_norm(relu)
    _, cache = forward(x, gamma, beta, dict(param))
    backward(dout, cache)
    for array, copy in zip((x, gamma, beta, dout), copies, strict=True):
        np.testing.assert_array_equal(array, copy)


# --- ReLU --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("threads", [1, 3])
def test_relu_keeps_the_memory_format(instruction_set, dtype, layout, threads, restore_num_threads):
    """Equal to the numpy ReLU (NaN stays NaN, its gradient 0; -0.0 and infinities too) in
    the layout it was given, for an upstream gradient in either layout."""
    set_num_threads(threads)
    rng = np.random.default_rng(18)
    x = rng.standard_normal((3, 21, 4, 5)).astype(dtype)
    specials = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    x.reshape(-1)[rng.choice(x.size, 40, replace=False)] = np.resize(specials, 40)
    x = to_channels_last(x) if layout == "channels_last" else x
    out, cache = relu_forward_fast(x)
    expected, expected_cache = relu_forward(x)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))
    assert out.dtype == np.dtype(dtype)
    assert is_channels_last(out) == (layout == "channels_last")
    for dout_layout in (to_channels_last, np.ascontiguousarray):
        dout = dout_layout(rng.standard_normal(x.shape).astype(dtype))
        dout.reshape(-1)[:5] = np.nan  # where x <= 0 a NaN in dout gives 0 too
        dx = relu_backward_fast(dout, cache)
        np.testing.assert_array_equal(dx, relu_backward(dout, expected_cache))
        assert is_channels_last(dx) == (layout == "channels_last")
        assert (dx[np.isnan(x)] == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layouts", ["channels_last", "contiguous", "mixed"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("channels", [1, 7, 16, 21, 33])
def test_add_is_numpys_sum_then_relu(
    instruction_set, dtype, layouts, relu, threads, channels, restore_num_threads
):
    """A residual connection's sum (and ReLU) equals numpy's ``a + b`` (then the ReLU) bit
    for bit, NaN, infinities and signed zeros included, over vector tails of every length;
    the inputs are left alone."""
    set_num_threads(threads)
    rng = np.random.default_rng(channels)
    a, b = (rng.standard_normal((3, channels, 4, 5)).astype(dtype) for _ in range(2))
    specials = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    for array in (a, b):
        array.reshape(-1)[rng.choice(a.size, 12, replace=False)] = np.resize(specials, 12)
    a = a if layouts == "contiguous" else to_channels_last(a)
    b = to_channels_last(b) if layouts == "channels_last" else b
    copies = (a.copy(), b.copy())
    with np.errstate(invalid="ignore"):
        out = add_fast(a, b, relu=relu)
        expected = a + b
    if relu:
        expected = relu_forward(expected)[0]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))
    assert out.dtype == np.dtype(dtype)
    if layouts == "channels_last":
        assert is_channels_last(out) == is_channels_last(a)
    np.testing.assert_array_equal(a, copies[0])
    np.testing.assert_array_equal(b, copies[1])


def test_add_refuses_arrays_of_two_shapes():
    with pytest.raises(ValueError, match="cannot add arrays of shapes"):
        add_fast(np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 5), np.float32))


# --- max pooling ---------------------------------------------------------------------------------


def pool_input(kind: str, shape, rng) -> np.ndarray:
    """Continuous data, ReLU'd data (ties at 0), small integers (ties everywhere), or data
    with NaN, infinities and signed zeros sprinkled in."""
    if kind == "relu":
        return np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
    if kind == "integers":
        return rng.integers(-2, 3, size=shape).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "specials":
        mask = rng.random(shape) < 0.125
        specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
        x[mask] = rng.choice(specials, size=int(mask.sum()))
    return x


@st.composite
def pools(draw):
    """(x shape, pool_param): windows 1..3 and strides 1..3 (overlapping when the stride is
    smaller), C 1..40."""
    pool_h, pool_w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    shape = (
        draw(st.integers(1, 3)),
        draw(CHANNEL_COUNTS),
        draw(st.integers(pool_h, 8)),
        draw(st.integers(pool_w, 8)),
    )
    return shape, {"pool_height": pool_h, "pool_width": pool_w, "stride": stride}


@settings(max_examples=EXAMPLES_PER_INSTRUCTION_SET, suppress_health_check=FUNCTION_SCOPED)
@given(
    pool=pools(),
    kind=st.sampled_from(["continuous", "relu", "integers", "specials"]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_max_pool_matches_naive(instruction_set, pool, kind, threads, seed, restore_num_threads):
    """The same maxima (NaN counting as the largest, the first of equal values in row-major
    order, signed zeros kept), each window's gradient at its first maximum; output and dx
    channels-last; the cache works with the naive backward pass and a float64 dout."""
    shape, pool_param = pool
    set_num_threads(threads)
    rng = np.random.default_rng(seed)
    x = pool_input(kind, shape, rng)
    x_cl = to_channels_last(x)
    out, cache = max_pool_forward_fast(x_cl, pool_param)
    expected, expected_cache = max_pool_forward_naive(x, pool_param)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))
    dout = to_channels_last(rng.standard_normal(out.shape).astype(np.float32))
    dx = max_pool_backward_fast(dout, cache)
    dx_expected = max_pool_backward_naive(dout, expected_cache)
    assert_matches(dx, dx_expected)
    if is_channels_last(x_cl):
        assert laid_out_channels_last(out) and laid_out_channels_last(dx)
    assert_matches(max_pool_backward_naive(dout, cache), dx_expected)
    dx64 = max_pool_backward_fast(dout.astype(np.float64), cache)
    assert dx64.dtype == np.float64
    assert_matches(dx64, max_pool_backward_naive(dout.astype(np.float64), expected_cache))


def test_max_pool_of_float64_channels_last_runs_the_contiguous_kernel():
    rng = np.random.default_rng(19)
    x = to_channels_last(rng.standard_normal((2, 5, 6, 6)))
    param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = max_pool_forward_fast(x, param)
    expected, expected_cache = max_pool_forward_naive(x, param)
    np.testing.assert_array_equal(out, expected)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(
        max_pool_backward_fast(dout, cache), max_pool_backward_naive(dout, expected_cache)
    )


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda x: max_pool_forward_fast(x, {"pool_height": 0, "pool_width": 2, "stride": 2}),
            ValueError,
            "pool_height",
        ),
        (
            lambda x: max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 0}),
            ValueError,
            "stride",
        ),
        (
            lambda x: max_pool_forward_fast(x, {"pool_height": 9, "pool_width": 2, "stride": 1}),
            ValueError,
            "pool",
        ),
        (
            lambda x: max_pool_forward_fast(
                x.astype(np.complex64), {"pool_height": 2, "pool_width": 2, "stride": 2}
            ),
            TypeError,
            "dtype",
        ),
        (
            lambda x: max_pool_forward_fast(x[0], {"pool_height": 2, "pool_width": 2, "stride": 2}),
            ValueError,
            "4-dimensional",
        ),
        (lambda x: relu_forward_fast(x.astype(object)), TypeError, "dtype"),
        (
            lambda x: spatial_batchnorm_forward_fast(
                x, np.ones(2, np.float32), np.zeros(3, np.float32), {"mode": "train"}
            ),
            ValueError,
            "gamma",
        ),
        (
            lambda x: spatial_batchnorm_relu_forward_fast(
                x, np.ones(3, np.float32), np.zeros(3, np.float32), {"mode": "fit"}
            ),
            ValueError,
            "mode",
        ),
        (
            lambda x: spatial_batchnorm_relu_forward_fast(
                x.astype(np.complex64),
                np.ones(3, np.float32),
                np.zeros(3, np.float32),
                {"mode": "train"},
            ),
            TypeError,
            "dtype",
        ),
    ],
)
def test_bad_input_to_the_channels_last_layers_gets_a_clear_error(call, error, message):
    x = to_channels_last(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(error, match=message):
        call(x)


# --- convnet.memory_format ------------------------------------------------------------------------


def test_memory_format_helpers():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert MEMORY_FORMATS == ("contiguous", "channels_last")
    assert not is_channels_last(x)
    x_cl = to_channels_last(x)
    assert is_channels_last(x_cl) and x_cl.shape == x.shape
    np.testing.assert_array_equal(x_cl, x)
    again = to_channels_last(x_cl)
    assert np.shares_memory(again, x_cl) and is_channels_last(again)
    as64 = to_channels_last(x_cl, np.float64)
    assert as64.dtype == np.float64 and is_channels_last(as64)
    back = to_contiguous(x_cl)
    assert back.flags.c_contiguous and not is_channels_last(back)
    np.testing.assert_array_equal(back, x)
    assert to_contiguous(x) is x
    # Contiguous in both layouts counts as contiguous; other arrays are neither.
    for both in (np.ones((2, 1, 3, 3)), np.ones((2, 5, 1, 1))):
        assert not is_channels_last(to_channels_last(both))
    assert not is_channels_last(np.ones((2, 3, 4)))
    assert not is_channels_last(x.tolist())
    assert not is_channels_last(x_cl[:, :, ::2])
    assert is_channels_last(x_cl[:1])


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 4, 5, 6), ()])
def test_to_channels_last_refuses_arrays_that_are_not_image_batches(shape):
    with pytest.raises(ValueError, match="x must be 4-dimensional"):
        to_channels_last(np.ones(shape))


def test_threads_change_at_most_the_order_of_batch_norms_sums(instruction_set, restore_num_threads):
    """With 1, 2 or 3 threads ReLU and max pooling give the same bits (each value is one
    thread's); batch norm adds its per-thread sums up in another order: float32's standard."""
    rng = np.random.default_rng(24)
    x, gamma, beta, dout, param = bn_inputs((3, 21, 6, 5), rng)
    pool_param = {"pool_height": 3, "pool_width": 2, "stride": (2, 1)}
    runs = []
    for threads in (1, 2, 3):
        set_num_threads(threads)
        normalized, norm_cache = spatial_batchnorm_relu_forward_fast(x, gamma, beta, dict(param))
        activated, relu_cache = relu_forward_fast(x)
        pooled, pool_cache = max_pool_forward_fast(x, pool_param)
        runs.append(
            (
                activated,
                relu_backward_fast(dout, relu_cache),
                pooled,
                max_pool_backward_fast(np.ones_like(pooled), pool_cache),
                normalized,
                *spatial_batchnorm_relu_backward_fast(dout, norm_cache),
            )
        )
    for run in runs[1:]:
        for exact, first in zip(run[:4], runs[0][:4], strict=True):
            np.testing.assert_array_equal(exact, first)
        for close, first in zip(run[4:], runs[0][4:], strict=True):
            assert_matches(close, first)
