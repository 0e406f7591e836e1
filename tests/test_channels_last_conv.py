"""Channels-last convolution (fused Winograd, pixel-major im2col) against the naive layers:
every instruction set, thread count, workspace and algorithm, every gradient, the plan
reported, NaN and infinity, float64 and one-channel inputs, bounded scratch memory and
bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from channels_last_helpers import (
    CHANNEL_COUNTS,
    EXAMPLES_PER_INSTRUCTION_SET,
    laid_out_channels_last,
    needs_channels_last,
)
from conv_helpers import extra_peak_mib, use_workspace_and_threads
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from tolerances import assert_matches

import convnet
from convnet import _channels_last_conv, _im2col_conv, conv_plan, winograd
from convnet.fast_layers import (
    conv_algorithm_choice,
    conv_backward_fast,
    conv_forward_fast,
    set_workspace_limit,
)
from convnet.layers import conv_backward_naive, conv_forward_naive
from convnet.memory_format import is_channels_last, to_channels_last

pytestmark = needs_channels_last

# The naive layers loop over every output value in Python (~50 us each, forward and
# backward): examples keep N * F * H_out * W_out under this.
NAIVE_BUDGET = 1500
CHANNELS_LAST_PLANS = {"winograd-channels-last", "direct-channels-last", "im2col-channels-last"}
# The plans 'im2col' asks for: the columns copied (im2col) or read in place (direct).
COLUMNS_PLANS = {"direct-channels-last", "im2col-channels-last"}


def naive_float32(x, w, b, dout, param) -> list[np.ndarray]:
    """The naive layers' output, dx, dw and db, computed in float64 from the same values
    and rounded to float32: the exact answer the float32 kernels are held to."""
    out, cache = conv_forward_naive(*(a.astype(np.float64) for a in (x, w, b)), param)
    grads = conv_backward_naive(dout.astype(np.float64), cache)
    return [a.astype(np.float32) for a in (out, *grads)]


def random_arrays(rng, x_shape, w_shape, dtype=np.float32) -> tuple[np.ndarray, ...]:
    return tuple(
        rng.standard_normal(shape).astype(dtype) for shape in (x_shape, w_shape, w_shape[:1])
    )


def winograd_applies(w_shape, param) -> bool:
    return (
        w_shape[2:] == (3, 3)
        and param["stride"] == (1, 1)
        and param.get("dilation", (1, 1)) == (1, 1)
    )


@st.composite
def convolutions(draw, budget: int = NAIVE_BUDGET) -> tuple[tuple, tuple, dict]:
    """(x shape, w shape, conv_param) with N 1..4, C and F 1..40, kernels 1..5 (non-square),
    strides 1..3, pads 0..3, dilations 1..2; half of them 3x3 stride-1 (Winograd's). The
    output sizes are drawn first (1..12 per axis, small enough for the naive layers), then an
    input size that gives them (any remainder of the stride included)."""
    if draw(st.booleans()):
        kernel, stride, dilation = (3, 3), (1, 1), (1, 1)
    else:
        kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        dilation = (draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([1, 1, 2])))
    pad = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    channels, filters = draw(CHANNEL_COUNTS), draw(CHANNEL_COUNTS)
    largest = max(1, min(12, math.isqrt(budget // filters)))
    sizes, outputs = [], []
    for k, s, d, p in zip(kernel, stride, dilation, pad, strict=True):
        span = d * (k - 1) + 1
        smallest = max(1, span - 2 * p)
        fewest = (smallest + 2 * p - span) // s + 1
        out = draw(st.integers(fewest, max(fewest, largest)))
        sizes.append(max(smallest, (out - 1) * s + span - 2 * p + draw(st.integers(0, s - 1))))
        outputs.append(out)
    assume(filters * outputs[0] * outputs[1] <= 2 * budget)
    num = draw(st.integers(1, max(1, min(4, budget // (filters * outputs[0] * outputs[1])))))
    param = {"stride": stride, "pad": pad}
    if dilation != (1, 1) or draw(st.booleans()):
        param["dilation"] = dilation
    return (num, channels, *sizes), (filters, channels, *kernel), param


# --- the property: channels-last against the naive layers ------------------------------------


@settings(
    max_examples=EXAMPLES_PER_INSTRUCTION_SET,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    conv=convolutions(),
    algorithm=st.sampled_from(["auto", "im2col", "winograd"]),
    route=st.sampled_from(["input", "conv_param"]),
    threads=st.integers(1, 3),
    workspace=st.sampled_from([None, 1, 3000]),
    block=st.sampled_from([1, 3, 16]),
    dout_channels_last=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    columns=st.sampled_from(["direct", "im2col"]),
)
# pads beyond 2: Winograd's input gradient crops dout
@example(
    conv=((2, 17, 9, 10), (9, 17, 3, 3), {"stride": (1, 1), "pad": (3, 0)}),
    algorithm="winograd",
    route="input",
    threads=3,
    workspace=1,
    block=1,
    dout_channels_last=False,
    seed=0,
    columns="direct",
)
# a pointwise convolution of 1x1 images
@example(
    conv=((3, 33, 1, 1), (40, 33, 1, 1), {"stride": (1, 1), "pad": (0, 0)}),
    algorithm="auto",
    route="conv_param",
    threads=2,
    workspace=None,
    block=16,
    dout_channels_last=True,
    seed=1,
    columns="im2col",
)
def test_channels_last_matches_naive(
    instruction_set,
    conv,
    algorithm,
    route,
    threads,
    workspace,
    block,
    dout_channels_last,
    seed,
    columns,
    restore_workspace_limit,
    restore_num_threads,
):
    """Output, dx, dw and db within float32's standard of the naive layers in float64, for
    channels-last inputs and for contiguous ones sent there by conv_param; the output and dx
    channels-last; compute_dx=False and compute_db=False leave out only what they say.
    ``columns`` 'im2col' forbids the direct passes, so both ways of the columns run."""
    x_shape, w_shape, param = conv
    param = {**param, "algorithm": algorithm}
    rng = np.random.default_rng(seed)
    x, w, b = random_arrays(rng, x_shape, w_shape)
    if route == "input":
        x = to_channels_last(x)
    else:
        param["memory_format"] = "channels_last"
    use_workspace_and_threads(workspace, threads)
    if algorithm == "winograd" and not winograd_applies(w_shape, param):
        with pytest.raises(ValueError, match="algorithm 'winograd' needs"):
            conv_forward_fast(x, w, b, param)
        return
    layout = "channels_last" if is_channels_last(x) else "contiguous"
    with pytest.MonkeyPatch.context() as patch:
        if columns == "im2col":
            patch.setattr(conv_plan, "DIRECT_MAX_PADDED_RATIO", 0)
        plan = conv_algorithm_choice(x.shape, w.shape, param, memory_format=layout)
        patch.setattr(_channels_last_conv, "MIN_WINOGRAD_BLOCK", block)
        out, cache = conv_forward_fast(x, w, b, param)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        if dout_channels_last:
            dout = to_channels_last(dout)
        dx, dw, db = conv_backward_fast(dout, cache)
        partial = {
            flags: conv_backward_fast(dout, cache, compute_dx=flags[0], compute_db=flags[1])
            for flags in ((False, False), (True, False), (False, True))
        }
    for actual, expected in zip(
        (out, dx, dw, db), naive_float32(x, w, b, dout, param), strict=True
    ):
        assert_matches(actual, expected)
    on_channels_last = route == "conv_param" or is_channels_last(x)
    assert (plan.name in CHANNELS_LAST_PLANS) == on_channels_last
    if on_channels_last:
        assert laid_out_channels_last(out) and laid_out_channels_last(dx)
        if algorithm == "winograd":
            assert plan.name == "winograd-channels-last"
        if algorithm == "im2col":
            assert plan.name in COLUMNS_PLANS
    # The channels-last passes compute what they keep the same way (the contiguous Winograd
    # chunks its filter gradient differently without dx: its sums may round differently).
    same = np.testing.assert_array_equal if on_channels_last else assert_matches
    for (with_dx, with_db), (dx_only, dw_only, db_only) in partial.items():
        assert (dx_only is None) != with_dx and (db_only is None) != with_db
        same(dw_only, dw)
        if with_dx:
            same(dx_only, dx)
        if with_db:
            same(db_only, db)


# --- the plan reported is the plan run ---------------------------------------------------------

# What each plan runs in the forward and in the backward pass, by the entry points.
RUNS = {
    "winograd-channels-last": (["winograd_forward"], ["winograd_backward"]),
    "direct-channels-last": (["direct_forward"], ["direct_backward"]),
    "im2col-channels-last": (["im2col_forward"], ["im2col_backward"]),
    "im2col": (["correlate"], ["gradients"]),
    "winograd": (["winograd"], ["winograd"]),
}


@settings(max_examples=max(10, settings().max_examples // 3))
@given(
    conv=convolutions(budget=200),
    algorithm=st.sampled_from(["auto", "auto", "im2col", "winograd"]),
    dtype=st.sampled_from([np.float32, np.float32, np.float64]),
    route=st.sampled_from(["input", "conv_param"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_reported_algorithm_is_the_one_forward_and_backward_run(
    conv, algorithm, dtype, route, seed
):
    """conv_algorithm_choice(memory_format=, dtype=) names what the passes run: the
    channels-last entry points for float32, the contiguous ones for float64."""
    x_shape, w_shape, param = conv
    param = {**param, "algorithm": algorithm}
    x, w, b = random_arrays(np.random.default_rng(seed), x_shape, w_shape, dtype)
    if route == "input":
        x = to_channels_last(x)
    else:
        param["memory_format"] = "channels_last"
    layout = "channels_last" if is_channels_last(x) else "contiguous"
    try:
        name, _ = conv_algorithm_choice(x_shape, w_shape, param, memory_format=layout, dtype=dtype)
    except ValueError:
        assert algorithm == "winograd" and not winograd_applies(w_shape, param)
        with pytest.raises(ValueError, match="algorithm 'winograd' needs"):
            conv_forward_fast(x, w, b, param)
        return
    wanted = route == "conv_param" or layout == "channels_last"
    assert (name in CHANNELS_LAST_PLANS) == (dtype == np.float32 and wanted)
    ran: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for module, function, label in (
            (_channels_last_conv, "winograd_forward", "winograd_forward"),
            (_channels_last_conv, "winograd_backward", "winograd_backward"),
            (_channels_last_conv, "direct_forward", "direct_forward"),
            (_channels_last_conv, "direct_backward", "direct_backward"),
            (_channels_last_conv, "im2col_forward", "im2col_forward"),
            (_channels_last_conv, "im2col_backward", "im2col_backward"),
            (_im2col_conv, "correlate", "correlate"),
            (_im2col_conv, "gradients", "gradients"),
            (winograd, "forward", "winograd"),
            (winograd, "backward", "winograd"),
        ):
            patch.setattr(module, function, _recording(getattr(module, function), label, ran))
        out, cache = conv_forward_fast(x, w, b, param)
        forward, ran[:] = list(ran), []
        conv_backward_fast(np.ones_like(out), cache)
    if name in RUNS:
        assert (forward, ran) == RUNS[name], name
    else:  # the contiguous float64 paths the existing tests cover (phases, depthwise)
        assert not {*forward, *ran} & set(
            RUNS["winograd-channels-last"][0]
            + RUNS["direct-channels-last"][0]
            + RUNS["im2col-channels-last"][0]
        )


def _recording(function, label: str, ran: list[str]):
    def recorded(*args, **kwargs):
        ran.append(label)
        return function(*args, **kwargs)

    return recorded


def test_auto_chooses_winograd_from_a_few_channels_on():
    """In channels-last memory 'auto' runs Winograd on 3x3 stride-1 convolutions of at least
    CHANNELS_LAST_WINOGRAD_MIN_CHANNELS channels and filters, whatever the batch; im2col on
    the rest; a contiguous float32 input keeps the contiguous plans."""
    param = {"stride": 1, "pad": 1}

    def choice(x_shape, w_shape, memory_format="channels_last", **extra):
        return conv_algorithm_choice(
            x_shape, w_shape, {**param, **extra}, memory_format=memory_format
        )

    assert choice((1, 4, 5, 5), (4, 4, 3, 3)) == ("winograd-channels-last", 4)
    assert choice((1, 3, 5, 5), (4, 3, 3, 3))[0] == "direct-channels-last"
    assert choice((1, 4, 5, 5), (3, 4, 3, 3))[0] == "direct-channels-last"
    assert choice((1, 8, 5, 5), (8, 8, 3, 3), stride=2)[0] == "direct-channels-last"
    assert choice((1, 8, 5, 5), (8, 8, 5, 3))[0] == "direct-channels-last"
    # direct reads a filter row's taps as one run: a dilated width needs im2col, and so
    # does padding that would blow the input up.
    assert choice((1, 8, 5, 5), (8, 8, 3, 3), dilation=2)[0] == "im2col-channels-last"
    assert choice((1, 8, 2, 2), (8, 8, 5, 3), pad=4)[0] == "im2col-channels-last"
    assert choice((1, 2, 5, 5), (2, 2, 3, 3), algorithm="winograd")[0] == "winograd-channels-last"
    assert choice((1, 8, 5, 5), (8, 8, 3, 3), memory_format="contiguous")[0] == "im2col"
    # conv_param's memory_format wins over the argument, both ways.
    assert (
        conv_algorithm_choice(
            (1, 8, 5, 5),
            (8, 8, 3, 3),
            {**param, "memory_format": "contiguous"},
            memory_format="channels_last",
        )[0]
        == "im2col"
    )
    assert conv_algorithm_choice(
        (1, 8, 5, 5), (8, 8, 3, 3), {**param, "memory_format": "channels_last"}
    ) == ("winograd-channels-last", 4)
    # Several groups and float64 run contiguous.
    assert choice((1, 8, 5, 5), (8, 4, 3, 3), groups=2)[0] in {"im2col", "winograd", "direct"}
    assert conv_algorithm_choice(
        (1, 8, 5, 5), (8, 8, 3, 3), param, memory_format="channels_last", dtype=np.float64
    )[0] in {"im2col", "winograd"}


# --- NaN and infinity ---------------------------------------------------------------------------

NON_FINITE_CASES = {
    # name: (x shape, w shape, conv_param): Winograd's, then strided, dilated, non-square.
    "winograd": ((2, 5, 9, 10), (6, 5, 3, 3), {"stride": 1, "pad": 1, "algorithm": "winograd"}),
    "im2col": ((2, 5, 9, 10), (6, 5, 3, 2), {"stride": (2, 1), "pad": (1, 2), "dilation": (1, 2)}),
}


def non_finite_pattern(array: np.ndarray) -> tuple[np.ndarray, ...]:
    return np.isnan(array), np.isposinf(array), np.isneginf(array)


def assert_same_values(actual: np.ndarray, expected: np.ndarray) -> None:
    """NaN, +inf and -inf in the same places, the finite values within tolerance."""
    for mine, theirs in zip(non_finite_pattern(actual), non_finite_pattern(expected), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    finite = np.isfinite(expected)
    assert_matches(np.where(finite, actual, 0), np.where(finite, expected, 0))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the naive inf * 0
@pytest.mark.parametrize("case", NON_FINITE_CASES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "dout", "w"])
def test_non_finite_values_reach_what_the_naive_layers_reach(instruction_set, case, bad, where):
    """A NaN or an infinity changes exactly the outputs and gradients it reaches in the naive
    layers, with the same sign: Winograd, which would spread it over whole tiles, is redone
    by im2col."""
    x_shape, w_shape, param = NON_FINITE_CASES[case]
    rng = np.random.default_rng(5)
    x, w, b = random_arrays(rng, x_shape, w_shape)
    x = to_channels_last(x)
    if where == "x":
        x[1, 3, 4, 7] = bad
    elif where == "w":
        w[2, 1, 0, 1] = bad
    out, cache = conv_forward_fast(x, w, b, param)
    dout = to_channels_last(rng.standard_normal(out.shape).astype(np.float32))
    if where == "dout":
        dout[0, 4, 2, 3] = bad
    grads = conv_backward_fast(dout, cache)
    for actual, expected in zip((out, *grads), naive_float32(x, w, b, dout, param), strict=True):
        assert_same_values(actual, expected)
    assert laid_out_channels_last(out) and laid_out_channels_last(grads[0])


def test_overflow_in_winograds_transforms_is_redone_exactly(instruction_set):
    """Values near float32's limit overflow in Winograd's sums but not in a direct sum."""
    x = np.zeros((1, 4, 6, 6), np.float32)
    x[0, :, 2:4, 2:4] = 1e38
    w = np.zeros((4, 4, 3, 3), np.float32)
    for f in range(4):
        w[f, f, 1, 1] = 1.0
    param = {"stride": 1, "pad": 1, "algorithm": "winograd"}
    out, cache = conv_forward_fast(to_channels_last(x), w, np.zeros(4, np.float32), param)
    np.testing.assert_array_equal(out, x)
    dx, _, _ = conv_backward_fast(to_channels_last(x), cache)
    np.testing.assert_array_equal(dx, x)


# --- float64, one channel, conv_param's memory_format -------------------------------------------


@pytest.mark.parametrize(
    ("x_dtype", "w_dtype", "dout_dtype"),
    [
        (np.float64, np.float64, np.float64),
        (np.float64, np.float32, np.float32),
        (np.float32, np.float64, np.float32),
        (np.float32, np.float32, np.float64),
    ],
)
@pytest.mark.parametrize("algorithm", ["auto", "im2col", "winograd"])
@pytest.mark.parametrize("route", ["input", "conv_param"])
def test_float64_falls_back_to_the_contiguous_path(x_dtype, w_dtype, dout_dtype, algorithm, route):
    """A computation in float64 (any float64 operand) runs the contiguous kernels, with
    float64's standard against the naive layers, whatever the input's layout or
    conv_param's memory_format ask for."""
    rng = np.random.default_rng(6)
    x, w, b = random_arrays(rng, (2, 6, 7, 6), (5, 6, 3, 3))
    x, w, b = x.astype(x_dtype), w.astype(w_dtype), b.astype(w_dtype)
    param = {"stride": 1, "pad": 1, "algorithm": algorithm}
    if route == "input":
        x = to_channels_last(x)
    else:
        param["memory_format"] = "channels_last"
    out_ref, cache_ref = conv_forward_naive(x, w, b, param)
    out, cache = conv_forward_fast(x, w, b, param)
    dout = rng.standard_normal(out.shape).astype(dout_dtype)
    grads_ref = conv_backward_naive(dout, cache_ref)
    grads = conv_backward_fast(dout, cache)
    if np.float64 in (x_dtype, w_dtype):
        assert conv_algorithm_choice(
            x.shape, w.shape, param, memory_format="channels_last", dtype=np.float64
        ).name in {"im2col", "winograd"}
        assert out.dtype == np.float64 and out.flags.c_contiguous
        assert_matches(out, out_ref)
    else:  # a float32 forward pass, then its gradients for a float64 dout
        assert out.dtype == np.float32 and is_channels_last(out)
    for grad, ref in zip(grads, grads_ref, strict=True):
        assert grad.dtype == ref.dtype == np.float64
        assert_matches(grad, ref) if x_dtype == w_dtype == np.float64 else assert_matches(
            grad.astype(np.float32), ref.astype(np.float32)
        )


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "winograd"])
def test_a_one_channel_input_runs_channels_last_when_conv_param_asks(instruction_set, algorithm):
    """A one-channel image is C-contiguous in both layouts, so it counts as contiguous; its
    conv_param's memory_format sends it to the channels-last kernels all the same."""
    rng = np.random.default_rng(7)
    x, w, b = random_arrays(rng, (3, 1, 8, 7), (5, 1, 3, 3))
    assert not is_channels_last(to_channels_last(x))
    param = {"stride": 1, "pad": 1, "algorithm": algorithm, "memory_format": "channels_last"}
    assert conv_algorithm_choice(x.shape, w.shape, param).name in CHANNELS_LAST_PLANS
    out, cache = conv_forward_fast(x, w, b, param)
    assert is_channels_last(out)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    grads = conv_backward_fast(dout, cache)
    assert laid_out_channels_last(grads[0])
    for actual, expected in zip((out, *grads), naive_float32(x, w, b, dout, param), strict=True):
        assert_matches(actual, expected)


