"""How late the worker starts its group, and whether sharing chunks dynamically would help.

``map_groups`` splits the batch into one fixed group per thread: the caller runs its own
group at once, a worker runs the other once it is woken. When the worker starts late (a
sleeping vCPU, a busy core), the call waits for it and runs at one-thread speed. This
script prints, for the depthwise, dilated and transposed benchmark cases at two threads:

1. the worker's start delay in each multi-worker call (from ``map_groups`` being entered
   to the worker's group starting), after a pause as ``convnet bench`` makes;
2. forward + backward wall and CPU time with the fixed groups (``map_groups``) against a
   dynamic schedule defined here (the caller and the worker take chunks of images from
   a shared counter until none is left, so a late worker only takes what remains),
   interleaved sample by sample. Only the groups of the im2col and depthwise passes and
   of the phase copies switch schedule (``SCHEDULED``): for ``dil`` that is the phase
   split and merge, while the Winograd groups of ``convnet.winograd`` stay fixed.

Run it on a quiet machine: if another process holds a core, two threads do the work of one
whatever the schedule. Check with ``--check``, which times two threads of plain GEMMs.

    env -u OPENBLAS_CORETYPE python benchmarks/bench_worker_start.py --repeats 15
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait

import numpy as np
from threadpoolctl import threadpool_limits

from convnet import _im2col_conv, _parallel, _phases
from convnet._blas_core import use_fast_core
from convnet._memory import keep_freed_memory
from convnet._parallel import set_num_threads, single_threaded_blas, split
from convnet.bench.cases import CONV_CASES, TRANSPOSE_CASES, conv_candidates, transpose_candidates

# The modules whose map_groups the schedules below replace.
SCHEDULED = (_im2col_conv, _phases)

CHUNKS_PER_THREAD = 4


def map_dynamic(work: Callable[[int, int], object], total: int, max_groups: int | None = None):
    """``map_groups`` with ``CHUNKS_PER_THREAD`` chunks per thread handed out on demand;
    results in chunk order (so reductions stay deterministic for a thread count)."""
    threads = _parallel.get_num_threads()
    groups = min(threads, max_groups or threads)
    chunks = split(total, groups * CHUNKS_PER_THREAD)
    if groups <= 1 or len(chunks) <= 1:
        return [work(start, stop) for start, stop in chunks]
    results: list[object] = [None] * len(chunks)
    counter = itertools.count()

    def drain(_start: int = 0, _stop: int = 0) -> None:
        while (index := next(counter)) < len(chunks):
            results[index] = work(*chunks[index])

    pool = _parallel._workers(threads - 1)
    cpus = _parallel._worker_cpus(groups - 1)
    with single_threaded_blas():
        futures = [pool.submit(_parallel._run_placed, cpus, drain, 0, 0) for _ in range(groups - 1)]
        try:
            drain()
        finally:
            wait(futures)
    for future in futures:
        future.result()
    return results


def _use_schedule(schedule: Callable) -> None:
    """Make the fast layers' groups in ``SCHEDULED`` run on ``schedule``."""
    for module in SCHEDULED:
        module.map_groups = schedule


def start_delays(run: Callable[[], object], repeats: int, pause: float) -> list[float]:
    """Milliseconds from entering map_groups to a worker thread starting its group."""
    delays: list[float] = []
    static = _parallel.map_groups

    def timed(work, total, max_groups=None):
        entered = time.perf_counter()

        def logged(start: int, stop: int):
            if threading.current_thread() is not threading.main_thread():
                delays.append(1e3 * (time.perf_counter() - entered))
            return work(start, stop)

        return static(logged, total, max_groups)

    _use_schedule(timed)
    try:
        for _ in range(repeats):
            time.sleep(pause)
            run()
    finally:
        _use_schedule(static)
    return delays


def compare(run: Callable[[], object], repeats: int, pause: float, calls: int) -> dict:
    """Median (wall ms, CPU/wall) per schedule, interleaved; ``calls`` calls per sample."""
    static = _parallel.map_groups
    samples: dict[str, list[tuple[float, float]]] = {"fixed groups": [], "dynamic": []}
    try:
        for _ in range(repeats):
            for name, schedule in (("fixed groups", static), ("dynamic", map_dynamic)):
                _use_schedule(schedule)
                time.sleep(pause)
                run()
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    run()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                samples[name].append((1e3 * wall / calls, cpu / wall))
    finally:
        _use_schedule(static)
    return {name: np.median(np.array(rows), axis=0) for name, rows in samples.items()}


def check_two_cores() -> float:
    """CPU/wall of two threads of single-threaded GEMMs: about 2 on two free cores."""
    a = np.ones((400, 400), dtype=np.float32)

    def work() -> None:
        for _ in range(100):
            a @ a

    with threadpool_limits(1):
        threads = [threading.Thread(target=work) for _ in range(2)]
        wall, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return (time.process_time() - cpu) / (time.perf_counter() - wall)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--pause", type=float, default=0.1)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="only check for two free cores")
    args = parser.parse_args(argv)
    print(f"two threads of GEMMs: CPU/wall {check_two_cores():.2f} (2.0: two free cores)")
    if args.check:
        return
    keep_freed_memory()
    set_num_threads(2)
    rng = np.random.default_rng(0)
    dtype = np.dtype(np.float32)
    runs = {
        name: conv_candidates(CONV_CASES[name], dtype, None, rng)[0]["fast f+b"]
        for name in ("dw", "dil")
    }
    runs["t1"] = transpose_candidates(TRANSPOSE_CASES["t1"], dtype, None, rng)[0]["fast f+b"]
    print(
        "| case | worker start delay ms: median / 90th percentile | fixed groups: wall ms "
        "(CPU/wall) | dynamic: wall ms (CPU/wall) |"
    )
    print("|---|---|---|---|")
    for name, run in runs.items():
        delays = start_delays(run, args.repeats, args.pause)
        times = compare(run, args.repeats, args.pause, args.calls)
        fixed, dynamic = times["fixed groups"], times["dynamic"]
        print(
            f"| {name} | {np.median(delays):.3f} / {np.percentile(delays, 90):.3f} "
            f"| {fixed[0]:.2f} ({fixed[1]:.2f}) | {dynamic[0]:.2f} ({dynamic[1]:.2f}) |",
            flush=True,
        )


if __name__ == "__main__":
    use_fast_core()
    main()
