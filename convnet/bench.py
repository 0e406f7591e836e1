"""Layer benchmark: fast vs naive vs the GEMM alone vs PyTorch, for convolution (dilated,
depthwise and transposed included) and max and average pooling.

Run as ``convnet bench`` or ``python benchmarks/bench_layers.py``; ``--help`` lists the
options. Like training, the benchmark first calls :func:`convnet.keep_freed_memory`, which
applies to every library in the process (PyTorch included).

Candidates are interleaved, and each timed sample (a few back-to-back calls) follows a
pause and an untimed call of the same candidate, because BLAS and OpenMP worker threads
keep spinning for a while after a call returns and would otherwise be charged to the
next candidate.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from convnet import _backend, nn
from convnet._blas_core import cpu_name, openblas_cores
from convnet._memory import keep_freed_memory
from convnet._parallel import restore_blas_threads, set_num_threads
from convnet.fast_layers import (
    avg_pool_backward_fast,
    avg_pool_forward_fast,
    conv_algorithm_choice,
    conv_backward_fast,
    conv_forward_fast,
    conv_transpose_backward_fast,
    conv_transpose_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from convnet.layers import (
    avg_pool_backward_naive,
    avg_pool_forward_naive,
    conv_backward_naive,
    conv_forward_naive,
    conv_transpose_backward_naive,
    conv_transpose_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)
from convnet.models import ThreeLayerConvNet, resnet
from convnet.nn import Module
from convnet.optim import sgd


@dataclass(frozen=True)
class ConvCase:
    """A convolution to time: input and filter shapes, stride and padding."""

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: int
    pad: int
    dilation: int = 1
    groups: int = 1

    def out_hw(self) -> tuple[int, int]:
        height, width = self.x_shape[2:]
        span_h, span_w = (self.dilation * (k - 1) + 1 for k in self.w_shape[2:])
        return (
            (height + 2 * self.pad - span_h) // self.stride + 1,
            (width + 2 * self.pad - span_w) // self.stride + 1,
        )

    def conv_param(self) -> dict:
        return {
            "stride": self.stride,
            "pad": self.pad,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def forward_flops(self) -> int:
        out_h, out_w = self.out_hw()
        depth = self.w_shape[1] * self.w_shape[2] * self.w_shape[3]
        return 2 * self.x_shape[0] * self.w_shape[0] * depth * out_h * out_w


@dataclass(frozen=True)
class TransposeCase:
    """A transposed convolution to time: input and filter (C, F, kh, kw) shapes."""

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: int
    pad: int


@dataclass(frozen=True)
class PoolCase:
    """A max pool to time: input shape, square window and stride."""

    x_shape: tuple[int, int, int, int]
    window: int
    stride: int


CONV_CASES = {
    "a": ConvCase((100, 3, 31, 31), (25, 3, 3, 3), 2, 1),
    "b": ConvCase((50, 3, 32, 32), (32, 3, 7, 7), 1, 3),
    "c": ConvCase((64, 64, 16, 16), (64, 64, 3, 3), 1, 1),
    "d": ConvCase((32, 128, 8, 8), (128, 128, 3, 3), 1, 1),
    "dil": ConvCase((32, 64, 16, 16), (64, 64, 3, 3), 1, 2, dilation=2),
    "dw": ConvCase((64, 64, 16, 16), (64, 1, 3, 3), 1, 1, groups=64),
}
TRANSPOSE_CASES = {"t1": TransposeCase((32, 64, 8, 8), (64, 32, 4, 4), 2, 1)}
AVG_POOL_CASES = {
    "ap1": PoolCase((100, 3, 32, 32), 2, 2),
    "ap2": PoolCase((64, 64, 16, 16), 2, 2),
}
POOL_CASES = {
    "p1": PoolCase((100, 3, 32, 32), 2, 2),
    "p2": PoolCase((64, 64, 16, 16), 2, 2),
    "p3": PoolCase((64, 64, 16, 16), 3, 2),
}
NAIVE_BY_DEFAULT = ("a", "p1", "ap1")


def interleaved_medians(
    candidates: dict[str, Callable[[], object]], repeats: int, pause: float, calls: int
) -> dict[str, float]:
    """Median milliseconds per call of each candidate, timed in interleaved rounds.

    Each sample is the mean of ``calls`` back-to-back calls after a pause and one untimed
    call: what a training loop sees, which calls the layers back to back.
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            time.sleep(pause)
            run()
            start = time.perf_counter()
            for _ in range(calls):
                run()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: 1e3 * float(np.median(values)) for name, values in times.items()}