def test_conv_params_contiguous_format_wins_over_a_channels_last_input():
    rng = np.random.default_rng(8)
    x, w, b = random_arrays(rng, (2, 6, 7, 6), (5, 6, 3, 3))
    param = {"stride": 1, "pad": 1, "memory_format": "contiguous"}
    out, cache = conv_forward_fast(to_channels_last(x), w, b, param)
    assert out.flags.c_contiguous and cache.memory_format == "contiguous"
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = conv_backward_fast(dout, cache)
    assert dx.flags.c_contiguous
    for actual, expected in zip(
        (out, dx, dw, db), naive_float32(x, w, b, dout, param), strict=True
    ):
        assert_matches(actual, expected)


@pytest.mark.parametrize(
    "algorithm",
    ["auto", "im2col", "winograd"],
)
@pytest.mark.parametrize(
    ("x_shape", "w_shape"),
    [((2, 5, 6, 6), (0, 5, 3, 3)), ((2, 0, 6, 6), (4, 0, 3, 3))],
    ids=["no-filters", "no-channels"],
)
def test_no_filters_or_no_channels_run_the_contiguous_kernels(algorithm, x_shape, w_shape):
    """Nothing for the channels-last kernels to sum (they would leave their output unwritten
    or divide by a depth of 0): the contiguous path gives the empty output, or the bias
    alone, and zero gradients."""
    rng = np.random.default_rng(9)
    x, w, b = random_arrays(rng, x_shape, w_shape)
    param = {"stride": 1, "pad": 1, "algorithm": algorithm, "memory_format": "channels_last"}
    assert conv_algorithm_choice(x_shape, w_shape, param).name not in CHANNELS_LAST_PLANS
    out, cache = conv_forward_fast(x, w, b, param)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    grads = conv_backward_fast(dout, cache)
    for actual, expected in zip((out, *grads), naive_float32(x, w, b, dout, param), strict=True):
        assert_matches(actual, expected)


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "winograd"])
def test_no_images_on_the_channels_last_path(algorithm):
    """An empty batch: an empty channels-last output, zero filter and bias gradients."""
    rng = np.random.default_rng(9)
    x, w, b = random_arrays(rng, (0, 5, 6, 6), (4, 5, 3, 3))
    param = {"stride": 1, "pad": 1, "algorithm": algorithm, "memory_format": "channels_last"}
    assert conv_algorithm_choice(x.shape, w.shape, param).name in CHANNELS_LAST_PLANS
    out, cache = conv_forward_fast(x, w, b, param)
    assert out.shape == (0, 4, 6, 6) and out.dtype == np.float32
    dout = rng.standard_normal(out.shape).astype(np.float32)
    grads = conv_backward_fast(dout, cache)
    for actual, expected in zip((out, *grads), naive_float32(x, w, b, dout, param), strict=True):
        assert_matches(actual, expected)


