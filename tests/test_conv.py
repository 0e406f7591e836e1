"""Convolution: gradient checks, fast against naive, layouts, dtypes, NaN propagation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from conv_helpers import (
    as_pair,
    check_conv_matches_naive,
    use_workspace_and_threads,
)
from gradients import check_gradients
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_pairs import CONV
from tolerances import assert_matches

import convnet
from convnet import _backend, fast_layers
from convnet._parallel import set_num_threads
from convnet.fast_layers import conv_backward_fast, conv_forward_fast, set_workspace_limit
from convnet.layers import conv_backward_naive, conv_forward_naive


class Geometry(NamedTuple):
    """One convolution's sizes; ``stride`` and ``pad`` are what conv_param receives."""

    num: int
    channels: int
    filters: int
    height: int
    width: int
    kernel_h: int
    kernel_w: int
    stride: int | tuple[int, int]
    pad: int | tuple[int, int]

    def pairs(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return as_pair(self.stride), as_pair(self.pad)

    def out_size(self) -> tuple[int, int]:
        (sh, sw), (ph, pw) = self.pairs()
        return (
            (self.height + 2 * ph - self.kernel_h) // sh + 1,
            (self.width + 2 * pw - self.kernel_w) // sw + 1,
        )

    def conv_param(self) -> dict:
        return {"stride": self.stride, "pad": self.pad}


def make_arrays(geo: Geometry, rng: np.random.Generator, dtype=np.float64):
    """Random x, w, b and dout for ``geo`` in ``dtype``."""
    out_h, out_w = geo.out_size()
    shapes = (
        (geo.num, geo.channels, geo.height, geo.width),
        (geo.filters, geo.channels, geo.kernel_h, geo.kernel_w),
        (geo.filters,),
        (geo.num, geo.filters, out_h, out_w),
    )
    return tuple(rng.standard_normal(shape).astype(dtype) for shape in shapes)


# Small geometries for the numerical checks: per-axis strides and pads, non-square kernels,
# the 1x1 path, and inputs smaller than the kernel but covered by the padding.
GRADIENT_GEOMETRIES = [
    Geometry(2, 2, 2, 5, 4, 3, 3, 1, 1),
    Geometry(2, 2, 3, 5, 6, 2, 3, (2, 1), (0, 1)),
    Geometry(1, 3, 2, 4, 5, 3, 2, (1, 2), (2, 0)),
    Geometry(2, 3, 2, 4, 3, 1, 1, 1, 0),
    Geometry(2, 2, 2, 3, 2, 5, 4, (2, 1), (1, 1)),
    Geometry(1, 2, 2, 7, 5, 2, 4, 3, (1, 2)),
]


def _ids(geometries):
    return [
        f"n{g.num}c{g.channels}f{g.filters}_{g.height}x{g.width}_k{g.kernel_h}x{g.kernel_w}"
        f"_s{g.stride}_p{g.pad}".replace(" ", "")
        for g in geometries
    ]


# --- gradient checks (float64, centered differences) -------------------------------------


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("geo", GRADIENT_GEOMETRIES, ids=_ids(GRADIENT_GEOMETRIES))
def test_conv_gradients(impl, geo, rng):
    x, w, b, dout = make_arrays(geo, rng)
    check_gradients(*CONV[impl], [x, w, b], geo.conv_param(), dout=dout)


def test_conv_forward_known_value():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.ones((2, 1, 2, 2))
    w[1] = -1
    b = np.array([0.5, 0.0])
    expected = np.array([[[[10.5, 18.5], [42.5, 50.5]], [[-10.0, -18.0], [-42.0, -50.0]]]])
    for forward, _ in CONV.values():
        out, _ = forward(x, w, b, {"stride": 2, "pad": 0})
        np.testing.assert_array_equal(out, expected)


def test_conv_padding_is_zero(rng):
    x = rng.standard_normal((1, 1, 2, 3))
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, 0] = 1.0
    for forward, _ in CONV.values():
        out, _ = forward(x, w, np.zeros(1), {"stride": 1, "pad": (1, 2)})
        expected = np.zeros((1, 1, 2, 5))
        expected[0, 0, 1, 2:5] = x[0, 0, 0]
        np.testing.assert_array_equal(out, expected)


# --- compute_dx=False ---------------------------------------------------------------------


