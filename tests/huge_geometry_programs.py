"""Property checks that tests/test_huge_geometry.py runs in a child process:
``python huge_geometry_programs.py FAMILY``.

Every compiled path gets tiny inputs with strides, pads and dilations drawn from small
values and from values near 2**31 (the largest the layers take). Each call must either
match a reference computed here by direct loops over Python integers (which cannot
overflow), or raise a ``ValueError`` when the geometry is invalid or the output could not
be allocated on this machine; nothing else, and never a crash, which is why this runs in
its own process. The child prints ``ok FAMILY EXAMPLES`` when every example held.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convnet import conv_plan, fast_layers, layers
from convnet.fast_activation import relu_backward_fast, relu_forward_fast
from convnet.fast_normalization import (
    spatial_batchnorm_backward_fast,
    spatial_batchnorm_forward_fast,
)
from convnet.normalization import spatial_batchnorm_backward, spatial_batchnorm_forward

MAX_OUTPUT = 512  # outputs larger than this (and allocatable) take too long to check here
MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
LARGEST = 2**31 - 1
HUGE = st.one_of(
    st.integers(LARGEST - 63, LARGEST),
    st.sampled_from([2**20, 2**30, 1431655777, 1073742463, 2147483629]),
)
STRIDES = st.one_of(st.integers(1, 3), HUGE)
PADS = st.one_of(st.integers(0, 3), HUGE)
CHECK = settings(
    max_examples=int(os.environ.get("HUGE_GEOMETRY_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
outcomes = {"check": 0, "invalid": 0, "too large": 0}


def pairs(values: st.SearchStrategy[int]) -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(values, values)


def outcome(out_shape: tuple[int, ...] | None) -> str:
    """'invalid' (no output), 'too large' (more than this machine's memory), or 'check'.
    Allocatable outputs too large to check by loops are skipped."""
    if out_shape is None or min(out_shape) < 1:
        return "invalid"
    if math.prod(out_shape) * 8 > MEMORY:
        return "too large"
    assume(math.prod(out_shape) <= MAX_OUTPUT)
    return "check"


def expect(kind: str, run: Callable[[], Any]) -> Any:
    """``run()``; a ValueError exactly when ``kind`` is not 'check'."""
    outcomes[kind] += 1
    if kind == "check":
        return run()
    try:
        run()
    except ValueError:
        return None
    raise AssertionError(f"expected a ValueError for an output that is {kind}")


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


def conv_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    span = dilation * (kernel - 1) + 1
    return 0 if span > size + 2 * pad else (size + 2 * pad - span) // stride + 1


def taps(out: int, kernel: int, stride: int, pad: int, dilation: int, size: int):
    """(tap, input position) of output position ``out`` that lie inside the input."""
    for tap in range(kernel):
        position = out * stride - pad + tap * dilation
        if 0 <= position < size:
            yield tap, position


def conv_reference(x, w, b, dout, stride, pad, dilation, groups):
    """out, dx, dw, db of a grouped, dilated convolution, by loops over the output."""
    num, _, height, width = x.shape
    filters, per_group, kernel_h, kernel_w = w.shape
    out_h = conv_size(height, kernel_h, stride[0], pad[0], dilation[0])
    out_w = conv_size(width, kernel_w, stride[1], pad[1], dilation[1])
    out = np.empty((num, filters, out_h, out_w))
    dx, dw = np.zeros(x.shape), np.zeros(w.shape)
    for n in range(num):
        for f in range(filters):
            first = f // (filters // groups) * per_group
            for oh in range(out_h):
                rows = list(taps(oh, kernel_h, stride[0], pad[0], dilation[0], height))
                for ow in range(out_w):
                    columns = list(taps(ow, kernel_w, stride[1], pad[1], dilation[1], width))
                    total = b[f]
                    for c in range(per_group):
                        for a, y in rows:
                            for e, z in columns:
                                total += w[f, c, a, e] * x[n, first + c, y, z]
                                dx[n, first + c, y, z] += w[f, c, a, e] * dout[n, f, oh, ow]
                                dw[f, c, a, e] += x[n, first + c, y, z] * dout[n, f, oh, ow]
                    out[n, f, oh, ow] = total
    return out, dx, dw, dout.sum(axis=(0, 2, 3))


@st.composite
def convolutions(draw: Any, depthwise: bool) -> dict[str, Any]:
    channels = draw(st.integers(1, 3))
    groups = channels if depthwise else 1
    filters = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    shape = (draw(st.integers(1, 2)), channels, draw(st.integers(1, 40)), draw(st.integers(1, 5)))
    return {
        "x_shape": shape,
        "w_shape": (filters, channels // groups, *kernel),
        "stride": draw(pairs(STRIDES)),
        "pad": draw(pairs(PADS)),
        "dilation": draw(pairs(STRIDES)),
        "groups": groups,
        "algorithm": draw(st.sampled_from(["auto", "im2col"])),
    }


def check_convolution(case: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(case["x_shape"]), rng.standard_normal(case["w_shape"])
    b = rng.standard_normal(case["w_shape"][0])
    stride, pad, dilation = case["stride"], case["pad"], case["dilation"]
    out_hw = [
        conv_size(size, kernel, *parameters)
        for size, kernel, parameters in zip(
            case["x_shape"][2:],
            case["w_shape"][2:],
            zip(stride, pad, dilation, strict=True),
            strict=True,
        )
    ]
    out_shape = None if 0 in out_hw else (case["x_shape"][0], case["w_shape"][0], *out_hw)
    conv_param = {key: case[key] for key in ("stride", "pad", "dilation", "groups", "algorithm")}

    def run() -> None:
        out, cache = fast_layers.conv_forward_fast(x, w, b, conv_param)
        dout = rng.standard_normal(out.shape)
        expected = conv_reference(x, w, b, dout, stride, pad, dilation, case["groups"])
        close(out, expected[0])
        for grad, reference in zip(
            fast_layers.conv_backward_fast(dout, cache), expected[1:], strict=True
        ):
            close(grad, reference)

    expect(outcome(out_shape), run)


@CHECK
@given(convolutions(depthwise=False))
def conv(case: dict[str, Any]) -> None:
    check_convolution(case)


@CHECK
@given(convolutions(depthwise=True))
def depthwise(case: dict[str, Any]) -> None:
    check_convolution(case)


@CHECK
@given(
    st.tuples(st.just(1), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3)),
    pairs(st.one_of(st.integers(0, 6), st.integers(0, 6), HUGE)),
    st.sampled_from(["winograd", "auto"]),
)
def winograd(x_shape: tuple[int, ...], pad: tuple[int, int], algorithm: str) -> None:
    """3x3 stride-1 convolutions by Winograd's transforms (workspaces sized from the
    output's tiles): 'auto' with the measured thresholds off picks Winograd too."""
    check_convolution(
        {
            "x_shape": x_shape,
            "w_shape": (2, x_shape[1], 3, 3),
            "stride": (1, 1),
            "pad": pad,
            "dilation": (1, 1),
            "groups": 1,
            "algorithm": algorithm,
        }
    )


@CHECK
@given(
    st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 12), st.integers(1, 12)),
    pairs(PADS),
    st.one_of(st.integers(2, 4), HUGE),
)
def phases(x_shape: tuple[int, ...], pad: tuple[int, int], dilation: int) -> None:
    """Dilated 3x3 stride-1 convolutions, which 'auto' runs as Winograd on the phases of
    the input (phase arrays and padded copies sized from the dilation and pads)."""
    check_convolution(
        {
            "x_shape": x_shape,
            "w_shape": (2, x_shape[1], 3, 3),
            "stride": (1, 1),
            "pad": pad,
            "dilation": (dilation, dilation),
            "groups": 1,
            "algorithm": "auto",
        }
    )


