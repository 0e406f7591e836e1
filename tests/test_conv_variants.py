"""Dilated, grouped (depthwise included) and transposed convolution: gradient checks, fast
against naive, a direct definition of the transposed convolution, and bad parameters."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from conv_helpers import (
    as_pair,
    check_conv_matches_naive,
    check_fast_matches_naive,
    use_workspace_and_threads,
)
from gradients import check_gradients
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from layer_pairs import CONV, TRANSPOSE
from tolerances import assert_matches

from convnet import (
    _backend,
    _depthwise_conv,
    _im2col_conv,
    _phases,
    conv_plan,
    fast_layers,
    winograd,
)
from convnet._parallel import set_num_threads
from convnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    conv_transpose_backward_fast,
    conv_transpose_forward_fast,
)
from convnet.layers import (
    conv_backward_naive,
    conv_forward_naive,
    conv_transpose_backward_naive,
    conv_transpose_forward_naive,
)


class Case(NamedTuple):
    """A convolution (or transposed convolution) with groups and dilation.

    ``channels`` and ``filters`` are per group: the input has ``groups * channels``
    channels and the output ``groups * filters``.
    """

    num: int
    groups: int
    channels: int
    filters: int
    height: int
    width: int
    kernel_h: int
    kernel_w: int
    stride: int | tuple[int, int]
    pad: int | tuple[int, int]
    dilation: int | tuple[int, int]
    output_pad: int | tuple[int, int] = 0

    def conv_param(self) -> dict:
        return {
            "stride": self.stride,
            "pad": self.pad,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def transpose_param(self) -> dict:
        return {**self.conv_param(), "output_pad": self.output_pad}

    def x(self, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
        shape = (self.num, self.groups * self.channels, self.height, self.width)
        return rng.standard_normal(shape).astype(dtype)

    def conv_arrays(self, rng: np.random.Generator, dtype=np.float64):
        """x, w (F, C // groups, kh, kw), b."""
        w_shape = (self.groups * self.filters, self.channels, self.kernel_h, self.kernel_w)
        b = rng.standard_normal(self.groups * self.filters).astype(dtype)
        return self.x(rng, dtype), rng.standard_normal(w_shape).astype(dtype), b

    def transpose_arrays(self, rng: np.random.Generator, dtype=np.float64):
        """x, w (C, F // groups, kh, kw), b."""
        w_shape = (self.groups * self.channels, self.filters, self.kernel_h, self.kernel_w)
        b = rng.standard_normal(self.groups * self.filters).astype(dtype)
        return self.x(rng, dtype), rng.standard_normal(w_shape).astype(dtype), b

    def conv_out(self) -> tuple[int, int]:
        (sh, sw), (ph, pw), (dh, dw) = map(as_pair, (self.stride, self.pad, self.dilation))
        return (
            (self.height + 2 * ph - dh * (self.kernel_h - 1) - 1) // sh + 1,
            (self.width + 2 * pw - dw * (self.kernel_w - 1) - 1) // sw + 1,
        )

    def transpose_out(self) -> tuple[int, int]:
        (sh, sw), (ph, pw), (dh, dw), (oh, ow) = map(
            as_pair, (self.stride, self.pad, self.dilation, self.output_pad)
        )
        return (
            (self.height - 1) * sh - 2 * ph + dh * (self.kernel_h - 1) + oh + 1,
            (self.width - 1) * sw - 2 * pw + dw * (self.kernel_w - 1) + ow + 1,
        )


def transpose_by_definition(x, w, b, case: Case) -> np.ndarray:
    """The transposed convolution written as what it is: each input element scatters its
    taps ``x[n, c, i, j] * w[c, f]`` to ``(i*s - p + a*d, j*s - p + e*d)`` of its group."""
    (sh, sw), (ph, pw), (dh, dw) = map(as_pair, (case.stride, case.pad, case.dilation))
    out_h, out_w = case.transpose_out()
    out = np.zeros((case.num, case.groups * case.filters, out_h, out_w))
    for n, c, i, j, a, e in np.ndindex(*x.shape, case.kernel_h, case.kernel_w):
        row, col = i * sh - ph + a * dh, j * sw - pw + e * dw
        if 0 <= row < out_h and 0 <= col < out_w:
            group = c // case.channels
            filters = slice(group * case.filters, (group + 1) * case.filters)
            out[n, filters, row, col] += x[n, c, i, j] * w[c, :, a, e]
    return out + b[:, None, None]


CONV_CASES = [
    Case(2, 1, 2, 2, 6, 5, 3, 2, 1, 2, 2),
    Case(1, 2, 2, 2, 4, 5, 3, 3, (2, 1), (1, 2), (1, 2)),
    Case(1, 3, 1, 1, 5, 5, 3, 3, 1, 1, 1),
    Case(2, 2, 1, 2, 6, 4, 2, 3, (1, 2), 1, (2, 1)),
    Case(2, 3, 2, 1, 4, 4, 1, 1, 1, 0, 3),
]
TRANSPOSE_CASES = [
    Case(2, 1, 2, 3, 3, 2, 3, 3, 2, 1, 1, 1),
    Case(2, 2, 2, 1, 2, 3, 4, 2, (2, 1), (1, 0), 1, (1, 0)),
    Case(1, 3, 1, 1, 3, 3, 3, 3, 1, 1, 2, 1),
    Case(2, 2, 1, 2, 2, 2, 2, 3, 3, (0, 1), (1, 2), (2, 1)),
    Case(2, 1, 3, 2, 3, 3, 1, 1, 1, 0, 1),
    Case(1, 1, 2, 2, 2, 3, 1, 1, 1, 0, (1, 2), (0, 1)),  # 1x1 whose output outgrows x
]


def _ids(cases: list[Case]) -> list[str]:
    return [
        f"g{c.groups}c{c.channels}f{c.filters}_k{c.kernel_h}x{c.kernel_w}_s{c.stride}_p{c.pad}"
        f"_d{c.dilation}_op{c.output_pad}".replace(" ", "")
        for c in cases
    ]


# --- gradient checks --------------------------------------------------------------------------


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv_gradients(impl, case, rng):
    check_gradients(*CONV[impl], case.conv_arrays(rng), case.conv_param())


@pytest.mark.parametrize("impl", TRANSPOSE)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=_ids(TRANSPOSE_CASES))
def test_transpose_gradients(impl, case, rng):
    check_gradients(*TRANSPOSE[impl], case.transpose_arrays(rng), case.transpose_param())


