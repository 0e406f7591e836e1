"""Cold calls against steady ones, with the workers placed off the caller's CPU or not.

A cold sample is what the first layer call after an idle moment costs: a pause, one
untimed call, then the timed call. A steady sample is the median of back-to-back calls.
The two placements alternate sample by sample in one process (``_parallel.PLACE_WORKERS``
switched between samples; switched off, the workers get every allowed CPU back). Each cold
call also records, per group, the CPU the caller and the worker ran on: "shared" counts
the cold calls in which the worker started on the caller's CPU.

    python benchmarks/bench_cold_threads.py --samples 30
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from convnet import _parallel, fast_pool, winograd
from convnet._blas_core import use_fast_core
from convnet._memory import keep_freed_memory
from convnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)

_cpus: list[tuple[bool, int]] = []


def _record_cpus(map_groups: Callable) -> Callable:
    """Wrap map_groups so each group notes (on the calling thread?, its CPU at start)."""

    def traced(work, total, max_groups=None):
        def noted(start, stop):
            on_caller = threading.current_thread() is threading.main_thread()
            _cpus.append((on_caller, _parallel._sched_getcpu()))
            return work(start, stop)

        return map_groups(noted, total, max_groups)

    return traced


def wake_placement(samples: int, pause: float) -> None:
    """The cause, measured alone: how often a sleeping pool thread, handed a task while
    its caller keeps working (as the caller does its own group), wakes on the caller's
    CPU."""
    getcpu = _parallel._sched_getcpu
    pool = ThreadPoolExecutor(1)
    pool.submit(getcpu).result()
    print(f"\nA sleeping worker handed a task after {pause} s idle, caller busy for 2 ms:")
    print("| placement | worker on the caller's CPU |")
    print("|---|---|")
    for place in (False, True):
        same = 0
        for _ in range(samples):
            time.sleep(pause)
            caller = getcpu()
            others = frozenset(os.sched_getaffinity(0) - {caller}) or None
            task = pool.submit(
                _parallel._run_placed, others if place else None, lambda a, b: getcpu(), 0, 1
            )
            end = time.perf_counter() + 0.002
            while time.perf_counter() < end:
                pass
            same += task.result() == caller
        label = "off the caller's CPU" if place else "where the scheduler puts it"
        print(f"| {label} | {same}/{samples} |")
    pool.shutdown()


def workloads(rng: np.random.Generator) -> dict[str, Callable[[], None]]:
    x = rng.standard_normal((64, 64, 16, 16)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    b = np.zeros(64, dtype=np.float32)
    dout = rng.standard_normal((64, 64, 16, 16)).astype(np.float32)
    pool = {"pool_height": 3, "pool_width": 3, "stride": 2}
    pool_dout = rng.standard_normal((64, 64, 7, 7)).astype(np.float32)

    def conv() -> None:
        _, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
        conv_backward_fast(dout, cache)

    def max_pool() -> None:
        _, cache = max_pool_forward_fast(x, pool)
        max_pool_backward_fast(pool_dout, cache)

    return {"conv c f+b float32": conv, "max pool 3x3/2 f+b float32": max_pool}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30, help="samples per placement")
    parser.add_argument("--pause", type=float, default=0.25, help="idle seconds before cold")
    parser.add_argument("--steady-calls", type=int, default=10)
    args = parser.parse_args(argv)
    keep_freed_memory()
    _parallel.set_num_threads(2)
    if _parallel._sched_getcpu is None:
        print("worker placement needs Linux: nothing to compare here")
        return
    wake_placement(args.samples, args.pause)
    for module in (winograd, fast_pool):  # the groups of the workloads below
        module.map_groups = _record_cpus(module.map_groups)
    rng = np.random.default_rng(0)
    for name, run in workloads(rng).items():
        cold: dict[bool, list[float]] = {True: [], False: []}
        steady: dict[bool, list[float]] = {True: [], False: []}
        shared = {True: 0, False: 0}
        for _ in range(args.samples):
            for place in (False, True):
                _parallel.PLACE_WORKERS = place
                time.sleep(args.pause)
                run()
                _cpus.clear()
                start = time.perf_counter()
                run()
                cold[place].append(time.perf_counter() - start)
                callers = {cpu for on_caller, cpu in _cpus if on_caller}
                shared[place] += any(cpu in callers for on_caller, cpu in _cpus if not on_caller)
                times = []
                for _ in range(args.steady_calls):
                    start = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - start)
                steady[place].append(float(np.median(times)))
        _parallel.PLACE_WORKERS = True
        print(f"\n{name}: median ms of {args.samples} samples, 2 threads")
        print("| workers | cold | steady | cold/steady | worker on the caller's CPU (cold calls) |")
        print("|---|---|---|---|---|")
        for place, label in (
            (False, "where the scheduler puts them"),
            (True, "off the caller's CPU"),
        ):
            c, s = 1e3 * np.median(cold[place]), 1e3 * np.median(steady[place])
            print(f"| {label} | {c:.2f} | {s:.2f} | {c / s:.2f} | {shared[place]}/{args.samples} |")


if __name__ == "__main__":
    use_fast_core()
    main()
