"""Threads for the fast layers: one worker per core, each with a single-threaded BLAS.

The convolution splits its batch into one contiguous group of images per worker. Each
worker runs im2col, its GEMMs and col2im on small, cache-resident chunks of its group
while BLAS is limited to one thread, so kernel threads and BLAS threads never
oversubscribe the cores. The compiled kernels release the GIL and numpy's GEMM does too.
Each worker keeps off the CPU its caller runs on, and the caller stays there while they
run (see "where the workers run" below).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import numbers
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

from convnet import _environment
from convnet._launcher import ranks_on_this_node

Result = TypeVar("Result")


def _default_threads() -> int:
    """``CONVNET_NUM_THREADS`` (a bad value is a ``ValueError``), else the first count of
    ``OMP_NUM_THREADS`` (OpenMP's variable, read by OpenMP's rule: a value that is not a
    positive count is ignored), else the cores divided among the MPI ranks here."""
    requested = _environment.num_threads()
    if requested is not None:
        return requested
    with contextlib.suppress(ValueError):
        omp = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
        if omp >= 1:
            return omp
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // ranks_on_this_node())


# Loops bound by memory (batch norm, ReLU) stay on the calling thread below this many
# values: a second thread only pays once the data outgrows the caches (measured, batch
# norm forward + backward float32 on 2 vCPUs of an AMD EPYC: 1M values 0.51 ms on one
# thread against 0.56 on two; 2M values 1.69 against 0.89; 8M 14.9 against 10.4).
POOL_MIN_ELEMENTS = 2**16
MEMORY_BOUND_MIN_ELEMENTS = 1 << 21
# The shares one call of the channels-last kernels takes at most (``_cl_threads.h``: its
# 255 workers and the caller).
POOL_MAX_PARTS = 256


def work_groups(amount: int, small: int) -> int | None:
    """``max_groups`` for :func:`map_groups`: 1 (the calling thread alone) for work too
    small to repay handing it out (``amount < small``), else None (a group per thread)."""
    return 1 if amount < small else None


def memory_bound_groups(size: int) -> int | None:
    """``max_groups`` for :func:`map_groups` over a memory-bound loop of ``size`` values."""
    return work_groups(size, MEMORY_BOUND_MIN_ELEMENTS)


def pool_parts(size: int) -> int:
    """The shares a memory-bound pass of ``size`` values is split into by the compiled
    thread pool of the channels-last kernels (``_cl_threads.h``): every thread from
    ``POOL_MIN_ELEMENTS`` values on. That pool hands work over in microseconds where a
    :func:`map_groups` call takes ~0.1 ms, so it repays threads on far smaller arrays.
    At most ``POOL_MAX_PARTS``."""
    return pool_threads() if size >= POOL_MIN_ELEMENTS else 1


def pool_threads() -> int:
    """The shares a call of the channels-last kernels splits into when it uses every
    thread (at most ``POOL_MAX_PARTS``); tells their pool ``PLACE_WORKERS`` first."""
    global _pool_placement
    place = _place_workers()
    if place is not _pool_placement:
        # imported here: importing _backend reads CONVNET_BACKEND, which the CLI reports
        # as a usage error only once it runs
        from convnet import _backend

        if _backend.channels_last_kernel is not None:
            _backend.channels_last_kernel.set_worker_placement(place)
        _pool_placement = place
    return min(get_num_threads(), POOL_MAX_PARTS)


_pool_placement: bool | None = None  # what the channels-last kernels' pool was told


_num_threads: int | None = None  # read from the environment at the first call
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_executor_lock = threading.Lock()
BLAS_RESTORE_DELAY = 0.1
RESTORER_POLL = 0.05  # the restorer's longest sleep while it has BLAS threads to give back


def get_num_threads() -> int:
    """Threads the fast layers use (``CONVNET_NUM_THREADS``, else ``OMP_NUM_THREADS``,
    else the cores this process may run on divided by the MPI ranks on this machine).

    Raises
    ------
    ValueError
        When ``CONVNET_NUM_THREADS`` is set to something other than a positive integer.
    """
    global _num_threads
    if _num_threads is None:
        threads = _default_threads()
        with _executor_lock:
            if _num_threads is None:
                _num_threads = threads
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
    previous = get_num_threads()
    with _executor_lock:
        _num_threads = int(num_threads)
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


# --- where the workers run ------------------------------------------------------------------
#
# Measured (benchmarks/bench_cold_threads.py): after an idle pause, Linux wakes a sleeping
# worker on the CPU of the thread that woke it (the caller, "wake-affine"), so the two
# share one core until the load balancer separates them, milliseconds later; the first
# calls after a pause then run at one-thread speed. Each worker therefore keeps itself off
# the caller's current CPU: before its group it restricts its own affinity to the CPUs the
# caller may use minus the one the caller is on (one system call, only when that set
# changes). The scheduler still picks among the rest. The caller in turn stays on its CPU
# while its workers run, and gets its own affinity back when the call returns: woken by a
# worker (a lock, the GIL), it was otherwise moved onto the worker's CPU now and then for
# the first ~50 ms after a pause, where the two shared one core (measured: calls 2-6 after
# a 0.25 s pause took 10 ms instead of 5.5). With more workers than other CPUs, the
# workers get every allowed CPU instead and nothing is pinned.
PLACE_WORKERS: bool | None = None  # CONVNET_PLACE_WORKERS, read at the first placement


def _place_workers() -> bool:
    """``PLACE_WORKERS``, read from ``CONVNET_PLACE_WORKERS`` (default on) on first use."""
    global PLACE_WORKERS
    if PLACE_WORKERS is None:
        PLACE_WORKERS = _environment.place_workers()
    return PLACE_WORKERS


def _load_sched_getcpu() -> Callable[[], int] | None:
    if not (sys.platform.startswith("linux") and hasattr(os, "sched_setaffinity")):
        return None
    try:
        getcpu = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (OSError, AttributeError):
        return None
    getcpu.argtypes = []
    getcpu.restype = ctypes.c_int
    return getcpu


_sched_getcpu = _load_sched_getcpu()
_placement = threading.local()


def _worker_cpus(workers: int, caller_cpu: int | None = None) -> frozenset[int] | None:
    """The CPUs the ``workers`` workers of a call starting now should use: those the
    calling thread may use, minus ``caller_cpu`` (by default the one it runs on); all of
    them when that leaves fewer CPUs than workers (more threads than cores: let the
    scheduler spread them) or with ``PLACE_WORKERS`` off; None where the platform cannot
    say."""
    if _sched_getcpu is None:
        return None
    allowed = os.sched_getaffinity(0)
    if not _place_workers() or workers >= len(allowed):
        return frozenset(allowed)
    return frozenset(allowed - {_sched_getcpu() if caller_cpu is None else caller_cpu})


@contextmanager
def _caller_stays(caller_cpu: int | None, worker_cpus: frozenset[int] | None) -> Iterator[None]:
    """Keep the calling thread on ``caller_cpu`` (the CPU its workers were placed off,
    read once for both: the caller may have moved since) while its workers run; its own
    affinity comes back afterwards."""
    if caller_cpu is None or worker_cpus is None or caller_cpu in worker_cpus:
        yield
        return
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {caller_cpu})
    except OSError:
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def _run_placed(
    cpus: frozenset[int] | None, work: Callable[[int, int], Result], start: int, stop: int
) -> Result:
    """Worker side of :func:`map_groups`: move to ``cpus`` if not there yet, then work."""
    if cpus is not None and getattr(_placement, "cpus", None) != cpus:
        try:
            os.sched_setaffinity(0, cpus)
            _placement.cpus = cpus
        except OSError:
            pass
    return work(start, stop)


# --- numpy's BLAS, limited to one thread while the workers run ------------------------------


class _BlasThreads:
    """The process-wide thread count of one BLAS library numpy loaded.

    OpenBLAS's own ``openblas_{get,set}_num_threads`` are called directly, not through
    threadpoolctl, whose OpenBLAS controller lets only one "controlling" Python thread set
    limits: going around it leaves a user's ``threadpool_limits`` block in charge of its
    own bookkeeping. Other BLAS libraries go through threadpoolctl, which does not guard
    them.
    """

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self._get = self._set = None
        if controller.internal_api == "openblas" and controller.threading_layer != "openmp":
            try:
                library = ctypes.CDLL(controller.filepath)
            except OSError:
                return
            for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
                getter = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
                setter = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
                if getter is not None and setter is not None:
                    getter.restype, getter.argtypes = ctypes.c_int, []
                    setter.restype, setter.argtypes = None, [ctypes.c_int]
                    self._get, self._set = getter, setter
                    return

    def get(self) -> int:
        if self._get is not None:
            return int(self._get())
        return int(self.controller.num_threads or 1)

    def set(self, num_threads: int) -> None:
        if self._set is not None:
            self._set(num_threads)
        else:
            self.controller.set_num_threads(num_threads)


_blas_libraries: dict[str, _BlasThreads] = {}  # by file path
_blas_modules_seen = -1  # len(sys.modules) at the last look for BLAS libraries
_blas_condition = threading.Condition()
_blas_depth: dict[int, int] = {}  # thread ident -> how many blocks it is inside
_blas_saved: dict[_BlasThreads, int] | None = None  # counts we lowered to 1, to give back
_blas_idle_since = 0.0
_restorer: threading.Thread | None = None
_restorer_idle = False  # the restorer waits for a notify (nothing to give back)


def _blas() -> list[_BlasThreads]:
    """The BLAS libraries loaded in this process. Looking costs milliseconds, so it is
    done again only when modules were imported since the last look (importing is how a
    new BLAS arrives: scipy's, torch's)."""
    global _blas_modules_seen
    if len(sys.modules) != _blas_modules_seen:
        _blas_modules_seen = len(sys.modules)
        controller = ThreadpoolController().select(user_api="blas")
        for library in controller.lib_controllers:
            if library.filepath not in _blas_libraries:
                _blas_libraries[library.filepath] = _BlasThreads(library)
    return list(_blas_libraries.values())


def _limit_blas_to_one() -> None:
    """Lower every BLAS running more than one thread to one, remembering its count.

    A count already lowered keeps its remembered value; a count someone raised since is
    lowered again and its new value remembered.
    """
    global _blas_saved
    saved = {} if _blas_saved is None else _blas_saved
    for library in _blas():
        threads = library.get()
        if threads > 1:
            library.set(1)
            saved[library] = threads
    _blas_saved = saved


def _restore_blas_now() -> None:
    """Give back the counts we lowered, where they are still the one thread we set."""
    global _blas_saved
    for library, threads in (_blas_saved or {}).items():
        if library.get() == 1:
            library.set(threads)
    _blas_saved = None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit numpy's BLAS to one thread inside the block, and for a moment after it.

    Every multi-worker call of the fast layers runs inside it: BLAS threads left spinning
    by a multi-threaded GEMM steal the cores from the workers. Giving BLAS its threads
    back after every call would wake those threads again, so the original count returns
    only once no block has been active for ``BLAS_RESTORE_DELAY`` seconds (or at once
    with :func:`restore_blas_threads`). Reference-counted across threads.

    It only ever lowers a count to one and gives back exactly the count it found, and
    only if the count is still one then: a limit the user set (with threadpoolctl or
    otherwise) is never raised, and a count the user changed meanwhile is left as they set
    it. A ``threadpool_limits`` block entered during the delay records the one thread as
    its original; call :func:`restore_blas_threads` before such a block.
    """
    global _blas_idle_since
    me = threading.get_ident()
    with _blas_condition:
        if not _blas_depth:
            _limit_blas_to_one()
        _blas_depth[me] = _blas_depth.get(me, 0) + 1
    try:
        yield
    finally:
        with _blas_condition:
            _blas_depth[me] -= 1
            if not _blas_depth[me]:
                del _blas_depth[me]
            if not _blas_depth and _blas_saved is not None:
                _blas_idle_since = time.monotonic()
                _start_restorer()
                if _restorer_idle:  # else it wakes on its own timeout: no handoff per call
                    _blas_condition.notify_all()