# --- caches, layouts, inputs left alone -------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["winograd", "im2col"])
def test_caches_are_interchangeable_with_the_naive_layers(algorithm):
    """A channels-last cache feeds the naive backward pass, and a naive cache of a
    channels-last x the fast one."""
    rng = np.random.default_rng(20)
    x, w, b = random_arrays(rng, (2, 6, 7, 6), (5, 6, 3, 3))
    x = to_channels_last(x)
    param = {"stride": 1, "pad": 1, "algorithm": algorithm}
    out, fast_cache = conv_forward_fast(x, w, b, param)
    _, naive_cache = conv_forward_naive(x, w, b, param)
    dout = to_channels_last(rng.standard_normal(out.shape).astype(np.float32))
    expected = naive_float32(x, w, b, dout, param)[1:]
    for grads in (conv_backward_naive(dout, fast_cache), conv_backward_fast(dout, naive_cache)):
        for actual, wanted in zip(grads, expected, strict=True):
            assert_matches(actual, wanted)


@pytest.mark.parametrize("algorithm", ["winograd", "im2col"])
def test_any_layout_of_dout_and_the_filters_and_inputs_left_alone(algorithm, to_layout):
    """dout, w and b in any layout (Fortran, transposed, strided, reversed, read-only), a
    read-only or byte-swapped channels-last x: the same results, and no input changes."""
    rng = np.random.default_rng(21)
    x, w, b = random_arrays(rng, (2, 6, 7, 6), (5, 6, 3, 3))
    x = to_channels_last(x)
    param = {"stride": 1, "pad": 1, "algorithm": algorithm}
    out, cache = conv_forward_fast(x, w, b, param)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    expected = (out, *conv_backward_fast(dout, cache))
    frozen = x.copy(order="K")
    frozen.setflags(write=False)
    swapped = x.astype(x.dtype.newbyteorder())
    others = [to_layout(a) for a in (w, b, dout)]
    copies = [a.copy() for a in (frozen, *others)]
    for x_in in (frozen, swapped):
        out_in, cache_in = conv_forward_fast(x_in, *others[:2], param)
        results = (out_in, *conv_backward_fast(others[2], cache_in))
        assert is_channels_last(out_in) and laid_out_channels_last(results[1])
        for result, wanted in zip(results, expected, strict=True):
            assert_matches(result, wanted)
    for array, copy in zip((frozen, *others), copies, strict=True):
        np.testing.assert_array_equal(array, copy)


