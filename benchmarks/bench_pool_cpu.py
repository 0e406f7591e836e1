"""Max pool forward+backward in CPU time, one thread each: convnet against PyTorch.

On a machine others are using, wall-clock times of two-thread calls mostly measure the
wait for a free core (PyTorch's OpenMP threads suffer most); CPU time of one thread is
what each library's kernels cost. ``convnet bench`` gives the two-thread wall times.

    python benchmarks/bench_pool_cpu.py --repeats 50
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from convnet._blas_core import use_fast_core
from convnet._parallel import set_num_threads
from convnet.bench.cases import POOL_CASES, pool_candidates


def cpu_ms(run: Callable[[], object], repeats: int) -> float:
    """Median thread CPU milliseconds of one call."""
    run()
    samples = []
    for _ in range(repeats):
        start = time.thread_time()
        run()
        samples.append(time.thread_time() - start)
    return 1e3 * float(np.median(samples))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None
    set_num_threads(1)
    rng = np.random.default_rng(0)
    print("| case | dtype | window/stride | convnet CPU ms | torch CPU ms | convnet/torch |")
    print("|---|---|---|---|---|---|")
    with threadpool_limits(1):
        for name, case in POOL_CASES.items():
            for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
                candidates, _ = pool_candidates(case, dtype, torch, rng)
                fast = cpu_ms(candidates["fast f+b"], args.repeats)
                reference = candidates.get("torch f+b")
                theirs = None if reference is None else cpu_ms(reference, args.repeats)
                ratio = "-" if theirs is None else f"{fast / theirs:.2f}"
                print(
                    f"| {name} {case.x_shape} | {dtype.name} | {case.window}x{case.window}/"
                    f"{case.stride} | {fast:.3f} | {'-' if theirs is None else f'{theirs:.3f}'} "
                    f"| {ratio} |"
                )


if __name__ == "__main__":
    use_fast_core()
    main()