Function = TypeVar("Function", bound=Callable[..., Any])


def blas_on_one_thread(function: Function) -> Function:
    """Run ``function`` inside :func:`single_threaded_blas` when the fast layers use
    several threads.

    Every product a fast layer computes outside its workers (transformed filters, bias
    and filter gradients) then runs on one BLAS thread too: a multi-threaded OpenBLAS
    GEMM leaves its threads spinning for about 0.1 s after it returns, on the cores the
    workers need next (measured: the first ~10 convolutions after a pause took twice
    their steady time).
    """

    @functools.wraps(function)
    def on_one_thread(*args: Any, **kwargs: Any) -> Any:
        if get_num_threads() <= 1:
            return function(*args, **kwargs)
        with single_threaded_blas():
            return function(*args, **kwargs)

    return on_one_thread  # type: ignore[return-value]


def restore_blas_threads() -> None:
    """Give numpy's BLAS its original thread count now, unless a fast layer is running."""
    with _blas_condition:
        if not _blas_depth and _blas_saved is not None:
            _restore_blas_now()


def _start_restorer() -> None:
    global _restorer
    if _restorer is None:
        _restorer = threading.Thread(
            target=_restore_when_idle, name="convnet-blas-restorer", daemon=True
        )
        _restorer.start()


def _restore_when_idle() -> None:
    """Restorer thread: give BLAS its threads back once the fast layers have been idle a
    while.

    With nothing to give back it sleeps until notified; otherwise it looks again every
    ``RESTORER_POLL`` seconds at the latest, so the fast layers need not wake it at the
    end of every call (measured: that handoff cost ~40 us a call, which a residual net's
    ~30 layer calls a step paid each time).
    """
    global _restorer_idle
    with _blas_condition:
        while True:
            if _blas_saved is None:
                _restorer_idle = True
                _blas_condition.wait()
                _restorer_idle = False
                continue
            remaining = _blas_idle_since + BLAS_RESTORE_DELAY - time.monotonic()
            if _blas_depth or remaining > 0:
                _blas_condition.wait(
                    min(remaining, RESTORER_POLL) if remaining > 0 else RESTORER_POLL
                )
                continue
            _restore_blas_now()