def transpose_reference(x, w, b, dout, stride, pad, dilation, output_pad, groups):
    """out, dx, dw, db of a transposed convolution, scattering each input value."""
    num, channels, height, width = x.shape
    _, per_group, kernel_h, kernel_w = w.shape
    sizes = [
        (size - 1) * s - 2 * p + d * (k - 1) + o + 1
        for size, s, p, d, k, o in zip(
            (height, width), stride, pad, dilation, (kernel_h, kernel_w), output_pad, strict=True
        )
    ]
    out = np.zeros((num, per_group * groups, *sizes)) + b[None, :, None, None]
    dx, dw = np.zeros(x.shape), np.zeros(w.shape)
    for n in range(num):
        for c in range(channels):
            first = c // (channels // groups) * per_group
            for i in range(height):
                for j in range(width):
                    for a in range(kernel_h):
                        y = i * stride[0] - pad[0] + a * dilation[0]
                        if not 0 <= y < sizes[0]:
                            continue
                        for e in range(kernel_w):
                            z = j * stride[1] - pad[1] + e * dilation[1]
                            if not 0 <= z < sizes[1]:
                                continue
                            for f in range(per_group):
                                out[n, first + f, y, z] += x[n, c, i, j] * w[c, f, a, e]
                                dx[n, c, i, j] += dout[n, first + f, y, z] * w[c, f, a, e]
                                dw[c, f, a, e] += dout[n, first + f, y, z] * x[n, c, i, j]
    return out, dx, dw, dout.sum(axis=(0, 2, 3))