def time_once_ms(run: Callable[[], object]) -> float:
    """Milliseconds of a single call (for the slow naive layers)."""
    start = time.perf_counter()
    run()
    return 1e3 * (time.perf_counter() - start)


def _torch(threads: int):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def conv_algorithm_label(case: ConvCase) -> str:
    """The algorithm ``conv_forward_fast`` runs on the case, as the tables print it."""
    name, tile = conv_algorithm_choice(case.x_shape, case.w_shape, case.conv_param())
    return f"{name} F({tile}x{tile},3x3)" if name.startswith("winograd") else name


def _im2col_gemms(case: ConvCase, dtype: np.dtype, rng: np.random.Generator):
    """The three GEMMs of im2col on the whole batch: forward, dW, dX."""
    out_h, out_w = case.out_hw()
    num_filters, depth = case.w_shape[0], int(np.prod(case.w_shape[1:]))
    columns = case.x_shape[0] * out_h * out_w
    cols = rng.standard_normal((case.groups, depth, columns)).astype(dtype)
    w_rows = rng.standard_normal((case.groups, num_filters // case.groups, depth)).astype(dtype)
    dout_rows = rng.standard_normal((case.groups, num_filters // case.groups, columns)).astype(
        dtype
    )

    def gemms() -> None:
        np.matmul(w_rows, cols)
        np.matmul(dout_rows, cols.transpose(0, 2, 1))
        np.matmul(w_rows.transpose(0, 2, 1), dout_rows)

    return gemms


def _winograd_gemms(case: ConvCase, tile: int, dtype: np.dtype, rng: np.random.Generator):
    """The batched GEMMs of Winograd F(tile x tile, 3x3) on the whole batch (the phases
    of a dilated input stacked in it): forward, dW, dX, one per transformed position."""
    num, channels, height, width = case.x_shape
    num_filters = case.w_shape[0]
    out_h, out_w = case.out_hw()
    if case.dilation > 1:
        num *= case.dilation**2
        out_h, out_w = out_h // case.dilation, out_w // case.dilation
        height, width = out_h + 2, out_w + 2
    alpha2 = (tile + 2) ** 2
    tiles = num * -(-out_h // tile) * -(-out_w // tile)
    dx_tiles = num * -(-height // tile) * -(-width // tile)
    v = rng.standard_normal((alpha2, tiles, channels)).astype(dtype)
    u = rng.standard_normal((alpha2, channels, num_filters)).astype(dtype)
    dv = rng.standard_normal((alpha2, num_filters, tiles)).astype(dtype)
    dv_dx = rng.standard_normal((alpha2, dx_tiles, num_filters)).astype(dtype)

    def gemms() -> None:
        np.matmul(v, u)
        np.matmul(dv, v)
        np.matmul(dv_dx, u.transpose(0, 2, 1))

    return gemms


def conv_candidates(case: ConvCase, dtype: np.dtype, torch, rng: np.random.Generator):
    """The callables timed for one convolution case, and the naive forward+backward.

    ``GEMM f+b`` is the matrix products of the algorithm the case runs (im2col's three,
    or Winograd's batched ones), on the whole batch: the lower bound of the design.
    """
    x = rng.standard_normal(case.x_shape).astype(dtype)
    w = rng.standard_normal(case.w_shape).astype(dtype)
    b = rng.standard_normal(case.w_shape[0]).astype(dtype)
    conv_param = case.conv_param()
    out_h, out_w = case.out_hw()
    num_filters = case.w_shape[0]
    dout = rng.standard_normal((case.x_shape[0], num_filters, out_h, out_w)).astype(dtype)
    algorithm, tile = conv_algorithm_choice(case.x_shape, case.w_shape, conv_param)

    def fast_forward_backward() -> None:
        _, cache = conv_forward_fast(x, w, b, conv_param)
        conv_backward_fast(dout, cache)

    def naive_forward_backward() -> None:
        _, cache = conv_forward_naive(x, w, b, conv_param)
        conv_backward_naive(dout, cache)

    candidates = {
        "fast fwd": lambda: conv_forward_fast(x, w, b, conv_param),
        "fast f+b": fast_forward_backward,
    }
    if algorithm == "im2col":
        candidates["GEMM f+b"] = _im2col_gemms(case, dtype, rng)
    elif algorithm.startswith("winograd"):  # on x itself or on its phases
        candidates["GEMM f+b"] = _winograd_gemms(case, tile, dtype, rng)
    if torch is not None:
        import torch.nn.functional as functional

        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        tb = torch.from_numpy(b).requires_grad_()
        tdout = torch.from_numpy(dout)

        torch_param = {
            "stride": case.stride,
            "padding": case.pad,
            "dilation": case.dilation,
            "groups": case.groups,
        }

        def torch_forward() -> None:
            with torch.no_grad():
                functional.conv2d(tx, tw, tb, **torch_param)

        def torch_forward_backward() -> None:
            functional.conv2d(tx, tw, tb, **torch_param).backward(tdout)

        candidates["torch fwd"] = torch_forward
        candidates["torch f+b"] = torch_forward_backward
    return candidates, naive_forward_backward


def pool_candidates(case: PoolCase, dtype: np.dtype, torch, rng: np.random.Generator):
    """The callables timed for one pooling case, and the naive forward+backward."""
    x = rng.standard_normal(case.x_shape).astype(dtype)
    pool_param = {"pool_height": case.window, "pool_width": case.window, "stride": case.stride}
    out, _ = max_pool_forward_fast(x, pool_param)
    dout = rng.standard_normal(out.shape).astype(dtype)

    def fast_forward_backward() -> None:
        _, cache = max_pool_forward_fast(x, pool_param)
        max_pool_backward_fast(dout, cache)

    def naive_forward_backward() -> None:
        _, cache = max_pool_forward_naive(x, pool_param)
        max_pool_backward_naive(dout, cache)

    candidates = {"fast f+b": fast_forward_backward, "copy x": x.copy}
    if torch is not None:
        import torch.nn.functional as functional

        tx = torch.from_numpy(x).requires_grad_()
        tdout = torch.from_numpy(dout)

        def torch_forward_backward() -> None:
            functional.max_pool2d(tx, case.window, case.stride).backward(tdout)

        candidates["torch f+b"] = torch_forward_backward
    return candidates, naive_forward_backward


def transpose_candidates(case: TransposeCase, dtype: np.dtype, torch, rng: np.random.Generator):
    """The callables timed for one transposed convolution, and the naive forward+backward."""
    x = rng.standard_normal(case.x_shape).astype(dtype)
    w = rng.standard_normal(case.w_shape).astype(dtype)
    b = rng.standard_normal(case.w_shape[1]).astype(dtype)
    conv_param = {"stride": case.stride, "pad": case.pad}
    out, _ = conv_transpose_forward_fast(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape).astype(dtype)

    def fast_forward_backward() -> None:
        _, cache = conv_transpose_forward_fast(x, w, b, conv_param)
        conv_transpose_backward_fast(dout, cache)

    def naive_forward_backward() -> None:
        _, cache = conv_transpose_forward_naive(x, w, b, conv_param)
        conv_transpose_backward_naive(dout, cache)

    candidates = {
        "fast fwd": lambda: conv_transpose_forward_fast(x, w, b, conv_param),
        "fast f+b": fast_forward_backward,
    }
    if torch is not None:
        import torch.nn.functional as functional

        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        tdout = torch.from_numpy(dout)

        def torch_forward() -> None:
            with torch.no_grad():
                functional.conv_transpose2d(tx, tw, tb, stride=case.stride, padding=case.pad)

        def torch_forward_backward() -> None:
            out = functional.conv_transpose2d(tx, tw, tb, stride=case.stride, padding=case.pad)
            out.backward(tdout)

        candidates["torch fwd"] = torch_forward
        candidates["torch f+b"] = torch_forward_backward
    return candidates, naive_forward_backward


def avg_pool_candidates(case: PoolCase, dtype: np.dtype, torch, rng: np.random.Generator):
    """The callables timed for one average-pooling case, and the naive forward+backward."""
    x = rng.standard_normal(case.x_shape).astype(dtype)
    pool_param = {"pool_height": case.window, "pool_width": case.window, "stride": case.stride}
    out, _ = avg_pool_forward_fast(x, pool_param)
    dout = rng.standard_normal(out.shape).astype(dtype)

    def fast_forward_backward() -> None:
        _, cache = avg_pool_forward_fast(x, pool_param)
        avg_pool_backward_fast(dout, cache)

    def naive_forward_backward() -> None:
        _, cache = avg_pool_forward_naive(x, pool_param)
        avg_pool_backward_naive(dout, cache)

    candidates = {"fast f+b": fast_forward_backward, "copy x": x.copy}
    if torch is not None:
        import torch.nn.functional as functional

        tx = torch.from_numpy(x).requires_grad_()
        tdout = torch.from_numpy(dout)

        def torch_forward_backward() -> None:
            functional.avg_pool2d(tx, case.window, case.stride).backward(tdout)

        candidates["torch f+b"] = torch_forward_backward
    return candidates, naive_forward_backward


def peak_extra_mib(case: ConvCase, batch: int, dtype: np.dtype) -> tuple[float, float]:
    """Peak memory of a fast conv forward+backward beyond its inputs, in MiB.

    Returns the peak of all allocations, and the part of it beyond the output and the
    three gradients the call must return anyway.
    """
    rng = np.random.default_rng(0)
    shape = (batch, *case.x_shape[1:])
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(case.w_shape).astype(dtype)
    b = np.zeros(case.w_shape[0], dtype=dtype)
    conv_param = {"stride": case.stride, "pad": case.pad}
    out_h, out_w = case.out_hw()
    dout = np.ones((batch, case.w_shape[0], out_h, out_w), dtype=dtype)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    out, cache = conv_forward_fast(x, w, b, conv_param)
    dx, dw, db = conv_backward_fast(dout, cache)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    necessary = out.nbytes + dx.nbytes + dw.nbytes + db.nbytes
    return (peak - base) / 2**20, (peak - base - necessary) / 2**20


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None:
        return "-"
    return f"{numerator / denominator:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


COLD_CANDIDATES = ("fast f+b", "torch f+b")


def time_regimes(
    candidates: dict[str, Callable[[], object]], args
) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per call in both regimes: steady (``--steady-calls`` back-to-back calls
    after ``--pause`` and an untimed call, as training calls a layer) and cold (one call
    after ``--cold-pause`` seconds of idle and an untimed call, as the first layer of a
    step or an interactive call sees it; only the candidates in ``COLD_CANDIDATES``)."""
    steady = interleaved_medians(candidates, args.repeats, args.pause, args.steady_calls)
    cold_candidates = {name: run for name, run in candidates.items() if name in COLD_CANDIDATES}
    cold = interleaved_medians(cold_candidates, args.repeats, args.cold_pause, 1)
    return steady, cold


def measurements(args, torch, rng, names: list[str], cases: dict, make_candidates):
    """Time every case, dtype and thread count in both regimes; yield (threads, name, case,
    dtype, steady, cold, naive_ms), with naive_ms None where the naive layers were not
    timed."""
    for threads in args.threads:
        set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        restore_blas_threads()  # else a pending restore could lift the limit below
        with threadpool_limits(threads):
            for name in names:
                case = cases[name]
                for dtype in args.dtypes:
                    candidates, naive = make_candidates(case, dtype, torch, rng)
                    steady, cold = time_regimes(candidates, args)
                    run_naive = args.naive == "all" or (
                        args.naive == "default" and name in NAIVE_BY_DEFAULT
                    )
                    naive_ms = time_once_ms(naive) if run_naive else None
                    yield threads, name, case, dtype, steady, cold, naive_ms


def _print_table(header: str, rows) -> list[str]:
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    print("\n".join(lines), flush=True)
    for row in rows:
        lines.append(row)
        print(row, flush=True)
    return lines


REGIME_HEADER = (
    "steady: fast f+b | torch f+b | fast/torch | cold: fast f+b | torch f+b | fast/torch"
)


def _regime_cells(steady: dict[str, float], cold: dict[str, float]) -> str:
    return " | ".join(
        f"{_ms(times['fast f+b'])} | {_ms(times.get('torch f+b'))} "
        f"| {_ratio(times['fast f+b'], times.get('torch f+b'))}"
        for times in (steady, cold)
    )


def conv_table(args, torch, rng) -> list[str]:
    header = (
        "| case | dtype | thr | algorithm | naive f+b | GEMM f+b | fast fwd | torch fwd "
        f"| {REGIME_HEADER} | steady f+b/GEMM | GFLOP/s |"
    )
    rows = (
        f"| {name} | {dtype.name} | {threads} | {conv_algorithm_label(case)} "
        f"| {_ms(naive_ms)} | {_ms(steady.get('GEMM f+b'))} | {_ms(steady['fast fwd'])} "
        f"| {_ms(steady.get('torch fwd'))} | {_regime_cells(steady, cold)} "
        f"| {_ratio(steady['fast f+b'], steady.get('GEMM f+b'))} "
        f"| {3 * case.forward_flops() / (steady['fast f+b'] * 1e6):.0f} |"
        for threads, name, case, dtype, steady, cold, naive_ms in measurements(
            args, torch, rng, args.conv_cases, CONV_CASES, conv_candidates
        )
    )
    return _print_table(header, rows)


def pool_table(args, torch, rng) -> list[str]:
    header = f"| case | dtype | thr | window/stride | naive f+b | copy x | {REGIME_HEADER} |"
    rows = (
        f"| {name} {case.x_shape} | {dtype.name} | {threads} "
        f"| {case.window}x{case.window}/{case.stride} | {_ms(naive_ms)} "
        f"| {_ms(steady['copy x'])} | {_regime_cells(steady, cold)} |"
        for threads, name, case, dtype, steady, cold, naive_ms in measurements(
            args, torch, rng, args.pool_cases, POOL_CASES, pool_candidates
        )
    )
    return _print_table(header, rows)


def transpose_table(args, torch, rng) -> list[str]:
    header = (
        "| case | dtype | thr | x, w (C, F, kh, kw), stride, pad | naive f+b | fast fwd "
        f"| torch fwd | {REGIME_HEADER} |"
    )
    rows = (
        f"| {name} | {dtype.name} | {threads} | {case.x_shape} {case.w_shape} s{case.stride} "
        f"p{case.pad} | {_ms(naive_ms)} | {_ms(steady['fast fwd'])} "
        f"| {_ms(steady.get('torch fwd'))} | {_regime_cells(steady, cold)} |"
        for threads, name, case, dtype, steady, cold, naive_ms in measurements(
            args, torch, rng, args.transpose_cases, TRANSPOSE_CASES, transpose_candidates
        )
    )
    return _print_table(header, rows)


def avg_pool_table(args, torch, rng) -> list[str]:
    header = f"| case | dtype | thr | window/stride | naive f+b | copy x | {REGIME_HEADER} |"
    rows = (
        f"| {name} {case.x_shape} | {dtype.name} | {threads} "
        f"| {case.window}x{case.window}/{case.stride} | {_ms(naive_ms)} "
        f"| {_ms(steady['copy x'])} | {_regime_cells(steady, cold)} |"
        for threads, name, case, dtype, steady, cold, naive_ms in measurements(
            args, torch, rng, args.avg_pool_cases, AVG_POOL_CASES, avg_pool_candidates
        )
    )
    return _print_table(header, rows)


def memory_table(args) -> list[str]:
    case = CONV_CASES["b"]
    rows = (
        f"| {batch} | {dtype.name} | {peak:.1f} | {beyond:.1f} |"
        for batch in args.memory_batches
        for dtype in args.dtypes
        for peak, beyond in [peak_extra_mib(case, batch, dtype)]
    )
    return _print_table("| case b, batch | dtype | peak extra MiB | beyond out + grads MiB |", rows)


def _names(text: str, known: dict) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown case(s) {unknown}; known: {list(known)}")
    return names


def _train_steps(text: str) -> list[tuple[str, int]]:
    steps = []
    for item in filter(None, text.split(",")):
        network, _, batch = item.partition(":")
        if network not in TRAIN_STEPS:
            raise argparse.ArgumentTypeError(
                f"unknown network {network!r}; known: {list(TRAIN_STEPS)}"
            )
        steps.append((network, int(batch) if batch else TRAIN_STEPS[network]))
    return steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convnet bench", description="Time convnet's layers against naive, GEMM, PyTorch."
    )
    parser.add_argument(
        "--conv",
        dest="conv_cases",
        default="a,b,c,d,dil,dw",
        type=lambda text: _names(text, CONV_CASES),
        help="convolution cases, comma-separated (default a,b,c,d,dil,dw; '' for none)",
    )
    parser.add_argument(
        "--transpose",
        dest="transpose_cases",
        default="t1",
        type=lambda text: _names(text, TRANSPOSE_CASES),
        help="transposed-convolution cases (default t1; '' for none)",
    )
    parser.add_argument(
        "--avg-pool",
        dest="avg_pool_cases",
        default="ap1,ap2",
        type=lambda text: _names(text, AVG_POOL_CASES),
        help="average-pooling cases (default ap1,ap2; '' for none)",
    )
    parser.add_argument(
        "--pool",
        dest="pool_cases",
        default="p1,p2,p3",
        type=lambda text: _names(text, POOL_CASES),
        help="pooling cases (default p1,p2,p3; '' for none)",
    )
    parser.add_argument(
        "--dtypes",
        default="float32,float64",
        type=lambda text: [np.dtype(name) for name in text.split(",")],
    )
    parser.add_argument(
        "--threads",
        default="2",
        type=lambda text: [int(count) for count in text.split(",")],
        help="thread counts to run, e.g. 1,2 (default 2)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="samples per candidate")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.1,
        help="seconds of pause before each steady-state sample (default 0.1)",
    )
    parser.add_argument(
        "--steady-calls",
        type=int,
        default=20,
        help="back-to-back calls timed in each steady-state sample (default 20)",
    )
    parser.add_argument(
        "--cold-pause",
        type=float,
        default=0.25,
        help="seconds of idle before each cold call (default 0.25)",
    )
    parser.add_argument(
        "--naive",
        choices=("default", "all", "none"),
        default="default",
        help="time the naive layers once: on cases a and p1, all, or none",
    )
    parser.add_argument(
        "--train-step",
        dest="train_steps",
        default="3layer,resnet",
        type=_train_steps,
        help="training steps on 3x32x32 images: 3layer (ThreeLayerConvNet, batch "
        f"{TRAIN_STEPS['3layer']}) and resnet (convnet.models.resnet, batch "
        f"{TRAIN_STEPS['resnet']}), NAME:BATCH for another batch ('' for none)",
    )
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument(
        "--memory",
        dest="memory_batches",
        default="64,1024",
        type=lambda text: [int(count) for count in text.split(",") if count],
        help="batch sizes for the peak-memory table on case b ('' for none)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark tables (markdown); return the exit status."""
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    torch = None if args.no_torch else _torch(max(args.threads))
    rng = np.random.default_rng(args.seed)
    print(
        f"convnet backend {_backend.BACKEND}; numpy {np.__version__} "
        f"(OpenBLAS core {','.join(openblas_cores()) or '-'}); "
        f"torch {getattr(torch, '__version__', 'absent')}; {cpu_name()}\n"
        f"ms per call, median of {args.repeats} interleaved samples; steady: a sample is "
        f"{args.steady_calls} back-to-back calls after a {args.pause} s pause and an untimed "
        f"call; cold: one call after a {args.cold_pause} s pause and an untimed call"
    )
    if args.conv_cases:
        print(
            "\nConvolution (fwd = forward, steady; f+b = forward + backward, input gradient "
            "included; GEMM = the algorithm's matrix products alone, on the whole batch)"
        )
        conv_table(args, torch, rng)
    if args.pool_cases:
        print("\nMax pool, forward + backward")
        pool_table(args, torch, rng)
    if args.transpose_cases:
        print("\nTransposed convolution (fwd = forward, steady; f+b = forward + backward)")
        transpose_table(args, torch, rng)
    if args.avg_pool_cases:
        print("\nAverage pool, forward + backward")
        avg_pool_table(args, torch, rng)
    if args.train_steps:
        print("\nTraining step: forward, softmax loss, backward, SGD update")
        train_step_table(args, torch, rng)
    if args.memory_batches:
        print("\nPeak memory of a fast conv forward+backward (tracemalloc)")
        memory_table(args)
    return 0


def torch_network(net: Module, torch) -> Any:
    """The same network as a ``torch.nn.Module``, with a copy of ``net``'s parameters and
    buffers (every convnet model's ``model.net``: ThreeLayerConvNet's, resnet's, ...).

    Every layer of :mod:`convnet.nn` maps to its PyTorch counterpart (batch norm's momentum
    ``m`` to PyTorch's ``1 - m``, dropout's keep probability ``p`` to ``1 - p``, a linear
    layer's ``w`` (in, out) to ``weight`` (out, in)); a :class:`convnet.nn.Residual` adds
    its body and its shortcut.
    """
    from torch import nn as tnn

    class TorchResidual(tnn.Module):
        def __init__(self, body: Any, shortcut: Any) -> None:
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x: Any) -> Any:
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    dtype = next(iter(net.params.values())).dtype if net.params else np.dtype(np.float32)
    torch_dtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype.type]

    def tensor(array: np.ndarray) -> Any:
        return tnn.Parameter(torch.from_numpy(np.array(array)))

    def convert(module: Module) -> Any:
        if isinstance(module, nn.Sequential):
            return tnn.Sequential(*(convert(child) for _, child in module.children()))
        if isinstance(module, nn.Residual):
            shortcut = None if module.shortcut is None else convert(module.shortcut)
            return TorchResidual(convert(module.body), shortcut)
        p = module.params
        if isinstance(module, nn.Conv2d):
            layer = tnn.Conv2d(
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.pad,
                module.dilation,
                module.groups,
                module.bias,
            )
            layer.weight = tensor(p["w"])
            if module.bias:
                layer.bias = tensor(p["b"])
            return layer
        if isinstance(module, nn.Linear):
            layer = tnn.Linear(module.in_features, module.out_features)
            layer.weight, layer.bias = tensor(p["w"].T), tensor(p["b"])
            return layer
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            kind = tnn.BatchNorm2d if isinstance(module, nn.BatchNorm2d) else tnn.BatchNorm1d
            layer = kind(module.num_features, module.eps, 1 - module.momentum, dtype=torch_dtype)
            layer.weight, layer.bias = tensor(p["gamma"]), tensor(p["beta"])
            statistics = module.buffers()
            layer.running_mean.copy_(torch.from_numpy(statistics["running_mean"]))
            layer.running_var.copy_(torch.from_numpy(statistics["running_var"]))
            return layer
        if isinstance(module, nn.LayerNorm):
            layer = tnn.LayerNorm(module.num_features, module.eps, dtype=torch_dtype)
            layer.weight, layer.bias = tensor(p["gamma"]), tensor(p["beta"])
            return layer
        if isinstance(module, nn.AvgPool2d):
            return tnn.AvgPool2d(module.kernel_size, module.stride)
        if isinstance(module, nn.MaxPool2d):
            return tnn.MaxPool2d(module.kernel_size, module.stride)
        if isinstance(module, nn.GlobalAvgPool):
            return tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten())
        if isinstance(module, nn.Dropout):
            return tnn.Dropout(1 - module.p)
        simple = {nn.ReLU: tnn.ReLU, nn.Flatten: tnn.Flatten}
        return simple[type(module)]()

    return convert(net).to(torch_dtype)


TRAIN_STEPS = {"3layer": 50, "resnet": 64}


def train_step_candidates(
    network: str, batch: int, dtype: np.dtype, torch, rng: np.random.Generator
) -> dict[str, Callable[[], object]]:
    """One SGD training step (forward, softmax loss, backward, update) of ``network`` on
    CIFAR-10 sized images, in convnet and (when installed) in PyTorch with the same
    weights: ThreeLayerConvNet's defaults (``3layer``) or ``convnet.models.resnet()``."""
    if network == "3layer":
        model = ThreeLayerConvNet(dtype=dtype, seed=0)
    else:
        model = resnet((3, 32, 32), dtype=dtype, seed=0)
    X = rng.standard_normal((batch, 3, 32, 32)).astype(dtype)
    y = rng.integers(0, 10, size=batch)
    config = {"learning_rate": 1e-3}

    def convnet_step() -> None:
        _, grads = model.loss(X, y)
        for name, value in model.params.items():
            model.params[name], _ = sgd(value, grads[name], config)

    candidates: dict[str, Callable[[], object]] = {"fast f+b": convnet_step}
    if torch is not None:
        net = torch_network(model.net, torch).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
        images, labels = torch.from_numpy(X), torch.from_numpy(y)

        def torch_step() -> None:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(images), labels).backward()
            optimizer.step()

        candidates["torch f+b"] = torch_step
    return candidates


def _images_per_second(batch: int, times: dict[str, float]) -> str:
    ours, theirs = times["fast f+b"], times.get("torch f+b")
    speed = f"{batch / ours * 1e3:.0f}"
    return f"{speed} | -" if theirs is None else f"{speed} | {theirs / ours:.2f}"


def train_step_table(args, torch, rng) -> list[str]:
    header = (
        "| training step | dtype | thr | steady: convnet ms | torch ms | images/s "
        "| images/s vs torch | cold: convnet ms | torch ms | images/s | images/s vs torch |"
    )
    rows = []
    for threads in args.threads:
        set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        restore_blas_threads()  # else a pending restore could lift the limit below
        with threadpool_limits(threads):
            for network, batch in args.train_steps:
                for dtype in args.dtypes:
                    candidates = train_step_candidates(network, batch, dtype, torch, rng)
                    steady, cold = time_regimes(candidates, args)
                    rows.append(
                        f"| {network} ({batch},3,32,32) | {dtype.name} | {threads} | "
                        + " | ".join(
                            f"{_ms(times['fast f+b'])} | {_ms(times.get('torch f+b'))} "
                            f"| {_images_per_second(batch, times)}"
                            for times in (steady, cold)
                        )
                        + " |"
                    )
    return _print_table(header, rows)


if __name__ == "__main__":
    raise SystemExit(main())