@pytest.mark.parametrize("geo", GRADIENT_GEOMETRIES[:4], ids=_ids(GRADIENT_GEOMETRIES[:4]))
def test_compute_dx_false_skips_dx_only(geo, rng):
    x, w, b, dout = make_arrays(geo, rng)
    _, cache = conv_forward_fast(x, w, b, geo.conv_param())
    _, dw, db = conv_backward_fast(dout, cache, compute_dx=True)
    dx_none, dw_only, db_only = conv_backward_fast(dout, cache, compute_dx=False)
    assert dx_none is None
    np.testing.assert_array_equal(dw_only, dw)
    np.testing.assert_array_equal(db_only, db)


# --- fast against naive -------------------------------------------------------------------


@st.composite
def geometries(draw, max_num=3):
    """Any valid geometry: the kernel always fits the padded input."""
    kernel_h, kernel_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride_h, stride_w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad_h, pad_w = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    height = draw(st.integers(max(1, kernel_h - 2 * pad_h), 7))
    width = draw(st.integers(max(1, kernel_w - 2 * pad_w), 7))
    stride = stride_h if stride_h == stride_w and draw(st.booleans()) else (stride_h, stride_w)
    pad = pad_h if pad_h == pad_w and draw(st.booleans()) else (pad_h, pad_w)
    return Geometry(
        draw(st.integers(0, max_num)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
        height,
        width,
        kernel_h,
        kernel_w,
        stride,
        pad,
    )


def check_conv_fast_matches_naive(geo: Geometry, dtype, seed: int) -> None:
    x, w, b, dout = make_arrays(geo, np.random.default_rng(seed), dtype)
    check_conv_matches_naive(x, w, b, dout, geo.conv_param())


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    geo=geometries(),
    dtype=st.sampled_from([np.float32, np.float64]),
    workspace=st.sampled_from([None, 1, 3000]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_matches_naive(
    geo, dtype, workspace, threads, seed, restore_workspace_limit, restore_num_threads
):
    use_workspace_and_threads(workspace, threads)
    check_conv_fast_matches_naive(geo, dtype, seed)


@given(
    num=st.integers(0, 3),
    channels=st.integers(1, 4),
    filters=st.integers(1, 4),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_pointwise_fast_matches_naive(num, channels, filters, height, width, dtype, seed):
    geo = Geometry(num, channels, filters, height, width, 1, 1, 1, 0)
    check_conv_fast_matches_naive(geo, dtype, seed)


CHUNK_GEOMETRIES = [
    Geometry(5, 2, 3, 6, 5, 3, 2, (1, 2), (1, 0)),
    Geometry(7, 3, 2, 4, 4, 3, 3, 1, 1),
]


@pytest.mark.parametrize("geo", CHUNK_GEOMETRIES, ids=_ids(CHUNK_GEOMETRIES))
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("images_per_chunk", [0, 1, 2.5, 4, 6.5])
def test_chunked_batches_match_naive(
    geo, threads, images_per_chunk, restore_workspace_limit, restore_num_threads
):
    """Budgets of a fraction of an image up to several images per worker: uneven chunks."""
    out_h, out_w = geo.out_size()
    column_bytes = geo.channels * geo.kernel_h * geo.kernel_w * out_h * out_w * 8
    set_num_threads(threads)
    set_workspace_limit(max(1, int(images_per_chunk * threads * column_bytes)))
    check_conv_fast_matches_naive(geo, np.float64, seed=7)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fast_conv_is_deterministic_for_a_thread_count(threads, restore_num_threads, rng):
    geo = CHUNK_GEOMETRIES[1]
    x, w, b, dout = make_arrays(geo, rng)
    set_num_threads(threads)
    runs = []
    for _ in range(3):
        out, cache = conv_forward_fast(x, w, b, geo.conv_param())
        runs.append((out, *conv_backward_fast(dout, cache)))
    for run in runs[1:]:
        for value, first in zip(run, runs[0], strict=True):
            np.testing.assert_array_equal(value, first)


def test_set_workspace_limit_returns_previous(restore_workspace_limit):
    set_workspace_limit(12345)
    assert set_workspace_limit(99) == 12345
    assert fast_layers.get_workspace_limit() == 99


EMPTY_GEOMETRIES = [
    Geometry(0, 2, 3, 5, 4, 3, 2, (2, 1), (1, 0)),
    Geometry(0, 2, 3, 5, 4, 1, 1, 1, 0),
]


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("geo", EMPTY_GEOMETRIES, ids=_ids(EMPTY_GEOMETRIES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch(impl, geo, dtype, rng):
    forward, backward = CONV[impl]
    x, w, b, dout = make_arrays(geo, rng, dtype)
    out, cache = forward(x, w, b, geo.conv_param())
    assert out.shape == (0, geo.filters, *geo.out_size())
    assert out.dtype == np.dtype(dtype)
    dx, dw, db = backward(dout, cache)
    assert dx.shape == x.shape and dx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros_like(b))
    assert dw.dtype == db.dtype == np.dtype(dtype)


SMALL_INPUT_GEOMETRIES = [
    Geometry(2, 2, 2, 1, 1, 3, 3, 1, 1),
    Geometry(2, 1, 2, 2, 1, 4, 3, (1, 2), (1, 1)),
    Geometry(1, 2, 3, 1, 3, 3, 5, 2, (1, 2)),
]


@pytest.mark.parametrize("geo", SMALL_INPUT_GEOMETRIES, ids=_ids(SMALL_INPUT_GEOMETRIES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_smaller_than_kernel_covered_by_padding(geo, dtype):
    check_conv_fast_matches_naive(geo, dtype, seed=3)


@pytest.mark.parametrize(
    ("forward", "backward"),
    [(conv_forward_naive, conv_backward_fast), (conv_forward_fast, conv_backward_naive)],
    ids=["naive-cache-to-fast", "fast-cache-to-naive"],
)
def test_caches_are_interchangeable(forward, backward, rng):
    geo = GRADIENT_GEOMETRIES[2]
    x, w, b, dout = make_arrays(geo, rng)
    _, cache = conv_forward_naive(x, w, b, geo.conv_param())
    grads_ref = conv_backward_naive(dout, cache)
    _, cache = forward(x, w, b, geo.conv_param())
    for grad, ref in zip(backward(dout, cache), grads_ref, strict=True):
        assert_matches(grad, ref)


# --- layouts, dtypes, inputs left alone ------------------------------------------------------


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize(
    "geo", [GRADIENT_GEOMETRIES[1], GRADIENT_GEOMETRIES[3]], ids=["k2x3", "k1x1"]
)
def test_any_layout_gives_the_same_result(impl, geo, to_layout, rng):
    forward, backward = CONV[impl]
    arrays = make_arrays(geo, rng)
    x, w, b, dout = arrays
    out_ref, cache = forward(x, w, b, geo.conv_param())
    grads_ref = backward(dout, cache)
    xv, wv, bv, doutv = (to_layout(a) for a in arrays)
    out, cache = forward(xv, wv, bv, geo.conv_param())
    assert_matches(out, out_ref)
    for grad, ref in zip(backward(doutv, cache), grads_ref, strict=True):
        assert_matches(grad, ref)


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize(
    "geo", [GRADIENT_GEOMETRIES[1], GRADIENT_GEOMETRIES[3]], ids=["k2x3", "k1x1"]
)
def test_inputs_and_dout_are_not_modified(impl, geo, rng):
    forward, backward = CONV[impl]
    arrays = make_arrays(geo, rng)
    copies = [a.copy() for a in arrays]
    x, w, b, dout = arrays
    out, cache = forward(x, w, b, geo.conv_param())
    out[...] = 7.0
    for grad in backward(dout, cache):
        grad[...] = 7.0
    for array, copy in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize(
    ("x_dtype", "w_dtype", "dout_dtype", "expected"),
    [
        (np.float32, np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float32, np.float64),
        (np.float64, np.float32, np.float32, np.float64),
    ],
)
def test_output_dtype(impl, x_dtype, w_dtype, dout_dtype, expected, rng):
    forward, backward = CONV[impl]
    x, w, b, dout = make_arrays(GRADIENT_GEOMETRIES[1], rng)
    out, cache = forward(
        x.astype(x_dtype), w.astype(w_dtype), b.astype(w_dtype), {"stride": (2, 1), "pad": (0, 1)}
    )
    assert out.dtype == expected
    assert all(g.dtype == expected for g in backward(dout.astype(dout_dtype), cache))


# --- NaN propagation -----------------------------------------------------------------------


def touched(index: int, count: int, stride: int, pad: int, kernel: int) -> np.ndarray:
    """Which of ``count`` output positions have input ``index`` in their receptive field."""
    starts = np.arange(count) * stride - pad
    return (starts <= index) & (index < starts + kernel)


NAN_GEOMETRY = Geometry(2, 2, 3, 6, 5, 3, 2, (2, 1), (1, 1))


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("position", [(0, 0), (5, 4), (2, 3), (3, 0), (5, 2)])
def test_nan_in_x_reaches_exactly_the_outputs_that_see_it(impl, position, rng):
    forward, _ = CONV[impl]
    x, w, b, _ = make_arrays(NAN_GEOMETRY, rng)
    row, col = position
    x[1, 1, row, col] = np.nan
    out, _ = forward(x, w, b, NAN_GEOMETRY.conv_param())
    (sh, sw), (ph, pw) = NAN_GEOMETRY.pairs()
    out_h, out_w = NAN_GEOMETRY.out_size()
    window = np.outer(
        touched(row, out_h, sh, ph, NAN_GEOMETRY.kernel_h),
        touched(col, out_w, sw, pw, NAN_GEOMETRY.kernel_w),
    )
    expected = np.zeros(out.shape, dtype=bool)
    expected[1] = window
    np.testing.assert_array_equal(np.isnan(out), expected)


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("position", [(0, 0), (2, 4), (1, 2)])
def test_nan_in_dout_reaches_exactly_its_receptive_field(impl, position, rng):
    forward, backward = CONV[impl]
    x, w, b, dout = make_arrays(NAN_GEOMETRY, rng)
    _, cache = forward(x, w, b, NAN_GEOMETRY.conv_param())
    i, j = position
    dout[0, 2, i, j] = np.nan
    dx, dw, db = backward(dout, cache)
    (sh, sw), (ph, pw) = NAN_GEOMETRY.pairs()
    rows = np.arange(x.shape[2])
    cols = np.arange(x.shape[3])
    field = np.outer(
        (i * sh - ph <= rows) & (rows < i * sh - ph + NAN_GEOMETRY.kernel_h),
        (j * sw - pw <= cols) & (cols < j * sw - pw + NAN_GEOMETRY.kernel_w),
    )
    expected_dx = np.zeros(x.shape, dtype=bool)
    expected_dx[0] = field
    np.testing.assert_array_equal(np.isnan(dx), expected_dx)
    np.testing.assert_array_equal(np.isnan(db), [False, False, True])
    assert np.all(np.isnan(dw[2]))
    assert np.all(np.isfinite(dw[:2]))


# --- degenerate sizes and byte order --------------------------------------------------------


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("kernel", [(3, 2), (1, 1)])
def test_zero_filters_give_empty_output(impl, kernel):
    forward, backward = CONV[impl]
    geo = Geometry(2, 3, 0, 5, 4, *kernel, 1, 0)
    x, w, b, dout = make_arrays(geo, np.random.default_rng(0))
    out, cache = forward(x, w, b, geo.conv_param())
    assert out.shape == (2, 0, *geo.out_size())
    dx, dw, db = backward(dout, cache)
    np.testing.assert_array_equal(dx, np.zeros_like(x))
    assert dw.shape == w.shape and db.shape == (0,)


@pytest.mark.parametrize("impl", CONV)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_channels_give_bias_only(impl, dtype):
    forward, backward = CONV[impl]
    geo = Geometry(2, 0, 3, 5, 4, 3, 2, 1, 1)
    x, w, b, dout = make_arrays(geo, np.random.default_rng(0), dtype)
    out, cache = forward(x, w, b, geo.conv_param())
    np.testing.assert_array_equal(out, np.broadcast_to(b[:, None, None], out.shape))
    dx, dw, db = backward(dout, cache)
    assert dx.shape == x.shape and dw.shape == w.shape
    assert_matches(db, dout.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("impl", CONV)
def test_non_native_byte_order_is_accepted(impl, rng):
    forward, backward = CONV[impl]
    geo = GRADIENT_GEOMETRIES[1]
    x, w, b, dout = make_arrays(geo, rng)
    out_ref, cache = forward(x, w, b, geo.conv_param())
    grads_ref = backward(dout, cache)
    swapped = [a.astype(a.dtype.newbyteorder()) for a in (x, w, b, dout)]
    out, cache = forward(*swapped[:3], geo.conv_param())
    assert_matches(out, out_ref)
    for grad, ref in zip(backward(swapped[3], cache), grads_ref, strict=True):
        assert_matches(grad, ref)


# --- calls from several Python threads at once ----------------------------------------------

CONCURRENT_SCRIPT = """
import json, threading, time
import convnet
import numpy as np
from threadpoolctl import ThreadpoolController
from convnet import _conv_work, _parallel
from convnet.fast_layers import conv_backward_fast, conv_forward_fast
from convnet.layers import conv_backward_naive, conv_forward_naive

_conv_work.SMALL_CONV_MULTIPLY_ADDS = 0  # these small convolutions must use the workers

def blas_threads():
    blas = ThreadpoolController().select(user_api="blas")
    return [lib.num_threads for lib in blas.lib_controllers]

def run_in_threads(*targets):
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return threads

before = blas_threads()
_parallel.set_num_threads(2)
rng = np.random.default_rng(0)
x, w, b = rng.standard_normal((4, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3)), np.zeros(4)
param = {"stride": 1, "pad": 1}
_parallel.BLAS_RESTORE_DELAY = 60.0  # long enough for a slow machine to look in time
conv_backward_fast(np.ones((4, 4, 8, 8)), conv_forward_fast(x, w, b, param)[1])
right_after = blas_threads()
_parallel.BLAS_RESTORE_DELAY = 0.05
conv_forward_fast(x, w, b, param)  # wakes the restorer with the short delay
time.sleep(2.0)
after_one_thread = blas_threads()

# Two overlapping calls in a fixed order: A (this thread, which lives on) starts, B (another
# thread) starts, A returns, B returns.
_parallel.set_num_threads(4)
a_started, b_started, a_returned = threading.Event(), threading.Event(), threading.Event()

def wait_for_b(start, stop):
    a_started.set()
    b_started.wait(timeout=30)

def signal_and_wait_for_a(start, stop):
    b_started.set()
    a_returned.wait(timeout=30)

def call_b():
    a_started.wait(timeout=30)
    _parallel.map_groups(signal_and_wait_for_a, 2)

thread_b = threading.Thread(target=call_b)
thread_b.start()
_parallel.map_groups(wait_for_b, 2)
a_returned.set()
thread_b.join(timeout=60)
_parallel.restore_blas_threads()
after = blas_threads()

# Then three threads convolving at once: the results must not change.
_parallel.set_num_threads(2)
out_ref, cache_ref = conv_forward_naive(x, w, b, param)
dout = rng.standard_normal(out_ref.shape)
grads_ref = conv_backward_naive(dout, cache_ref)
wrong = []

def convolve():
    for _ in range(30):
        out, cache = conv_forward_fast(x, w, b, param)
        grads = conv_backward_fast(dout, cache)
        if not all(np.allclose(a, r, rtol=1e-10, atol=1e-10) for a, r in
                   zip((out, *grads), (out_ref, *grads_ref))):
            wrong.append(1)

run_in_threads(convolve, convolve, convolve)
report = {
    "before": before, "right_after": right_after, "after_one_thread": after_one_thread,
    "after": after,
}
print(json.dumps({**report, "wrong": len(wrong), "backend": convnet.BACKEND}))
"""


@pytest.fixture(scope="module")
def concurrent_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Python threads calling the fast layers at once, in a fresh interpreter.

    It runs in an empty directory, so it imports the same convnet as this process (from
    the source tree, ``python -c`` would import the package there, without its kernel).
    """
    if _backend.kernel is None:
        pytest.skip("the compiled kernel is not in use")
    env = {key: value for key, value in os.environ.items() if key != "CONVNET_BACKEND"}
    env["PYTHONPATH"] = str(Path(convnet.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENT_SCRIPT],
        env=env,
        cwd=tmp_path_factory.mktemp("concurrent"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "cython"
    if not any(threads > 1 for threads in report["before"]):
        pytest.skip("numpy's BLAS runs single-threaded here: nothing to restore")
    return report


def test_concurrent_calls_give_correct_results(concurrent_report):
    assert concurrent_report["wrong"] == 0


def test_blas_stays_single_threaded_just_after_a_call(concurrent_report):
    assert all(threads == 1 for threads in concurrent_report["right_after"])


def test_a_call_from_one_thread_leaves_blas_threads_as_they_were(concurrent_report):
    assert concurrent_report["after_one_thread"] == concurrent_report["before"]


def test_concurrent_calls_leave_blas_threads_as_they_were(concurrent_report):
    assert concurrent_report["after"] == concurrent_report["before"]