@st.composite
def transposed_cases(draw: Any) -> tuple:
    """Shapes and parameters of a transposed convolution: mostly, per axis, the pad (and
    output pad) that gives an output of 1 to 4 for the drawn stride and dilation, however
    large; else any drawn values (most of them leave no output)."""
    x_shape = draw(st.tuples(*(st.integers(1, 2),) * 2, *(st.integers(1, 3),) * 2))
    kernel = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    stride, dilation = draw(pairs(STRIDES)), draw(pairs(STRIDES))
    pad, output_pad = [], []
    for axis in range(2):
        reach = (x_shape[2 + axis] - 1) * stride[axis] + dilation[axis] * (kernel[axis] - 1) + 1
        extra = reach - draw(st.integers(1, 4))  # 2 * pad - output_pad for that output
        odd = extra % 2 if max(stride[axis], dilation[axis]) > 1 else 0
        if extra >= 0 and (extra + odd) // 2 <= LARGEST and draw(st.integers(0, 3)):
            pad.append((extra + odd) // 2)
            output_pad.append(odd)
        else:
            pad.append(draw(PADS))
            output_pad.append(draw(st.one_of(st.integers(0, 2), HUGE)))
    return x_shape, kernel, stride, tuple(pad), dilation, tuple(output_pad)


@CHECK
@given(transposed_cases(), st.booleans())
def transposed(case: tuple, grouped: bool) -> None:
    x_shape, kernel, stride, pad, dilation, output_pad = case
    groups = x_shape[1] if grouped else 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((x_shape[1], 2, *kernel))
    b = rng.standard_normal(2 * groups)
    sizes = [
        (size - 1) * s - 2 * p + d * (k - 1) + o + 1
        for size, s, p, d, k, o in zip(
            x_shape[2:], stride, pad, dilation, kernel, output_pad, strict=True
        )
    ]
    valid = all(o < s or o < d for o, s, d in zip(output_pad, stride, dilation, strict=True))
    out_shape = (x_shape[0], 2 * groups, *sizes) if valid else None
    conv_param = {
        "stride": stride,
        "pad": pad,
        "dilation": dilation,
        "output_pad": output_pad,
        "groups": groups,
    }

    def run() -> None:
        out, cache = fast_layers.conv_transpose_forward_fast(x, w, b, conv_param)
        dout = rng.standard_normal(out.shape)
        expected = transpose_reference(x, w, b, dout, stride, pad, dilation, output_pad, groups)
        close(out, expected[0])
        for grad, reference in zip(
            fast_layers.conv_transpose_backward_fast(dout, cache), expected[1:], strict=True
        ):
            close(grad, reference)

    expect(outcome(out_shape), run)


@CHECK
@given(
    st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 6), st.integers(1, 6)),
    st.data(),
    pairs(STRIDES),
    st.sampled_from(["max", "avg"]),
)
def pool(x_shape, data, stride, kind) -> None:
    """Max and average pooling: windows inside the input, strides up to 2**31 - 1."""
    window = tuple(data.draw(st.integers(1, size + 1)) for size in x_shape[2:])
    rng = np.random.default_rng(0)
    x = rng.permutation(math.prod(x_shape)).reshape(x_shape).astype(np.float64)
    pool_param = {"pool_height": window[0], "pool_width": window[1], "stride": stride}
    fits = window[0] <= x_shape[2] and window[1] <= x_shape[3]
    out_hw = [(size - k) // s + 1 for size, k, s in zip(x_shape[2:], window, stride, strict=True)]
    forward, backward = {
        "max": (fast_layers.max_pool_forward_fast, fast_layers.max_pool_backward_fast),
        "avg": (fast_layers.avg_pool_forward_fast, fast_layers.avg_pool_backward_fast),
    }[kind]

    def run() -> None:
        out, cache = forward(x, pool_param)
        dout = rng.standard_normal(out.shape)
        expected, dx = np.empty((*x_shape[:2], *out_hw)), np.zeros(x_shape)
        for n, c, oh, ow in np.ndindex(expected.shape):
            rows = slice(oh * stride[0], oh * stride[0] + window[0])
            columns = slice(ow * stride[1], ow * stride[1] + window[1])
            values = x[n, c, rows, columns]
            if kind == "max":
                expected[n, c, oh, ow] = values.max()
                a, e = np.unravel_index(np.argmax(values), values.shape)
                dx[n, c, rows, columns][a, e] += dout[n, c, oh, ow]
            else:
                expected[n, c, oh, ow] = values.mean()
                dx[n, c, rows, columns] += dout[n, c, oh, ow] / values.size
        close(out, expected)
        close(backward(dout, cache), dx)

    expect(outcome((*x_shape[:2], *out_hw) if fits else None), run)


@CHECK
@given(
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    st.sampled_from([np.float32, np.float64]),
    st.booleans(),
)
def elementwise(shape: tuple[int, ...], dtype: type, strided: bool) -> None:
    """The compiled batch norm and ReLU (no geometry parameters: their loops cover the
    arrays they are given) on tiny and strided inputs, against the numpy layers."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape[0], shape[1], shape[2], 2 * shape[3])).astype(dtype)
    if strided:
        x = x[..., ::2]
    else:
        x = np.ascontiguousarray(x[..., : shape[3]])
    dout = rng.standard_normal(x.shape).astype(dtype)
    tolerance = 1e-4 if dtype == np.float32 else 1e-10

    def run() -> None:
        out, cache = relu_forward_fast(x)
        np.testing.assert_array_equal(out, layers.relu_forward(x)[0])
        np.testing.assert_array_equal(
            relu_backward_fast(dout, cache), layers.relu_backward(dout, x)
        )
        if shape[0] * shape[2] * shape[3] < 2:
            return  # batch statistics need two values per channel
        gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
        bn_param = {"mode": "train"}
        out, cache = spatial_batchnorm_forward_fast(x, gamma, beta, dict(bn_param))
        out_ref, cache_ref = spatial_batchnorm_forward(x, gamma, beta, dict(bn_param))
        np.testing.assert_allclose(out, out_ref, rtol=tolerance, atol=tolerance)
        for grad, reference in zip(
            spatial_batchnorm_backward_fast(dout, cache),
            spatial_batchnorm_backward(dout, cache_ref),
            strict=True,
        ):
            np.testing.assert_allclose(grad, reference, rtol=tolerance, atol=tolerance)

    expect("check", run)


def reported() -> None:
    """Issue 16, case 1: the depthwise loops' padded planes, (H + 2*pad_h) * (W + 2*pad_w)
    values, overflowed and the copy wrote outside them (signal 11 after 8.4 GB). The
    only taps inside the image read its zero padding, so the output is the bias."""
    x = np.ones((1, 2, 38, 2), np.float32)
    w = np.ones((2, 1, 4, 3), np.float32)
    b = np.array([0.5, -2.0], np.float32)
    conv_param = {
        "stride": 2**31 - 1,
        "pad": (2**31 - 1, 2147483629),
        "dilation": (1431655777, 1073742463),
        "groups": 2,
    }
    out, cache = fast_layers.conv_forward_fast(x, w, b, conv_param)
    np.testing.assert_array_equal(out, b.reshape(1, 2, 1, 1))
    dx, dw, db = fast_layers.conv_backward_fast(np.ones_like(out), cache)
    assert not dx.any() and not dw.any()
    np.testing.assert_array_equal(db, [1, 1])
    outcomes["check"] += 1


FAMILIES = {
    "reported": reported,
    "conv": conv,
    "depthwise": depthwise,
    "winograd": winograd,
    "phases": phases,
    "transposed": transposed,
    "pool": pool,
    "elementwise": elementwise,
}


def _every_algorithm_for_small_problems() -> None:
    """'auto' picks Winograd (and Winograd on phases) wherever it applies, however small:
    the measured thresholds are for speed and would keep these tiny cases on im2col."""
    for name in (
        "WINOGRAD_MIN_CHANNELS",
        "WINOGRAD_MIN_PIXELS",
        "WINOGRAD_MIN_PIXEL_CHANNELS",
        "WINOGRAD_MIN_PIXELS_PER_CHANNEL",
    ):
        setattr(conv_plan, name, 0)


if __name__ == "__main__":
    _every_algorithm_for_small_problems()
    family = sys.argv[1]
    FAMILIES[family]()
    print(f"ok {family} {sum(outcomes.values())} examples:", outcomes)
