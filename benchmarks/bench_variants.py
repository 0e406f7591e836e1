"""Dilated, depthwise and transposed convolution f+b: convnet against PyTorch, float32.

Two measures per library, candidates interleaved sample by sample, medians quoted:
process CPU time with one thread (what the kernels cost, robust on a shared machine)
and, with two threads, wall time and the CPU/wall ratio (how well the call uses both
cores: 2.0 is perfect scaling, 1.0 one core). ``convnet bench`` gives the two-thread
wall-time table on a quiet machine.

    env -u OPENBLAS_CORETYPE nice -n 19 python benchmarks/bench_variants.py --repeats 30
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from convnet._blas_core import use_fast_core
from convnet._memory import keep_freed_memory
from convnet._parallel import restore_blas_threads, set_num_threads
from convnet.bench.cases import CONV_CASES, TRANSPOSE_CASES, conv_candidates, transpose_candidates


def sample(run: Callable[[], object]) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call after a brief pause and an untimed call."""
    time.sleep(0.02)
    run()
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, np.ndarray]:
    """Median (wall, CPU) per candidate, the candidates interleaved sample by sample."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(sample(run))
    return {name: 1e3 * np.median(np.array(rows), axis=0) for name, rows in samples.items()}


def cases(torch, rng: np.random.Generator, names: list[str]):
    dtype = np.dtype(np.float32)
    for name in names:
        if name in CONV_CASES:
            candidates, _ = conv_candidates(CONV_CASES[name], dtype, torch, rng)
        else:
            candidates, _ = transpose_candidates(TRANSPOSE_CASES[name], dtype, torch, rng)
        yield name, {"convnet": candidates["fast f+b"], "torch": candidates["torch f+b"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--cases", default="dil,dw,t1")
    args = parser.parse_args(argv)
    import torch

    keep_freed_memory()
    names = [name for name in args.cases.split(",") if name]
    rng = np.random.default_rng(0)
    print(
        "| case | 1-thread CPU ms convnet / torch (ratio) | 2-thread wall ms convnet / torch "
        "(ratio) | 2-thread CPU/wall convnet / torch |"
    )
    print("|---|---|---|---|")
    measured = list(cases(torch, rng, names))
    for _, runs in measured:  # warm up
        for run in runs.values():
            for _ in range(10):
                run()
    for name, runs in measured:
        torch.set_num_threads(1)
        set_num_threads(1)
        # Give BLAS its threads back first: the delayed restore of a two-thread call would
        # otherwise raise the one-thread limit below to two in mid-measurement.
        restore_blas_threads()
        with threadpool_limits(1):
            one = medians(runs, args.repeats)
        torch.set_num_threads(2)
        set_num_threads(2)
        two = medians(runs, args.repeats)
        mine, theirs = one["convnet"][1], one["torch"][1]
        wall_mine, wall_theirs = two["convnet"][0], two["torch"][0]
        print(
            f"| {name} | {mine:.2f} / {theirs:.2f} ({mine / theirs:.2f}x) | {wall_mine:.2f} / "
            f"{wall_theirs:.2f} ({wall_mine / wall_theirs:.2f}x) | "
            f"{two['convnet'][1] / wall_mine:.2f} / {two['torch'][1] / wall_theirs:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    use_fast_core()
    main()