# --- threads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "w_shape, param",
    [
        ((12, 10, 3, 3), {"stride": 1, "pad": 1, "algorithm": "winograd"}),
        ((12, 10, 3, 2), {"stride": (2, 1), "pad": (1, 0), "algorithm": "im2col"}),
        ((12, 10, 1, 1), {"stride": 1, "pad": 0}),
    ],
    ids=["winograd", "im2col", "pointwise"],
)
def test_threads_change_only_the_order_of_sums(
    instruction_set, w_shape, param, restore_num_threads
):
    """With 1, 2 or 3 threads the output and dx are identical (every value is computed by
    one thread, in one order); dw and db, whose shares are added up, agree within float32's
    standard."""
    rng = np.random.default_rng(10)
    x, w, b = random_arrays(rng, (5, 10, 9, 11), w_shape)
    x = to_channels_last(x)
    runs = []
    for threads in (1, 2, 3):
        convnet.set_num_threads(threads)
        out, cache = conv_forward_fast(x, w, b, param)
        dout = to_channels_last(
            np.random.default_rng(11).standard_normal(out.shape).astype(np.float32)
        )
        runs.append((out, *conv_backward_fast(dout, cache)))
    for out, dx, dw, db in runs[1:]:
        np.testing.assert_array_equal(out, runs[0][0])
        np.testing.assert_array_equal(dx, runs[0][1])
        assert_matches(dw, runs[0][2])
        assert_matches(db, runs[0][3])


