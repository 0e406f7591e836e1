"""Data-parallel training over MPI: the communicator glue the Solver and ``convnet train`` use.

Horovod's pattern: every rank holds the whole model and the whole dataset, starts from rank
0's parameters, draws the same permutation, takes its own contiguous slice of each global
batch, and the gradients are summed with one ``Allreduce`` so every rank applies the same
update. Rank ``r`` of ``P`` gets images ``[B * r // P, B * (r + 1) // P)`` of a batch of
``B``; its mean gradient is weighted by its share ``n_r / B`` before the sum, so uneven
and even empty slices give exactly the gradient of the whole batch.

:func:`world` imports mpi4py only when an MPI launcher started this process with more
than one rank (recognized from the launcher's environment variables): one process needs
no MPI. :class:`Ranks` wraps the communicator it is given (mpi4py's ``MPI.Comm``, or
``None`` for one process, which makes every method the identity) and touches mpi4py only
with a communicator of several ranks. The batch's loss travels in the gradients' dtype.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

# The launcher's environment is read in a private module, which convnet._parallel (below
# this one in the import order) uses too; these are its public names.
from convnet._launcher import launch_info as launch_info
from convnet._launcher import launched_rank as launched_rank
from convnet._launcher import ranks_on_this_node as ranks_on_this_node

Result = TypeVar("Result")

ALL_RANKS_ATTRIBUTE = "convnet_raised_on_every_rank"
# Seconds a failing rank waits before MPI_Abort: the launcher forwards each rank's output
# through pipes, and an abort right after the last write sometimes lost the message.
ABORT_DELAY = 0.3


def world() -> Any:
    """``mpi4py.MPI.COMM_WORLD`` when an MPI launcher started this process with > 1 rank.

    Returns
    -------
    mpi4py.MPI.Comm or None
        None for a single process, which then never imports mpi4py.

    Raises
    ------
    ImportError
        Under a launcher with several ranks when mpi4py is not installed.
    """
    info = launch_info()
    if info is None:
        return None
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"this process is rank {info['rank']} of {info['size']} under an MPI launcher, "
            'but mpi4py is not installed: pip install "convnet[mpi]"'
        ) from error
    return MPI.COMM_WORLD


def shard(total: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``range(total)`` split over ``size`` ranks.

    Shares differ by at most one item and may be empty (when ``total < size``); together
    they cover ``range(total)`` once, in order.
    """
    if not 0 <= rank < size:
        raise ValueError(f"rank must lie in [0, {size}), got {rank}")
    return slice(total * rank // size, total * (rank + 1) // size)


def running_statistics(model: Any) -> dict[str, np.ndarray]:
    """The state a model trains without gradients (batch norm's running statistics).

    ``model.buffers()`` when the model has it (every convnet model: a
    :class:`convnet.nn.Classifier`), else every ``running_*`` array of the dicts in
    ``model.bn_params`` (a CS231n-style model of your own), named ``<key><layer>`` from
    layer 1; ``{}`` for a model with neither.
    """
    if callable(getattr(model, "buffers", None)):
        return dict(model.buffers())
    return {
        f"{key}{layer}": state[key]
        for layer, state in enumerate(getattr(model, "bn_params", None) or [], start=1)
        for key in sorted(state)
        if key.startswith("running_") and isinstance(state[key], np.ndarray)
    }


def set_running_statistics(model: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Store ``arrays`` (named as :func:`running_statistics` names them) into ``model``:
    through ``model.set_buffers``, else as new arrays into its ``bn_params``."""
    if callable(getattr(model, "set_buffers", None)):
        model.set_buffers(dict(arrays))
        return
    for layer, state in enumerate(getattr(model, "bn_params", None) or [], start=1):
        for key in list(state):
            if f"{key}{layer}" in arrays:
                state[key] = arrays[f"{key}{layer}"]


def raised_on_every_rank(error: BaseException) -> BaseException:
    """Mark ``error`` as raised by every rank at the same point, so that
    :meth:`Ranks.abort_on_error` lets it pass (every rank handles it alike)."""
    setattr(error, ALL_RANKS_ATTRIBUTE, True)
    return error


class Ranks:
    """The ranks of one data-parallel job, or one process alone (``comm=None``).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm or None
        The communicator whose ranks train together; None (or a communicator of one
        rank) makes every method the single-process identity.

    Attributes
    ----------
    rank, size : int
    is_root : bool
        True on rank 0, the one that writes files and shows progress.
    communication_seconds : float
        Time spent in the gradient Allreduce so far.
    """

    def __init__(self, comm: Any = None) -> None:
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.is_root = self.rank == 0
        self.communication_seconds = 0.0

    @property
    def distributed(self) -> bool:
        """More than one rank."""
        return self.size > 1

    def share(self, total: int) -> slice:
        """This rank's slice of ``total`` items (all of them for one process)."""
        return shard(total, self.rank, self.size)

    def broadcast(self, value: Result) -> Result:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.distributed:
            return value
        return self.comm.bcast(value, root=0)

    def sum(self, value: int | float) -> int | float:
        """The sum of a Python number over the ranks."""
        if not self.distributed:
            return value
        return self.comm.allreduce(value)

    def mean_over_shares(
        self, function: Callable[[np.ndarray, np.ndarray], tuple[float, ...]], X: Any, y: Any
    ) -> tuple[float, ...]:
        """Per-image means (e.g. accuracy and loss) of a whole split, each rank computing
        ``function`` on its share of ``X`` and ``y``.

        Parameters
        ----------
        function : callable
            ``function(X_part, y_part)`` -> a tuple of means over the part's images; never
            called on an empty part.
        X, y : ndarray, shape (N, ...) and (N,)
            The same on every rank.

        Returns
        -------
        tuple of float
            ``sum_r n_r * means_r / N``: with one process, ``function(X, y)``.
        """
        if not self.distributed:
            return tuple(function(X, y))
        mine = self.share(len(X))
        count = mine.stop - mine.start
        weighted = None
        if count:
            weighted = [count * float(value) for value in function(X[mine], y[mine])]
        parts = [part for part in self.comm.allgather(weighted) if part is not None]
        return tuple(sum(values) / len(X) for values in zip(*parts, strict=True))

    def run_on_root(self, function: Callable[..., Result], *args: Any) -> Result:
        """``function(*args)`` run on rank 0 alone, its result broadcast to every rank.

        An ``Exception`` it raises on rank 0 is raised on every rank instead (marked with
        :func:`raised_on_every_rank`), so every rank fails alike and none waits.
        """
        if not self.distributed:
            return function(*args)
        outcome: tuple[bool, Any] = (True, None)
        if self.is_root:
            try:
                outcome = (True, function(*args))
            except Exception as error:
                outcome = (False, error)
        succeeded, value = self.comm.bcast(outcome, root=0)
        if not succeeded:
            raise raised_on_every_rank(value)
        return value

    def check_same(self, what: str, value: Any) -> None:
        """Raise ``ValueError`` on every rank unless every rank passes an equal ``value``.

        Parameters
        ----------
        what : str
            Names the value in the message.
        value : picklable, comparable with ``==``
        """
        if not self.distributed:
            return
        values = self.comm.allgather(value)
        differing = [rank for rank, other in enumerate(values) if other != values[0]]
        if differing:
            raise raised_on_every_rank(
                ValueError(
                    f"the ranks disagree on {what}: rank 0 has {values[0]!r}, rank "
                    f"{differing[0]} has {values[differing[0]]!r}"
                )
            )

    def loss_and_gradients(
        self, model: Any, X: np.ndarray, y: np.ndarray, total: int
    ) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and gradients of a whole global batch from this rank's slice of it.

        Parameters
        ----------
        model
            Has ``params`` and ``loss(X, y) -> (loss, grads)`` (means over its batch).
        X, y : ndarray, shape (n, ...) and (n,)
            This rank's slice (``n`` may be 0).
        total : int
            Images in the global batch (the sum of ``n`` over the ranks).

        Returns
        -------
        loss : float
        grads : dict
            ``sum_r (n_r / total) * grads_r`` keyed like ``params``, identical on every
            rank; with one process, ``model.loss(X, y)`` itself.
        """
        if not self.distributed:
            loss, grads = model.loss(X, y)
            return float(loss), grads
        count = X.shape[0]
        if count:
            loss, grads = model.loss(X, y)
        else:
            loss, grads = 0.0, {name: np.zeros_like(value) for name, value in model.params.items()}
        names = list(model.params)
        dtype = np.result_type(*(grads[name] for name in names))
        weight = count / total
        buffer = np.empty(sum(grads[name].size for name in names) + 1, dtype=dtype)
        start = 0
        for name in names:
            stop = start + grads[name].size
            np.multiply(grads[name].ravel(), weight, out=buffer[start:stop], casting="unsafe")
            start = stop
        buffer[-1] = float(loss) * weight
        self.allreduce_sum(buffer)
        start = 0
        reduced: dict[str, np.ndarray] = {}
        for name in names:
            stop = start + grads[name].size
            reduced[name] = (
                buffer[start:stop].reshape(grads[name].shape).astype(grads[name].dtype, copy=False)
            )
            start = stop
        return float(buffer[-1]), reduced

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        """Sum a contiguous array over the ranks, in place; timed in
        :attr:`communication_seconds`."""
        if not self.distributed:
            return
        from mpi4py import MPI

        started = time.perf_counter()
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        self.communication_seconds += time.perf_counter() - started

    def broadcast_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace every array of ``arrays`` by rank 0's, in place of the dict's entries.

        The names, shapes and dtypes must agree on every rank (checked, ``ValueError``).
        """
        if not self.distributed:
            return
        layout = [(name, value.shape, value.dtype.str) for name, value in arrays.items()]
        self.check_same("the parameters' names, shapes and dtypes", layout)
        for name, value in arrays.items():
            received = np.ascontiguousarray(value).copy()
            self.comm.Bcast(received, root=0)
            arrays[name] = received

    def average_arrays(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The mean over the ranks of every array of ``arrays`` (new arrays, same dtypes).

        The names, shapes and dtypes must agree on every rank (checked, ``ValueError``).
        """
        if not self.distributed:
            return dict(arrays)
        names = sorted(arrays)
        layout = [(name, arrays[name].shape, arrays[name].dtype.str) for name in names]
        self.check_same("the running statistics' names, shapes and dtypes", layout)
        averaged = {}
        for name in names:
            total = np.array(arrays[name], dtype=np.float64, order="C")
            self.allreduce_sum(total)
            averaged[name] = (total / self.size).astype(arrays[name].dtype)
        return averaged

    def average_statistics(self, model: Any) -> None:
        """Average a model's running statistics (batch norm's) over the ranks.

        Every rank's statistics follow its own slices of the batches; the running averages
        are linear in the batch statistics, so averaging them now equals averaging them
        after every step. See :func:`running_statistics` for what counts.
        """
        if self.distributed:
            set_running_statistics(model, self.average_arrays(running_statistics(model)))

    def broadcast_statistics(self, model: Any) -> None:
        """Give every rank rank 0's running statistics of ``model``."""
        if self.distributed:
            set_running_statistics(model, self.broadcast(running_statistics(model)))

    def split_generators(self, generators: Mapping[str, np.random.Generator]) -> None:
        """Give each rank its own stream of every generator, reproducible from rank 0's.

        Every generator first takes rank 0's state; rank ``r`` then jumps it ``r`` times
        (``bit_generator.jumped``, ``r * 2**127`` draws for PCG64), so rank 0 draws what one
        process would and the ranks' streams never overlap.
        """
        if not self.distributed:
            return
        states = self.broadcast(
            {name: generator.bit_generator.state for name, generator in generators.items()}
        )
        for name, generator in generators.items():
            generator.bit_generator.state = states[name]
            if self.rank:
                jumped = getattr(generator.bit_generator, "jumped", None)
                if jumped is None:
                    raise TypeError(
                        f"the generator {name} ({type(generator.bit_generator).__name__}) "
                        "cannot be split into streams per rank; use np.random.default_rng"
                    )
                generator.bit_generator.state = jumped(self.rank).state

    @contextmanager
    def abort_on_error(
        self,
        hint: Callable[[], str] | None = None,
        quiet: tuple[type[BaseException], ...] = (),
    ) -> Iterator[None]:
        """End every rank when an exception leaves the block on one of them.

        With several ranks, an exception (or Ctrl-C) on one rank would leave the others
        waiting forever in their next collective. So the first rank to fail prints
        ``convnet: rank r of P failed: <error>`` (and its traceback, unless it is a
        ``KeyboardInterrupt``) to stderr and calls ``comm.Abort``: every rank ends with
        status 130 after an interrupt, else 1. Exceptions marked by
        :func:`raised_on_every_rank` pass through, as does everything with one process.

        Parameters
        ----------
        hint : callable, optional
            Returns a sentence appended to the message (e.g. where the checkpoint is).
        quiet : tuple of exception types
            Errors reported in one line, without their traceback (e.g. user errors).
        """
        try:
            yield
        except BaseException as error:
            if not self.distributed or getattr(error, ALL_RANKS_ATTRIBUTE, False):
                raise
            if isinstance(error, SystemExit) and not error.code:
                raise
            interrupted = isinstance(error, KeyboardInterrupt)
            if not isinstance(error, (KeyboardInterrupt, *quiet)):
                traceback.print_exc(file=sys.stderr)
            description = "interrupted" if interrupted else f"{type(error).__name__}: {error}"
            message = f"convnet: rank {self.rank} of {self.size} failed: {description}"
            if hint is not None:
                message += f"; {hint()}"
            print(f"{message}; ending every rank", file=sys.stderr, flush=True)
            sys.stdout.flush()
            time.sleep(ABORT_DELAY)
            status = 130 if interrupted else 1
            self.comm.Abort(status)
            os._exit(status)  # MPI_Abort may return once the launcher has been told
