"""Layer benchmark: fast vs naive vs the GEMM alone vs PyTorch, for convolution (dilated,
depthwise and transposed included) and max and average pooling, and training steps.

Run as ``convnet bench`` or ``python benchmarks/bench_layers.py``; ``--help`` lists the
options. Like training, the benchmark first calls :func:`convnet.keep_freed_memory`, which
applies to every library in the process (PyTorch included).

The package's modules: :mod:`~convnet.bench.harness` (interleaved medians in the steady
and cold regimes), :mod:`~convnet.bench.cases` (the layer cases and what is timed for
each), :mod:`~convnet.bench.train_step`, :mod:`~convnet.bench.tables` (the markdown
tables) and :mod:`~convnet.bench.torch_reference` (convnet's networks in PyTorch); this
one parses the arguments and prints the tables.
"""

from __future__ import annotations

import argparse

import numpy as np

from convnet import _backend
from convnet._blas_core import cpu_name, openblas_cores
from convnet._memory import keep_freed_memory
from convnet.bench.cases import AVG_POOL_CASES, CONV_CASES, POOL_CASES, TRANSPOSE_CASES
from convnet.bench.tables import (
    avg_pool_table,
    conv_table,
    memory_table,
    pool_table,
    train_step_table,
    transpose_table,
)
from convnet.bench.torch_reference import load_torch
from convnet.bench.train_step import TRAIN_STEPS


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
    torch = None if args.no_torch else load_torch(max(args.threads))
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
