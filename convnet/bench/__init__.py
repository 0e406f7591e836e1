"""Layer benchmark: fast vs naive vs the GEMM alone vs PyTorch, for convolution (dilated,
depthwise and transposed included) and max and average pooling; training steps of the
networks people train; where a step goes, layer by layer; and the float32 step's precision.

Run as ``convnet bench`` or ``python benchmarks/bench_layers.py``; ``--help`` lists the
options. Like training, the benchmark first calls :func:`convnet.keep_freed_memory`, which
applies to every library in the process (PyTorch included). Every table names the CPU.

The tables, each selected by its option ('' for none) or by ``--only PART,...``:

- ``--conv``, ``--pool``, ``--transpose``, ``--avg-pool``: one layer's forward + backward.
- ``--train-step NAME[:BATCH],...`` (default ``3layer,resnet,resnet-wide,vgg``): one SGD
  step (forward, softmax loss, backward, update) of ThreeLayerConvNet (batch 50),
  ``convnet.models.resnet()`` (widths (16, 32, 64), 1 block), the resnet with widths
  (32, 64, 128) and 2 blocks, and ``convnet.models.vgg()`` (batch 64), on 3x32x32 images,
  beside the same network in PyTorch with the same weights in both layouts (NCHW and
  channels_last): convnet's images/s relative to the faster layout's, steady and cold.
  Samples are ``--step-calls`` back-to-back steps. The wide resnet and vgg run float32
  only (PyTorch's float64 steps of them take seconds).
- ``--layers NAME[:BATCH],...`` (default ``resnet,vgg``): every layer's forward and
  backward time inside real float32 training steps (convnet's layer methods wrapped,
  PyTorch's modules hooked, all restored afterwards), the sum of the layers and the whole
  step; a sample is the mean of ``--layer-calls`` steps.
- ``--precision NAME[:BATCH],...`` (default ``resnet``; networks without dropout): the
  float32 step's loss and gradient errors relative to the float64 step's (relative to the
  largest gradient of each parameter, the largest over the parameters) with the default
  convolution algorithm and with every convolution im2col, their steady times, and
  PyTorch float32's errors.
- ``--memory``: peak memory of a convolution.

The package's modules: :mod:`~convnet.bench.harness` (interleaved medians in the steady
and cold regimes), :mod:`~convnet.bench.cases` (the layer cases and what is timed for
each), :mod:`~convnet.bench.train_step` (the networks and their steps),
:mod:`~convnet.bench.layer_times` (per-layer timers), :mod:`~convnet.bench.precision`,
:mod:`~convnet.bench.tables` (the markdown tables) and
:mod:`~convnet.bench.torch_reference` (convnet's networks in PyTorch); this one parses the
arguments and prints the tables.
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
    layer_table,
    memory_table,
    pool_table,
    precision_table,
    train_step_table,
    transpose_table,
)
from convnet.bench.torch_reference import load_torch
from convnet.bench.train_step import TRAIN_STEPS

# --only's parts -> the option (its destination) that selects the part's cases
PARTS = {
    "conv": "conv_cases",
    "pool": "pool_cases",
    "transpose": "transpose_cases",
    "avg-pool": "avg_pool_cases",
    "train-step": "train_steps",
    "layers": "layer_steps",
    "precision": "precision_steps",
    "memory": "memory_batches",
}


def _names(text: str, known: dict) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown case(s) {unknown}; known: {list(known)}")
    return names


def _train_steps(text: str, known: tuple[str, ...] = tuple(TRAIN_STEPS)) -> list[tuple[str, int]]:
    """NAME[:BATCH],... -> [(name, batch)], each name one of ``known``."""
    steps = []
    for item in filter(None, text.split(",")):
        network, _, batch = item.partition(":")
        if network not in known:
            raise argparse.ArgumentTypeError(f"unknown network {network!r}; known: {list(known)}")
        size = batch or str(TRAIN_STEPS[network].batch)
        if not size.isdigit() or int(size) < 1:
            raise argparse.ArgumentTypeError(
                f"the batch of {network} must be a positive int, got {batch!r}"
            )
        steps.append((network, int(size)))
    return steps


def _parts(text: str) -> list[str]:
    return _names(text, PARTS)


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
    networks = ", ".join(
        f"{name} ({network.label}, batch {network.batch})" for name, network in TRAIN_STEPS.items()
    )
    parser.add_argument(
        "--train-step",
        dest="train_steps",
        metavar="NAME[:BATCH],...",
        default="3layer,resnet,resnet-wide,vgg",
        type=_train_steps,
        help=f"training steps on 3x32x32 images, in convnet and PyTorch (NCHW and "
        f"channels_last): {networks}; NAME:BATCH for another batch ('' for none; "
        "resnet-wide and vgg float32 only)",
    )
    parser.add_argument(
        "--step-calls",
        type=int,
        default=5,
        help="back-to-back training steps in each steady sample of the training-step table, "
        "the precision table's times and the per-layer table's step without timers "
        "(default 5)",
    )
    parser.add_argument(
        "--layers",
        dest="layer_steps",
        metavar="NAME[:BATCH],...",
        default="resnet,vgg",
        type=_train_steps,
        help="per-layer tables: each layer's forward and backward ms inside float32 training "
        "steps of these networks (NAME[:BATCH] as --train-step; '' for none)",
    )
    parser.add_argument(
        "--layer-calls",
        type=int,
        default=2,
        help="timed training steps whose mean is one sample of the per-layer table (default 2)",
    )
    no_dropout = tuple(name for name, network in TRAIN_STEPS.items() if not network.dropout)
    parser.add_argument(
        "--precision",
        dest="precision_steps",
        metavar="NAME[:BATCH],...",
        default="resnet",
        type=lambda text: _train_steps(text, no_dropout),
        help="float32 step's loss and gradient errors relative to float64, default "
        f"convolutions and all im2col, and PyTorch's (networks {', '.join(no_dropout)}; "
        "NAME[:BATCH]; '' for none)",
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
    parser.add_argument(
        "--only",
        metavar="PART,...",
        type=_parts,
        help=f"print only these tables (comma-separated, of {', '.join(PARTS)}), with "
        "their cases as the other options select them",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark tables (markdown); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("repeats", "step_calls", "layer_calls", "steady_calls"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if args.only is not None:
        for part, destination in PARTS.items():
            if part not in args.only:
                setattr(args, destination, [])
    keep_freed_memory()
    torch = None if args.no_torch else load_torch(max(args.threads))
    rng = np.random.default_rng(args.seed)
    print(
        f"convnet backend {_backend.BACKEND}; numpy {np.__version__} "
        f"(OpenBLAS core {','.join(openblas_cores()) or '-'}); "
        f"torch {getattr(torch, '__version__', 'absent')}; {cpu_name()}\n"
        f"ms per call, median of {args.repeats} interleaved samples; steady: a sample is "
        f"{args.steady_calls} back-to-back calls ({args.step_calls} training steps) after a "
        f"{args.pause} s pause and an untimed "
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
    cpu = cpu_name()
    if args.train_steps:
        print(
            f"\nTraining step: forward, softmax loss, backward, SGD update; {cpu}; "
            f"samples of {args.step_calls} steps"
        )
        train_step_table(args, torch, rng)
    for threads in args.threads:
        for network, batch in args.layer_steps:
            print(
                f"\nWhere a float32 training step goes: {TRAIN_STEPS[network].label} "
                f"({batch},3,32,32), {threads} threads, {cpu}. ms per layer inside real steps "
                f"(median of {args.repeats} samples, each the mean of {args.layer_calls} "
                "steps); the whole step: fwd until the network's forward pass returned, bwd "
                "the rest (loss, backward, update); f+b vs faster PyTorch: convnet's forward + "
                "backward over the faster layout's, row by row (below 1: convnet is faster)"
            )
            layer_table(args, torch, rng, network, batch, threads)
        for network, batch in args.precision_steps:
            print(
                f"\nPrecision: a float32 training step of {TRAIN_STEPS[network].label} "
                f"({batch},3,32,32) against the float64 step, same weights and images; "
                f"{threads} threads, {cpu}. Errors relative to |float64 loss| and to each "
                "parameter's largest float64 gradient (the largest over the parameters)"
            )
            precision_table(args, torch, rng, network, batch, threads)
    if args.memory_batches:
        print("\nPeak memory of a fast conv forward+backward (tracemalloc)")
        memory_table(args)
    return 0