@pytest.mark.parametrize("impl", TRANSPOSE)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=_ids(TRANSPOSE_CASES))
def test_transpose_matches_its_definition(impl, case, rng):
    x, w, b = case.transpose_arrays(rng)
    out, _ = TRANSPOSE[impl][0](x, w, b, case.transpose_param())
    assert out.shape == (case.num, case.groups * case.filters, *case.transpose_out())
    assert_matches(out, transpose_by_definition(x, w, b, case))


def test_dilated_conv_known_value():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    w = np.ones((1, 1, 2, 2))
    for forward, _ in CONV.values():
        out, _ = forward(x, w, np.zeros(1), {"stride": 1, "pad": 0, "dilation": (2, 3)})
        # taps (0, 0), (0, 3), (2, 0), (2, 3): x[i, j] + x[i, j+3] + x[i+2, j] + x[i+2, j+3]
        np.testing.assert_array_equal(out[0, 0], [[26.0, 30.0], [46.0, 50.0], [66.0, 70.0]])


def test_depthwise_conv_keeps_channels_apart():
    x = np.stack([np.full((3, 3), 1.0), np.full((3, 3), 10.0)])[None]
    w = np.stack([np.ones((1, 3, 3)), -np.ones((1, 3, 3))])
    for forward, _ in CONV.values():
        out, _ = forward(x, w, np.zeros(2), {"stride": 1, "pad": 0, "groups": 2})
        np.testing.assert_array_equal(out.reshape(2), [9.0, -90.0])


def test_conv_input_gradient_is_the_transposed_convolution(rng):
    case = Case(2, 2, 2, 3, 6, 7, 3, 3, 2, 1, (1, 2))  # needs output_pad (1, 0)
    x, w, b = case.conv_arrays(rng)
    out, cache = conv_forward_naive(x, w, b, case.conv_param())
    dout = rng.standard_normal(out.shape)
    dx, _, _ = conv_backward_naive(dout, cache)
    (ph, pw), (sh, sw) = as_pair(case.pad), as_pair(case.stride)
    extra = [
        x.shape[2 + a] - ((out.shape[2 + a] - 1) * s - 2 * p + d * (k - 1) + 1)
        for a, s, p, d, k in zip(
            (0, 1),
            (sh, sw),
            (ph, pw),
            as_pair(case.dilation),
            (case.kernel_h, case.kernel_w),
            strict=True,
        )
    ]
    assert extra == [1, 0]
    param = {**case.conv_param(), "output_pad": tuple(extra)}
    for forward, _ in TRANSPOSE.values():
        transposed, _ = forward(dout, w, np.zeros(x.shape[1]), param)
        assert_matches(transposed, dx)


# --- fast against naive -----------------------------------------------------------------------


