"""Threads for the fast layers: one worker per core, each with a single-threaded BLAS.

The convolution splits its batch into one contiguous group of images per worker. Each
worker runs im2col, its GEMMs and col2im on small, cache-resident chunks of its group
while BLAS is limited to one thread, so kernel threads and BLAS threads never
oversubscribe the cores. The compiled kernels release the GIL and numpy's GEMM does too.
"""

from __future__ import annotations

import numbers
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

Result = TypeVar("Result")


def _default_threads() -> int:
    requested = os.environ.get("CONVNET_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if requested:
        try:
            return max(1, int(requested.split(",")[0]))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


_num_threads = _default_threads()
_executor: ThreadPoolExecutor | None = None
_blas: Any = None
_blas_limiter: Any = None
_blas_users = 0
_blas_lock = threading.Lock()


def get_num_threads() -> int:
    """Threads the fast layers use (``CONVNET_NUM_THREADS``, else ``OMP_NUM_THREADS``,
    else the cores this process may run on)."""
    return _num_threads


def set_num_threads(num_threads: int) -> int:
    """Set the threads the fast layers use; return the previous number.

    Parameters
    ----------
    num_threads : int
        At least 1. The convolution runs this many workers, the pooling kernels this many
        OpenMP threads.
    """
    global _num_threads, _executor
    if isinstance(num_threads, (bool, np.bool_)) or not isinstance(num_threads, numbers.Integral):
        raise TypeError(f"num_threads must be an int, got {num_threads!r}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    num_threads = int(num_threads)
    previous = _num_threads
    if num_threads != _num_threads and _executor is not None:
        _executor.shutdown(wait=True)
        _executor = None
    _num_threads = num_threads
    return previous


def _release_blas_control() -> None:
    """Let this thread set OpenBLAS's process-wide limit: threadpoolctl >= 3.8 otherwise
    ignores a limit set from another thread than the first one that set it."""
    for controller in _blas.lib_controllers:
        release = getattr(type(controller), "clear_controlling_thread", None)
        if release is not None:
            release(force=True)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit numpy's BLAS to one thread inside the block.

    Every multi-worker convolution runs inside it. Wrap a whole training step in it too:
    multi-threaded BLAS calls between the convolutions leave BLAS threads spinning that
    then steal the cores from the convolution's workers. Reference-counted, so blocks
    entered from several threads at once restore the original limit only when the last
    of them ends.
    """
    global _blas, _blas_users, _blas_limiter
    with _blas_lock:
        if _blas is None:
            _blas = ThreadpoolController().select(user_api="blas")
        if _blas_users == 0 and _blas.lib_controllers:
            _release_blas_control()
            _blas_limiter = _blas.limit(limits=1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _release_blas_control()
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
                _release_blas_control()


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(total)`` into at most ``parts`` contiguous, non-empty, balanced ranges."""
    parts = max(1, min(parts, total))
    bounds = [total * index // parts for index in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i] < bounds[i + 1]]


def map_groups(
    work: Callable[[int, int], Result], total: int, max_groups: int | None = None
) -> list[Result]:
    """Run ``work(start, stop)`` on contiguous groups of ``range(total)``, one per thread.

    The calling thread runs the first group itself while the workers run the others.
    Returns the results in group order, so reductions over them are deterministic for a
    given thread count. With one group the work runs inline with BLAS left as it is.
    """
    global _executor
    groups = split(total, min(_num_threads, max_groups or _num_threads))
    if len(groups) <= 1:
        return [work(start, stop) for start, stop in groups]
    if _executor is None:
        _executor = ThreadPoolExecutor(_num_threads - 1, thread_name_prefix="convnet")
    with single_threaded_blas():
        futures = [_executor.submit(work, start, stop) for start, stop in groups[1:]]
        try:
            first = work(*groups[0])
        finally:
            wait(futures)
    return [first] + [future.result() for future in futures]