# --- bounded scratch memory --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel_size, pad, algorithm",
    [(1, 0, "auto"), (3, 1, "im2col"), (3, 1, "winograd"), (5, 2, "auto")],
)
def test_scratch_memory_does_not_grow_with_the_batch(
    kernel_size, pad, algorithm, restore_workspace_limit, restore_num_threads
):
    """Beyond the output and the gradients a channels-last pass needs its workspace and
    arrays the size of the filters, whatever the batch: 8 times the images take no more."""
    set_workspace_limit(2**20)
    convnet.set_num_threads(1)
    w = np.ones((32, 32, kernel_size, kernel_size), np.float32)
    param = {"stride": 1, "pad": pad, "algorithm": algorithm}
    small = extra_peak_mib(to_channels_last(np.ones((16, 32, 8, 8), np.float32)), w, param)
    large = extra_peak_mib(to_channels_last(np.ones((128, 32, 8, 8), np.float32)), w, param)
    assert large < small + 0.25, (small, large)
    assert large < 2.0, large


# --- bad input ---------------------------------------------------------------------------------

BAD_CONVOLUTIONS = {
    "x-3d": ((2, 3, 5), (4, 3, 3, 3), {}, ValueError, "4-dimensional"),
    "channel-mismatch": ((2, 3, 5, 5), (4, 2, 3, 3), {}, ValueError, "channel mismatch"),
    "kernel-too-large": (
        (2, 3, 2, 5),
        (4, 3, 5, 3),
        {"pad": 1},
        ValueError,
        "larger than the padded",
    ),
    "stride-zero": ((2, 3, 5, 5), (4, 3, 3, 3), {"stride": 0}, ValueError, "stride"),
    "stride-negative": ((2, 3, 5, 5), (4, 3, 3, 3), {"stride": (1, -1)}, ValueError, "stride"),
    "pad-negative": ((2, 3, 5, 5), (4, 3, 3, 3), {"pad": -1}, ValueError, "pad"),
    "dilation-zero": ((2, 3, 5, 5), (4, 3, 3, 3), {"dilation": 0}, ValueError, "dilation"),
    "memory-format-name": (
        (2, 3, 5, 5),
        (4, 3, 3, 3),
        {"memory_format": "nhwc"},
        ValueError,
        "memory_format",
    ),
    "memory-format-type": (
        (2, 3, 5, 5),
        (4, 3, 3, 3),
        {"memory_format": 1},
        TypeError,
        "memory_format",
    ),
    "algorithm-name": ((2, 3, 5, 5), (4, 3, 3, 3), {"algorithm": "fft"}, ValueError, "algorithm"),
}