@st.composite
def conv_cases(draw, transpose: bool = False):
    """Valid cases: groups (one input channel per group among them), dilation, output_pad."""
    kernel_h, kernel_w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    span = (dilation[0] * (kernel_h - 1) + 1, dilation[1] * (kernel_w - 1) + 1)
    if transpose:
        height, width = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        output_pad = tuple(draw(st.integers(0, max(stride[a], dilation[a]) - 1)) for a in (0, 1))
        pad = tuple(
            min(pad[a], (((height, width)[a] - 1) * stride[a] + span[a] - 1) // 2) for a in (0, 1)
        )
    else:
        height = draw(st.integers(max(1, span[0] - 2 * pad[0]), span[0] + 4))
        width = draw(st.integers(max(1, span[1] - 2 * pad[1]), span[1] + 4))
        output_pad = (0, 0)
    return Case(
        draw(st.integers(0, 3)),
        draw(st.integers(1, 4)),
        draw(st.sampled_from([1, 1, 2])),
        draw(st.integers(1, 2)),
        height,
        width,
        kernel_h,
        kernel_w,
        stride,
        pad,
        dilation,
        output_pad,
    )


THREADED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
# dtype, workspace limit (None: the default), worker threads and seed of one example.
RUN = {
    "dtype": st.sampled_from([np.float32, np.float64]),
    "workspace": st.sampled_from([None, 1]),
    "threads": st.integers(1, 3),
    "seed": st.integers(0, 2**32 - 1),
}


@THREADED
@given(case=conv_cases(), **RUN)
def test_conv_fast_matches_naive(
    case, dtype, workspace, threads, seed, restore_workspace_limit, restore_num_threads
):
    use_workspace_and_threads(workspace, threads)
    arrays = case.conv_arrays(np.random.default_rng(seed), dtype)
    cache, _ = check_fast_matches_naive(CONV["naive"], CONV["fast"], arrays, case.conv_param())
    dout = np.ones((case.num, arrays[1].shape[0], *case.conv_out()), dtype)
    dx_none, dw, _ = conv_backward_fast(dout, cache, compute_dx=False)
    assert dx_none is None
    assert_matches(dw, conv_backward_naive(dout, cache)[1])


@THREADED
@given(case=conv_cases(transpose=True), **RUN)
def test_transpose_fast_matches_naive(
    case, dtype, workspace, threads, seed, restore_workspace_limit, restore_num_threads
):
    use_workspace_and_threads(workspace, threads)
    arrays = case.transpose_arrays(np.random.default_rng(seed), dtype)
    check_fast_matches_naive(TRANSPOSE["naive"], TRANSPOSE["fast"], arrays, case.transpose_param())


DEPTHWISE_CASES = [
    Case(3, 4, 1, 1, 6, 7, 3, 3, 1, 1, 1),
    Case(2, 3, 1, 2, 6, 7, 3, 4, 1, (2, 1), (2, 1)),
    Case(2, 2, 1, 1, 5, 6, 2, 5, 1, 0, 1),
    Case(3, 3, 1, 2, 7, 6, 3, 2, (2, 1), (1, 0), (1, 2)),
    Case(2, 2, 1, 3, 5, 5, 5, 5, 3, 2, 1),
]


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=_ids(DEPTHWISE_CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_depthwise_fast_matches_naive(case, dtype, threads, restore_num_threads):
    set_num_threads(threads)
    rng = np.random.default_rng(5)
    check_fast_matches_naive(
        CONV["naive"], CONV["fast"], case.conv_arrays(rng, dtype), case.conv_param()
    )
    check_fast_matches_naive(
        TRANSPOSE["naive"],
        TRANSPOSE["fast"],
        case.transpose_arrays(rng, dtype),
        case.transpose_param(),
    )


NAN_CASES = [
    *DEPTHWISE_CASES,
    CONV_CASES[0],
    CONV_CASES[1],
]


@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "transpose"])
@pytest.mark.parametrize("case", NAN_CASES, ids=_ids(NAN_CASES))
@pytest.mark.parametrize("where", ["x", "w", "dout"])
def test_nan_reaches_the_same_elements_as_in_the_naive_layers(transpose, case, where):
    """A NaN (or an infinity) reaches exactly the outputs and gradients it touches."""
    rng = np.random.default_rng(11)
    layers = TRANSPOSE if transpose else CONV
    param = case.transpose_param() if transpose else case.conv_param()
    x, w, b = case.transpose_arrays(rng) if transpose else case.conv_arrays(rng)
    out, _ = layers["naive"][0](x, w, b, param)
    dout = rng.standard_normal(out.shape)
    arrays = {"x": x, "w": w, "dout": dout}
    target = arrays[where]
    for value, index in ((np.nan, 0), (np.inf, target.size - 1), (np.nan, target.size // 2)):
        poisoned = {key: array.copy() for key, array in arrays.items()}
        poisoned[where].flat[index] = value
        results = []
        for forward, backward in layers.values():
            with np.errstate(invalid="ignore"):  # infinity times zero
                out, cache = forward(poisoned["x"], poisoned["w"], b, param)
                results.append([out, *backward(poisoned["dout"], cache)])
        for fast, naive in zip(results[1], results[0], strict=True):
            np.testing.assert_array_equal(np.isnan(fast), np.isnan(naive))
            np.testing.assert_array_equal(np.isinf(fast), np.isinf(naive))


@pytest.mark.parametrize("impl", CONV)
def test_conv_accepts_and_ignores_an_algorithm_key(impl, rng):
    case = CONV_CASES[0]
    x, w, b = case.conv_arrays(rng)
    out, _ = CONV[impl][0](x, w, b, case.conv_param())
    out_with, _ = CONV[impl][0](x, w, b, {**case.conv_param(), "algorithm": "im2col"})
    np.testing.assert_array_equal(out_with, out)


@pytest.mark.parametrize(
    ("forward", "backward"),
    [
        (conv_transpose_forward_naive, conv_transpose_backward_fast),
        (conv_transpose_forward_fast, conv_transpose_backward_naive),
    ],
    ids=["naive-cache-to-fast", "fast-cache-to-naive"],
)
def test_transpose_caches_are_interchangeable(forward, backward, rng):
    case = TRANSPOSE_CASES[1]
    x, w, b = case.transpose_arrays(rng)
    out, cache = conv_transpose_forward_naive(x, w, b, case.transpose_param())
    dout = rng.standard_normal(out.shape)
    expected = conv_transpose_backward_naive(dout, cache)
    _, cache = forward(x, w, b, case.transpose_param())
    for grad, ref in zip(backward(dout, cache), expected, strict=True):
        assert_matches(grad, ref)


@pytest.mark.parametrize("impl", TRANSPOSE)
def test_transpose_any_layout_and_inputs_untouched(impl, to_layout, rng):
    forward, backward = TRANSPOSE[impl]
    case = TRANSPOSE_CASES[3]
    arrays = case.transpose_arrays(rng)
    out_ref, cache = forward(*arrays, case.transpose_param())
    dout = rng.standard_normal(out_ref.shape)
    grads_ref = backward(dout, cache)
    views = [to_layout(a) for a in (*arrays, dout)]
    copies = [v.copy() for v in views]
    out, cache = forward(*views[:3], case.transpose_param())
    assert_matches(out, out_ref)
    for grad, ref in zip(backward(views[3], cache), grads_ref, strict=True):
        assert_matches(grad, ref)
    for view, copy in zip(views, copies, strict=True):
        np.testing.assert_array_equal(view, copy)


@pytest.mark.parametrize("impl", TRANSPOSE)
@pytest.mark.parametrize(
    ("x_dtype", "w_dtype", "expected"),
    [(np.float32, np.float32, np.float32), (np.float32, np.float64, np.float64)],
)
def test_transpose_output_dtype(impl, x_dtype, w_dtype, expected, rng):
    forward, backward = TRANSPOSE[impl]
    case = TRANSPOSE_CASES[0]
    x, w, b = case.transpose_arrays(rng)
    out, cache = forward(
        x.astype(x_dtype), w.astype(w_dtype), b.astype(w_dtype), case.transpose_param()
    )
    assert out.dtype == expected
    assert all(g.dtype == expected for g in backward(np.ones(out.shape, x_dtype), cache))


@pytest.mark.parametrize("impl", TRANSPOSE)
def test_transpose_empty_batch(impl, rng):
    forward, backward = TRANSPOSE[impl]
    case = TRANSPOSE_CASES[1]._replace(num=0)
    x, w, b = case.transpose_arrays(rng)
    out, cache = forward(x, w, b, case.transpose_param())
    assert out.shape == (0, b.shape[0], *case.transpose_out())
    dx, dw, db = backward(np.zeros(out.shape), cache)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros_like(b))


# --- bad parameters ------------------------------------------------------------------------------


def good_conv():
    """x (2, 4, 6, 6), w (6, 2, 3, 3) with groups 2, b (6,)."""
    return np.zeros((2, 4, 6, 6)), np.zeros((6, 2, 3, 3)), np.zeros(6)


CONV_ERRORS = {
    "groups-not-dividing-C": (
        {"groups": 3},
        (np.zeros((2, 4, 6, 6)), np.zeros((6, 1, 3, 3)), np.zeros(6)),
        ValueError,
        r"groups = 3 must divide the input channels, got 4",
    ),
    "groups-not-dividing-F": (
        {"groups": 4},
        (np.zeros((2, 4, 6, 6)), np.zeros((6, 1, 3, 3)), np.zeros(6)),
        ValueError,
        r"groups = 4 must divide the output \(F\) channels, got 6",
    ),
    "w-channels-for-groups": (
        {"groups": 2},
        (np.zeros((2, 4, 6, 6)), np.zeros((6, 4, 3, 3)), np.zeros(6)),
        ValueError,
        r"channel mismatch: x has 4 channels .* w expects 8 \(4 per group x 2 groups",
    ),
    "groups-0": ({"groups": 0}, None, ValueError, r"groups must be >= 1, got 0"),
    "groups-float": ({"groups": 2.0}, None, TypeError, r"groups must be an integer"),
    "dilation-0": ({"dilation": 0}, None, ValueError, r"dilation must be >= 1, got 0"),
    "dilation-pair-negative": (
        {"dilation": (1, -1)},
        None,
        ValueError,
        r"dilation\[1\] must be >= 1, got -1",
    ),
    "dilated-kernel-too-big": (
        {"dilation": (3, 1)},
        None,
        ValueError,
        r"spans 7x3, larger than the padded input 6x6",
    ),
}


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("case", CONV_ERRORS)
def test_conv_rejects_bad_groups_and_dilation(impl, case):
    extra, arrays, error, message = CONV_ERRORS[case]
    param = {"stride": 1, "pad": 0, "groups": 2, **extra}
    with pytest.raises(error, match=message):
        CONV[impl][0](*(arrays or good_conv()), param)


def good_transpose():
    """x (2, 4, 3, 3), w (4, 3, 3, 3) with groups 2 (F = 6), b (6,)."""
    return np.zeros((2, 4, 3, 3)), np.zeros((4, 3, 3, 3)), np.zeros(6)


TRANSPOSE_ERRORS = {
    "output-pad-not-below-stride-or-dilation": (
        {"stride": 2, "output_pad": 2},
        None,
        ValueError,
        r"output_pad\[0\] = 2 must be smaller than the stride \(2\) or the dilation \(1\)",
    ),
    "output-pad-pair": (
        {"output_pad": (0, 1)},
        None,
        ValueError,
        r"output_pad\[1\] = 1 must be smaller than the stride \(1\) or the dilation \(1\)",
    ),
    "output-pad-negative": ({"output_pad": -1}, None, ValueError, r"output_pad must be >= 0"),
    "groups-not-dividing-C": (
        {"groups": 3},
        (np.zeros((2, 4, 3, 3)), np.zeros((4, 3, 3, 3)), np.zeros(9)),
        ValueError,
        r"groups = 3 must divide the input channels, got 4",
    ),
    "w-channels": (
        {},
        (np.zeros((2, 4, 3, 3)), np.zeros((3, 3, 3, 3)), np.zeros(6)),
        ValueError,
        r"channel mismatch: x has 4 channels",
    ),
    "bias-length": (
        {},
        (np.zeros((2, 4, 3, 3)), np.zeros((4, 3, 3, 3)), np.zeros(3)),
        ValueError,
        r"b must have length F = 6",
    ),
    "empty-output": (
        {"pad": 3},
        None,
        ValueError,
        r"gives a -1x-1 output: both must be at least 1x1",
    ),
    "dilation-0": ({"dilation": 0}, None, ValueError, r"dilation must be >= 1"),
    "missing-stride": ({"stride": None}, None, ValueError, r"missing the key 'stride'"),
}


@pytest.mark.parametrize("impl", TRANSPOSE)
@pytest.mark.parametrize("case", TRANSPOSE_ERRORS)
def test_transpose_rejects_bad_parameters(impl, case):
    extra, arrays, error, message = TRANSPOSE_ERRORS[case]
    param = {"stride": 1, "pad": 0, "groups": 2, **extra}
    param = {key: value for key, value in param.items() if value is not None}
    with pytest.raises(error, match=message):
        TRANSPOSE[impl][0](*(arrays or good_transpose()), param)


def test_output_pad_may_reach_the_stride_when_below_the_dilation(rng):
    case = Case(1, 1, 2, 2, 3, 3, 3, 3, 1, 0, 2, 1)
    x, w, b = case.transpose_arrays(rng)
    for forward, _ in TRANSPOSE.values():
        out, _ = forward(x, w, b, case.transpose_param())
        assert_matches(out, transpose_by_definition(x, w, b, case))


# --- caches that do not belong to the forward pass ----------------------------------------------


@pytest.mark.parametrize("impl", TRANSPOSE)
@pytest.mark.parametrize("cache", [None, (), (1, 2), "cache", [np.ones(3)] * 4])
def test_transpose_malformed_caches_are_a_type_error(impl, cache):
    with pytest.raises(TypeError, match="cache"):
        TRANSPOSE[impl][1](np.ones((2, 2, 2, 2)), cache)


@pytest.mark.parametrize("impl", TRANSPOSE)
def test_transpose_refuses_a_cache_that_does_not_fit_together(impl, rng):
    case = TRANSPOSE_CASES[0]
    x, w, b = case.transpose_arrays(rng)
    out, cache = TRANSPOSE[impl][0](x, w, b, case.transpose_param())
    backward = TRANSPOSE[impl][1]
    dout = np.ones(out.shape)
    with pytest.raises(ValueError, match=r"does not fit together|output_pad"):
        backward(dout, cache._replace(x=np.ones((2, 2, 2, 2))))
    with pytest.raises(ValueError, match="channel mismatch"):
        backward(dout, cache._replace(w=np.ones((3, 3, 3, 3))))
    with pytest.raises(TypeError, match="geometry"):
        backward(dout, cache._replace(geometry=(1, 2, 3)))
    with pytest.raises(TypeError, match="geometry must hold integers"):
        backward(dout, cache._replace(geometry=cache.geometry._replace(conv=(1.0,) * 9)))


@pytest.mark.parametrize("impl", CONV)
def test_conv_cache_keeps_groups_and_dilation(impl, rng):
    case = CONV_CASES[1]
    x, w, b = case.conv_arrays(rng)
    out, cache = CONV[impl][0](x, w, b, case.conv_param())
    with pytest.raises(ValueError, match=r"does not fit together|channel mismatch"):
        CONV[impl][1](
            np.ones(out.shape), cache._replace(geometry=cache.geometry._replace(groups=1))
        )


@pytest.mark.skipif(_backend.winograd_kernel is None, reason="no Winograd kernel")
@pytest.mark.parametrize("extra", [{"dilation": 2}, {"groups": 2}])
def test_winograd_is_refused_for_dilated_or_grouped_convolution(extra, rng):
    x, w, b = np.zeros((1, 2, 7, 7)), np.zeros((2, 2 // extra.get("groups", 1), 3, 3)), np.zeros(2)
    param = {"stride": 1, "pad": 2, "algorithm": "winograd", **extra}
    with pytest.raises(ValueError, match=r"needs 3x3 filters and stride 1 \(dilation 1"):
        conv_forward_fast(x, w, b, param)
    out, _ = conv_forward_fast(x, w, b, {**param, "algorithm": "auto"})
    assert_matches(out, conv_forward_naive(x, w, b, param)[0])


def test_auto_never_sends_a_dilated_or_grouped_convolution_to_winograd(rng):
    """A dilated one may run as Winograd on its phases (named so); a grouped one by
    im2col, a depthwise one by the direct loop."""
    x = rng.standard_normal((4, 64, 16, 16))
    choices = {"dilation": 2, "groups": 2}
    expected = {"dilation": ("winograd-phases", "im2col"), "groups": ("im2col",)}
    for key, value in choices.items():
        param = {"stride": 1, "pad": 2, key: value}
        w_shape = (64, 64 // param.get("groups", 1), 3, 3)
        assert fast_layers.conv_algorithm_choice(x.shape, w_shape, param)[0] in expected[key]
    depthwise = {"stride": 1, "pad": 1, "groups": 64}
    assert fast_layers.conv_algorithm_choice(x.shape, (64, 1, 3, 3), depthwise) == ("direct", 0)


# --- the algorithm reported is the algorithm run ---------------------------------------------

# What each plan runs, entry point by entry point, in the forward and in the backward pass.
RUNS = {
    "im2col": lambda tile: [("im2col",)],
    "direct": lambda tile: [("direct",)],
    "winograd": lambda tile: [("winograd", tile)],
    "winograd-phases": lambda tile: [("phases",), ("winograd", tile)],
}
# Thresholds of 'auto' low enough for small shapes to reach Winograd sometimes.
LOW_RULES = {"WINOGRAD_MIN_CHANNELS": 1, "WINOGRAD_MIN_PIXELS": 0, "WINOGRAD_MIN_PIXEL_CHANNELS": 0}


@st.composite
def planned_convolutions(draw) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(x shape, w shape, conv_param) of any algorithm: grouped, depthwise, dilated, strided,
    3x3 or not, with any request."""
    if draw(st.booleans()):  # 3x3, stride 1, one group: Winograd's (dilated: its phases')
        groups, (kernel_h, kernel_w), stride = 1, (3, 3), 1
    else:
        groups = draw(st.sampled_from([1, 2, 4]))
        kernel_h, kernel_w = draw(st.sampled_from([(3, 3), (1, 1), (2, 3)]))
        stride = draw(st.sampled_from([1, 2]))
    depthwise = groups > 1 and draw(st.booleans())
    channels = 1 if depthwise else draw(st.integers(1, 3))
    dilation = draw(st.sampled_from([1, 1, 2, 3]))
    pad = draw(st.integers(0, 3))
    # Output sizes that are multiples of the dilation give phases of one shape.
    out_h, out_w = (
        draw(st.integers(1, 9) | st.integers(1, 4).map(lambda size: size * dilation))
        for _ in range(2)
    )
    height = (out_h - 1) * stride + dilation * (kernel_h - 1) + 1 - 2 * pad
    width = (out_w - 1) * stride + dilation * (kernel_w - 1) + 1 - 2 * pad
    assume(height >= 1 and width >= 1)
    param = {
        "stride": stride,
        "pad": pad,
        "dilation": dilation,
        "groups": groups,
        "algorithm": draw(st.sampled_from(["auto", "auto", "auto", "im2col", "winograd"])),
    }
    x_shape = (draw(st.integers(1, 3)), groups * channels, height, width)
    w_shape = (groups * draw(st.integers(1, 3)), channels, kernel_h, kernel_w)
    return x_shape, w_shape, param


@pytest.mark.skipif(_backend.kernel is None, reason="no compiled kernel")
@given(
    conv=planned_convolutions(),
    rules=st.sampled_from([{}, LOW_RULES, LOW_RULES]),
    seed=st.integers(0, 2**32 - 1),
)
@example(conv=((2, 8, 6, 6), (8, 8, 3, 3), {"stride": 1, "pad": 1}), rules=LOW_RULES, seed=0)
@example(conv=((2, 8, 6, 6), (8, 8, 3, 3), {"stride": 1, "pad": 1}), rules={}, seed=0)
@example(conv=((2, 4, 6, 6), (4, 1, 3, 3), {"stride": 1, "pad": 1, "groups": 4}), rules={}, seed=0)
@example(
    conv=((2, 8, 8, 8), (8, 8, 3, 3), {"stride": 1, "pad": 2, "dilation": 2}),
    rules=LOW_RULES,
    seed=0,
)
@example(
    conv=((1, 8, 7, 6), (8, 8, 3, 3), {"stride": 1, "pad": 2, "dilation": 2}),
    rules=LOW_RULES,
    seed=0,
)
def test_the_reported_algorithm_is_the_one_forward_and_backward_run(conv, rules, seed):
    """conv_algorithm_choice, the forward and the backward pass share one plan: the entry
    points of the algorithms record what runs."""
    x_shape, w_shape, param = conv
    rng = np.random.default_rng(seed)
    x, w, b = (rng.standard_normal(shape) for shape in (x_shape, w_shape, w_shape[:1]))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in rules.items():
            patch.setattr(conv_plan, name, value)
        try:
            name, tile = fast_layers.conv_algorithm_choice(x_shape, w_shape, param)
        except ValueError:
            with pytest.raises(ValueError, match="algorithm 'winograd' needs"):
                conv_forward_fast(x, w, b, param)
            return
        ran: list[tuple] = []

        def spy(module, function: str, label: str, tile_argument: int | None = None) -> None:
            original = getattr(module, function)

            def recorded(*args, **kwargs):
                ran.append((label,) if tile_argument is None else (label, args[tile_argument]))
                return original(*args, **kwargs)

            patch.setattr(module, function, recorded)

        for function in ("correlate", "gradients"):
            spy(_im2col_conv, function, "im2col")
            spy(_depthwise_conv, function, "direct")
        spy(winograd, "forward", "winograd", tile_argument=5)
        spy(winograd, "backward", "winograd", tile_argument=5)
        spy(_phases, "phase_input", "phases")
        out, cache = conv_forward_fast(x, w, b, param)
        forward, ran[:] = list(ran), []
        conv_backward_fast(rng.standard_normal(out.shape), cache)
    assert forward == RUNS[name](tile), (name, tile)
    assert ran == RUNS[name](tile), (name, tile)


# --- dilated 3x3 stride-1 convolution as Winograd on its phases ---------------------------------

PHASE_CASES = [
    (3, 8, 8, 6, 6, 2, 2, np.float64),
    (2, 8, 9, 8, 10, (1, 3), 2, np.float64),
    (2, 9, 8, 5, 7, (2, 1), 3, np.float64),
    (3, 8, 8, 6, 6, 2, 2, np.float32),
    (2, 8, 8, 9, 6, 3, 3, np.float64),
    (2, 8, 9, 6, 8, (4, 2), 2, np.float32),
]


@pytest.fixture
def winograd_for_small_convolutions(monkeypatch: pytest.MonkeyPatch) -> None:
    if _backend.winograd_kernel is None:
        pytest.skip("no Winograd kernel")
    monkeypatch.setattr(conv_plan, "WINOGRAD_MIN_PIXELS", 0)
    monkeypatch.setattr(conv_plan, "WINOGRAD_MIN_PIXEL_CHANNELS", 0)


@pytest.mark.parametrize("case", PHASE_CASES, ids=[str(case[:7]) for case in PHASE_CASES])
@pytest.mark.parametrize("threads", [1, 2])
def test_dilated_conv_by_phases_matches_naive(
    case, threads, winograd_for_small_convolutions, restore_num_threads
):
    set_num_threads(threads)
    num, channels, filters, height, width, pad, dilation, dtype = case
    rng = np.random.default_rng(8)
    x = rng.standard_normal((num, channels, height, width)).astype(dtype)
    w = rng.standard_normal((filters, channels, 3, 3)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype)
    param = {"stride": 1, "pad": pad, "dilation": dilation}
    (pad_h, pad_w), span = as_pair(pad), 2 * dilation
    out_shape = (num, filters, height + 2 * pad_h - span, width + 2 * pad_w - span)
    dout = rng.standard_normal(out_shape).astype(dtype)
    cache = check_conv_matches_naive(x, w, b, dout, param)
    assert conv_plan.phase_dilation("auto", x.shape, w.shape, cache.geometry) == dilation


def test_dilated_conv_by_phases_only_when_the_phases_share_one_shape(
    winograd_for_small_convolutions,
):
    param = {"stride": 1, "pad": 2, "dilation": 2}
    x, w, b = np.zeros((2, 8, 7, 6)), np.zeros((8, 8, 3, 3)), np.zeros(8)
    _, cache = conv_forward_fast(x, w, b, param)
    assert conv_plan.phase_dilation("auto", x.shape, w.shape, cache.geometry) == 0
    _, cache = conv_forward_fast(x, w, b, {**param, "algorithm": "im2col"})
    assert conv_plan.phase_dilation("im2col", x.shape, w.shape, cache.geometry) == 0


@pytest.mark.parametrize(
    ("shape", "pad", "dilation", "pads"),
    [
        ((6, 6), 2, 2, (1, 1)),
        ((9, 6), (3, 6), 3, (1, 2)),
        ((6, 6), 0, 2, (0, 0)),
        ((8, 10), (1, 3), 2, None),
        ((7, 6), 2, 2, None),
        ((6, 6), (2, 1), 2, None),
    ],
)
def test_dilated_conv_phases_come_from_x_when_sizes_and_pads_are_multiples_of_d(
    shape, pad, dilation, pads
):
    x, w, b = np.zeros((1, 1, *shape)), np.zeros((1, 1, 3, 3)), np.zeros(1)
    _, cache = conv_forward_naive(x, w, b, {"stride": 1, "pad": pad, "dilation": dilation})
    assert _phases.phase_pads(x.shape, cache.geometry, dilation) == pads


@pytest.mark.skipif(_backend.kernel is None, reason="no compiled kernel")
@pytest.mark.parametrize("dilation", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_phase_split_and_merge_match_strided_slices(dilation, dtype, threads, restore_num_threads):
    set_num_threads(threads)
    num, channels, height, width = 3, 2, 2 * dilation, 3 * dilation
    images = np.random.default_rng(4).standard_normal((num, channels, height, width)).astype(dtype)
    phases = _phases.split_phases(images, dilation)
    expected = np.concatenate(
        [images[:, :, r::dilation, s::dilation] for r in range(dilation) for s in range(dilation)]
    )
    assert phases.dtype == dtype
    np.testing.assert_array_equal(phases, expected)
    np.testing.assert_array_equal(_phases.merge_phases(phases, dilation, images.shape), images)


@pytest.mark.parametrize("where", ["x", "w", "dout"])
def test_dilated_conv_by_phases_places_nan_as_the_naive_layer(
    where, winograd_for_small_convolutions
):
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 8, 6, 6)), rng.standard_normal((8, 8, 3, 3)), np.zeros(8)
    param = {"stride": 1, "pad": 2, "dilation": 2}
    dout = rng.standard_normal((2, 8, 6, 6))
    arrays = {"x": x, "w": w, "dout": dout}
    arrays[where].flat[arrays[where].size // 3] = np.nan
    results = []
    for forward, backward in CONV.values():
        with np.errstate(invalid="ignore"):
            out, cache = forward(arrays["x"], arrays["w"], b, param)
            results.append([out, *backward(arrays["dout"], cache)])
    for fast, naive in zip(results[1], results[0], strict=True):
        np.testing.assert_array_equal(np.isnan(fast), np.isnan(naive))