def _before_fork() -> None:
    _blas_condition.acquire()


def _after_fork_in_parent() -> None:
    _blas_condition.release()


def _after_fork_in_child() -> None:
    """In a forked child only the forking thread exists: no workers, no restorer, and only
    its own blocks are still open. Once none is, the child gives BLAS back its threads
    after the usual delay, like the parent."""
    global _executor, _executor_lock, _restorer, _blas_condition, _blas_depth
    global _blas_idle_since, _restorer_idle
    _executor = None
    _executor_lock = threading.Lock()
    _restorer = None
    _restorer_idle = False
    _blas_condition = threading.Condition()
    me = threading.get_ident()
    _blas_depth = {me: _blas_depth[me]} if me in _blas_depth else {}
    if not _blas_depth and _blas_saved is not None:
        _blas_idle_since = time.monotonic()
        _start_restorer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


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
    threads = get_num_threads()
    groups = split(total, min(threads, max_groups or threads))
    if len(groups) <= 1:
        return [work(start, stop) for start, stop in groups]
    workers = _workers(threads - 1)
    caller_cpu = None if _sched_getcpu is None else _sched_getcpu()
    cpus = _worker_cpus(len(groups) - 1, caller_cpu)
    with single_threaded_blas(), _caller_stays(caller_cpu, cpus):
        futures = [
            workers.submit(_run_placed, cpus, work, start, stop) for start, stop in groups[1:]
        ]
        try:
            first = work(*groups[0])
        finally:
            wait(futures)
    return [first] + [future.result() for future in futures]