@pytest.mark.parametrize("case", BAD_CONVOLUTIONS)
@pytest.mark.parametrize("route", ["input", "conv_param"])
def test_bad_input_gets_a_clear_error(case, route):
    x_shape, w_shape, extra, error, message = BAD_CONVOLUTIONS[case]
    x = np.ones(x_shape, np.float32)
    if route == "input" and x.ndim == 4:
        x = to_channels_last(x)
    param = {
        "stride": 1,
        "pad": 0,
        **({"memory_format": "channels_last"} if route == "conv_param" else {}),
        **extra,
    }
    w, b = np.ones(w_shape, np.float32), np.ones(w_shape[0], np.float32)
    with pytest.raises(error, match=message):
        conv_forward_fast(x, w, b, param)
    if x.ndim == 4:
        with pytest.raises(error, match=message):
            conv_algorithm_choice(x.shape, w_shape, param, memory_format="channels_last")


@pytest.mark.parametrize("dtype", [np.complex64, object, np.int32, np.float16])
def test_other_dtypes_are_refused(dtype):
    x = to_channels_last(np.ones((2, 3, 5, 5))).astype(dtype)
    w, b = np.ones((4, 3, 3, 3), np.float32), np.ones(4, np.float32)
    with pytest.raises(TypeError, match="dtype"):
        conv_forward_fast(x, w, b, {"stride": 1, "pad": 1, "memory_format": "channels_last"})
    _, cache = conv_forward_fast(
        x.real.astype(np.float32) if dtype is np.complex64 else np.ones(x.shape, np.float32),
        w,
        b,
        {"stride": 1, "pad": 1, "memory_format": "channels_last"},
    )
    with pytest.raises(TypeError, match="dtype"):
        conv_backward_fast(np.ones((2, 4, 5, 5), dtype), cache)


def test_a_dout_of_another_shape_is_refused():
    x = to_channels_last(np.ones((2, 3, 5, 5), np.float32))
    _, cache = conv_forward_fast(
        x, np.ones((4, 3, 3, 3), np.float32), np.ones(4, np.float32), {"stride": 1, "pad": 1}
    )
    with pytest.raises(ValueError, match="dout has shape"):
        conv_backward_fast(np.ones((2, 4, 5, 4), np.float32), cache)


def test_conv_algorithm_choice_checks_its_memory_format():
    with pytest.raises(ValueError, match="memory_format"):
        conv_algorithm_choice(
            (1, 4, 5, 5), (4, 4, 3, 3), {"stride": 1, "pad": 1}, memory_format="nhwc"
        )
