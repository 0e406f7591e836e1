"""The timing harness of ``convnet bench``: interleaved medians in two regimes.

Candidates are interleaved, and each timed sample (a few back-to-back calls) follows a
pause and an untimed call of the same candidate, because BLAS and OpenMP worker threads
keep spinning for a while after a call returns and would otherwise be charged to the
next candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

import numpy as np
from threadpoolctl import threadpool_limits

from convnet._parallel import restore_blas_threads, set_num_threads
from convnet.bench.cases import NAIVE_BY_DEFAULT


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


COLD_CANDIDATES = ("fast f+b", "torch f+b")


def time_regimes(
    candidates: dict[str, Callable[[], object]],
    args,
    *,
    calls: int | None = None,
    cold_names: Collection[str] = COLD_CANDIDATES,
) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per call in both regimes: steady (``calls`` back-to-back calls, default
    ``--steady-calls``, after ``--pause`` and an untimed call, as training calls a layer)
    and cold (one call after ``--cold-pause`` seconds of idle and an untimed call, as the
    first layer of a step or an interactive call sees it; only the candidates named in
    ``cold_names``)."""
    calls = args.steady_calls if calls is None else calls
    steady = interleaved_medians(candidates, args.repeats, args.pause, calls)
    cold_candidates = {name: run for name, run in candidates.items() if name in cold_names}
    cold = interleaved_medians(cold_candidates, args.repeats, args.cold_pause, 1)
    return steady, cold


@contextmanager
def thread_limits(threads: int, torch) -> Iterator[None]:
    """convnet's workers, BLAS and (when given) PyTorch limited to ``threads`` threads."""
    set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    restore_blas_threads()  # else a pending restore could lift the limit below
    with threadpool_limits(threads):
        yield


def measurements(args, torch, rng, names: list[str], cases: dict, make_candidates):
    """Time every case, dtype and thread count in both regimes; yield (threads, name, case,
    dtype, steady, cold, naive_ms), with naive_ms None where the naive layers were not
    timed."""
    for threads in args.threads:
        with thread_limits(threads, torch):
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
