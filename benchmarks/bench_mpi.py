"""Data-parallel training steps over MPI: 1 process x 2 threads against 2 ranks x 1 thread.

A step is what the Solver does with a communicator: each rank computes the loss and
gradients of its slice of the global batch, one Allreduce sums the weighted gradients,
every rank applies the same SGD update. The net is ThreeLayerConvNet's default (CIFAR-10
shapes, conv 7x7 with 32 filters) in float32.

The driver runs the configurations interleaved, ``--rounds`` times each: one process with
``CONVNET_NUM_THREADS=2`` and ``mpiexec -n 2`` with one thread per rank (the mpiexec beside
this interpreter). Each run makes untimed warm-up steps, then ``--samples`` samples of
``--steps`` back-to-back steps; the table gives medians over all samples of all rounds.
``comm`` is the time rank 0 spends in the gradient Allreduce during the steps (including
waiting for the slower rank), ``Allreduce alone`` the same Allreduce timed after a barrier.
A model on paper then extends the measurement to 8 and 64 machines.

    python benchmarks/bench_mpi.py --batch 50 --rounds 5

(with convnet installed, or from the source tree with ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from convnet import distributed, keep_freed_memory
from convnet._blas_core import cpu_name
from convnet.models import ThreeLayerConvNet
from convnet.optim import sgd

# Two networks for the model on paper: (name, latency alpha in s, bandwidth beta in B/s).
NETWORKS = (("10 Gbit/s Ethernet", 50e-6, 1.25e9), ("100 Gbit/s InfiniBand", 2e-6, 12.5e9))
MACHINES = (1, 2, 8, 64)


def worker(batch: int, steps: int, samples: int, warmup: int) -> None:
    """Time training steps on this rank; rank 0 prints one JSON line."""
    keep_freed_memory()
    ranks = distributed.Ranks(distributed.world())
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model = ThreeLayerConvNet(seed=0)
    mine = ranks.share(batch)
    config = {"learning_rate": 1e-3}

    def step() -> None:
        _, grads = ranks.loss_and_gradients(model, X[mine], y[mine], batch)
        for name, value in model.params.items():
            model.params[name], _ = sgd(value, grads[name], config)

    for _ in range(warmup):
        step()
    step_seconds, comm_seconds = [], []
    for _ in range(samples):
        ranks.communication_seconds = 0.0
        started = time.perf_counter()
        for _ in range(steps):
            step()
        step_seconds.append((time.perf_counter() - started) / steps)
        comm_seconds.append(ranks.communication_seconds / steps)
    params = sum(value.nbytes for value in model.params.values())
    alone = []
    if ranks.distributed:
        buffer = np.zeros(params // model.dtype.itemsize + 1, dtype=model.dtype)
        for _ in range(samples * steps):
            ranks.comm.Barrier()
            ranks.communication_seconds = 0.0
            ranks.allreduce_sum(buffer)
            alone.append(ranks.communication_seconds)
    if ranks.is_root:
        print(
            json.dumps(
                {
                    "step": step_seconds,
                    "comm": comm_seconds,
                    "allreduce": alone,
                    "bytes": params + model.dtype.itemsize if ranks.distributed else 0,
                    "param_bytes": params,
                }
            ),
            flush=True,
        )


def _run(ranks: int, threads: int, options: list[str]) -> dict:
    env = {**os.environ, "CONVNET_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--worker", *options]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks), *command]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def _paper_model(batch: int, step_seconds: float, param_bytes: int) -> None:
    """Steps on P machines of this kind. The Allreduce costs 2 log2(P) alpha + 2 (P-1)/P
    n/beta (Rabenseifner's reduce-scatter + allgather, what MPICH and Open MPI use for large
    messages) and does not overlap the computation. Weak scaling: every machine keeps
    ``batch`` images per step (global batch P * batch), computed in the measured step time.
    Strong scaling: the global batch stays ``batch``, each machine computes batch / P
    images in step_seconds / P (optimistic: small slices use the cores less well)."""
    print(
        f"\nModel: one machine computes {batch} images per step in {1e3 * step_seconds:.1f} ms; "
        f"the Allreduce moves n = {param_bytes / 1e6:.2f} MB of gradients."
    )
    print("| machines | network | allreduce ms | weak: step ms | images/s | efficiency |", end="")
    print(" strong: step ms | images/s | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, alpha, beta in NETWORKS:
        for machines in MACHINES:
            comm = 0.0
            if machines > 1:
                comm = 2 * math.log2(machines) * alpha
                comm += 2 * (machines - 1) / machines * param_bytes / beta
            weak = step_seconds + comm
            strong = step_seconds / machines + comm
            print(
                f"| {machines} | {name} | {1e3 * comm:.2f} | {1e3 * weak:.1f} | "
                f"{machines * batch / weak:,.0f} | {step_seconds / weak:.0%} | "
                f"{1e3 * strong:.1f} | {batch / strong:,.0f} | "
                f"{step_seconds / (machines * strong):.0%} |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50, help="global batch (images per step)")
    parser.add_argument("--steps", type=int, default=10, help="back-to-back steps per sample")
    parser.add_argument("--samples", type=int, default=5, help="samples per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs per config")
    parser.add_argument(
        "--model-step-ms",
        type=float,
        help="one machine's step time for the model on paper (default: the one measured)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.batch, args.steps, args.samples, args.warmup)
        return
    options = [f"--{key}={getattr(args, key)}" for key in ("batch", "steps", "samples", "warmup")]
    configs = {"1 process x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1)}
    results: dict[str, dict[str, list]] = {
        name: {"step": [], "comm": [], "allreduce": []} for name in configs
    }
    sizes: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, (ranks, threads) in configs.items():
            run = _run(ranks, threads, options)
            results[name]["step"] += run["step"]
            results[name]["comm"] += run["comm"]
            results[name]["allreduce"] += run["allreduce"]
            sizes["bytes"] = max(sizes.get("bytes", 0), run["bytes"])
            sizes["params"] = run["param_bytes"]
    print(
        f"ThreeLayerConvNet float32, global batch {args.batch}, 3x32x32; {cpu_name()}, "
        f"{os.cpu_count()} logical CPUs (load average {os.getloadavg()[0]:.1f} at the end); "
        f"medians of {args.rounds * args.samples} samples of {args.steps} steps"
    )
    print(
        "| configuration | step ms | images/s | comm ms per step | Allreduce alone ms "
        "| bytes Allreduced per step |"
    )
    print("|---|---|---|---|---|---|")
    for name, (ranks, _) in configs.items():
        step = float(np.median(results[name]["step"]))
        comm = float(np.median(results[name]["comm"]))
        alone = float(np.median(results[name]["allreduce"] or [0.0]))
        moved = f"{sizes['bytes']:,}" if ranks > 1 else "0"
        print(
            f"| {name} | {1e3 * step:.2f} | {args.batch / step:,.0f} | {1e3 * comm:.2f} | "
            f"{1e3 * alone:.2f} | {moved} |"
        )
    alone = float(np.median(results["1 process x 2 threads"]["step"]))
    if args.model_step_ms is not None:
        alone = args.model_step_ms / 1e3
    _paper_model(args.batch, alone, sizes["params"])


if __name__ == "__main__":
    main()
