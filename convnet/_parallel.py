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
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

from convnet.distributed import ranks_on_this_node

Result = TypeVar("Result")


def _default_threads() -> int:
    requested = os.environ.get("CONVNET_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if requested:
        try:
            return max(1, int(requested.split(",")[0]))
        except ValueError:
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // ranks_on_this_node())


_num_threads = _default_threads()
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_executor_lock = threading.Lock()
BLAS_RESTORE_DELAY = 0.1
_blas: Any = None
_blas_limiter: Any = None
_blas_users = 0
_blas_idle_since = 0.0
_blas_condition = threading.Condition()
_restorer: threading.Thread | None = None


def get_num_threads() -> int:
    """Threads the fast layers use (``CONVNET_NUM_THREADS``, else ``OMP_NUM_THREADS``,
    else the cores this process may run on divided by the MPI ranks on this machine)."""
    return _num_threads


def set_num_threads(num_threads: int) -> int:
    """Set the threads the fast layers use; return the previous number.

    Parameters
    ----------
    num_threads : int
        At least 1: the calling thread plus ``num_threads - 1`` workers share each call.
        Calls already running finish with the workers they started with.
    """
    global _num_threads
    if isinstance(num_threads, (bool, np.bool_)) or not isinstance(num_threads, numbers.Integral):
        raise TypeError(f"num_threads must be an int, got {num_threads!r}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    with _executor_lock:
        previous, _num_threads = _num_threads, int(num_threads)
    return previous


def _workers(count: int) -> ThreadPoolExecutor:
    """The pool of ``count`` worker threads, made anew when the count changed.

    A replaced pool is not shut down: calls still holding it finish, and its threads exit
    once it is garbage.
    """
    global _executor, _executor_size
    with _executor_lock:
        if _executor is None or _executor_size != count:
            _executor = ThreadPoolExecutor(count, thread_name_prefix="convnet")
            _executor_size = count
        return _executor


def _release_blas_control() -> None:
    """Let this thread set OpenBLAS's process-wide limit: threadpoolctl >= 3.8 otherwise
    ignores a limit set from another thread than the first one that set it."""
    for controller in _blas.lib_controllers:
        release = getattr(type(controller), "clear_controlling_thread", None)
        if release is not None:
            release(force=True)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit numpy's BLAS to one thread inside the block, and for a moment after it.

    Every multi-worker call of the fast layers runs inside it: BLAS threads left spinning
    by a multi-threaded GEMM steal the cores from the workers. Giving BLAS its threads
    back after every call would wake those threads again, so the original limit returns
    only once no block has been active for ``BLAS_RESTORE_DELAY`` seconds (or at once
    with :func:`restore_blas_threads`). Reference-counted across threads.
    """
    global _blas, _blas_users, _blas_limiter, _blas_idle_since
    with _blas_condition:
        if _blas is None:
            _blas = ThreadpoolController().select(user_api="blas")
        if _blas_limiter is None and _blas.lib_controllers:
            _release_blas_control()
            _blas_limiter = _blas.limit(limits=1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_condition:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_idle_since = time.monotonic()
                _start_restorer()
                _blas_condition.notify_all()


def restore_blas_threads() -> None:
    """Give numpy's BLAS its original thread count now, unless a fast layer is running."""
    with _blas_condition:
        if _blas_users == 0 and _blas_limiter is not None:
            _restore_blas_now()


def _restore_blas_now() -> None:
    global _blas_limiter
    _release_blas_control()
    _blas_limiter.restore_original_limits()
    _blas_limiter = None
    _release_blas_control()


def _start_restorer() -> None:
    global _restorer
    if _restorer is None:
        _restorer = threading.Thread(
            target=_restore_when_idle, name="convnet-blas-restorer", daemon=True
        )
        _restorer.start()


def _restore_when_idle() -> None:
    """Restorer thread: put BLAS's limit back once the fast layers have been idle a while."""
    with _blas_condition:
        while True:
            if _blas_limiter is None or _blas_users > 0:
                _blas_condition.wait()
                continue
            remaining = _blas_idle_since + BLAS_RESTORE_DELAY - time.monotonic()
            if remaining > 0:
                _blas_condition.wait(remaining)
                continue
            _restore_blas_now()


def _forget_threads_after_fork() -> None:
    """In a forked child no worker or restorer thread exists: start afresh, and if the
    parent had limited BLAS, give the child's BLAS its threads back after the usual delay."""
    global _executor, _executor_lock, _restorer, _blas_condition, _blas_users, _blas_idle_since
    _executor = None
    _executor_lock = threading.Lock()
    _restorer = None
    _blas_condition = threading.Condition()
    _blas_users = 0
    if _blas_limiter is not None:
        _blas_idle_since = time.monotonic()
        _start_restorer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


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
    threads = _num_threads
    groups = split(total, min(threads, max_groups or threads))
    if len(groups) <= 1:
        return [work(start, stop) for start, stop in groups]
    workers = _workers(threads - 1)
    with single_threaded_blas():
        futures = [workers.submit(work, start, stop) for start, stop in groups[1:]]
        try:
            first = work(*groups[0])
        finally:
            wait(futures)
    return [first] + [future.result() for future in futures]
