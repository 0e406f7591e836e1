"""Train a model by minibatch gradient descent, with checkpoints that resume exactly.

A :class:`Solver` shuffles the training set every epoch with its own
``np.random.default_rng(seed)``, applies an update rule from :mod:`convnet.optim` to every
parameter, decays the learning rate once per epoch and keeps the parameters that scored best
on the validation set. With ``checkpoint_dir`` set, it writes ``checkpoint.npz`` at the end
of every epoch (atomically; the format is :mod:`convnet.checkpoint`'s). A checkpoint holds
the parameters, every optimizer state, the counters, the histories, the best parameters,
the solver's generator state and that of every ``np.random.Generator`` the model holds as
an attribute (dropout masks), so a run resumed from it follows the same trajectory as one
never stopped.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from convnet import checkpoint as checkpoint_format
from convnet._io import stderr_is_interactive
from convnet.checkpoint import CHECKPOINT_NAME, HISTORIES
from convnet.distributed import (
    Ranks,
    raised_on_every_rank,
    running_statistics,
    set_running_statistics,
)
from convnet.nn import class_scores, predict_labels
from convnet.optim import UPDATE_RULES

__all__ = ["CHECKPOINT_NAME", "Model", "Solver", "TrainingDiverged", "class_scores", "evaluate"]

DIVERGENCE_FACTOR = 1e4
# The divergence check's reference is the first loss of the run, or this if larger: a run
# whose first loss is tiny (1e-7, say) is not "diverging" when a later loss is 0.5.
DIVERGENCE_FLOOR = 1.0
_DATA_KEYS = ("X_train", "y_train", "X_val", "y_val")
# What every rank takes from rank 0 at the start (besides the parameters and generators).
_SHARED_STATE = (
    "epoch",
    "iteration",
    *HISTORIES,
    "best_val_acc",
    "best_params",
    "best_buffers",
    "optim_configs",
)

UpdateRule = Callable[[np.ndarray, np.ndarray, dict], tuple[np.ndarray, dict]]


class Model(Protocol):
    """What a :class:`Solver` needs from a model."""

    params: dict[str, np.ndarray]

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        """Scores (N, C) when ``y`` is None, else ``(loss, grads)`` keyed like ``params``."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN, infinite, or exploded.

    Attributes
    ----------
    loss : float
        The offending loss.
    epoch : int
        1-based epoch in which it happened.
    iteration : int
        1-based iteration within that epoch.
    """

    def __init__(self, loss: float, epoch: int, iteration: int, detail: str) -> None:
        self.loss = loss
        self.epoch = epoch
        self.iteration = iteration
        super().__init__(
            f"training diverged: the loss is {loss:g} at epoch {epoch}, iteration {iteration}"
            f"{detail}; try a smaller learning rate"
        )


def _resolve_update_rule(update_rule: str | UpdateRule) -> tuple[str, UpdateRule]:
    if callable(update_rule):
        return getattr(update_rule, "__name__", "custom"), update_rule
    if update_rule not in UPDATE_RULES:
        raise ValueError(
            f"unknown update rule {update_rule!r}; choose one of {', '.join(sorted(UPDATE_RULES))}"
        )
    return update_rule, UPDATE_RULES[update_rule]


def _check_data(data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [key for key in _DATA_KEYS if key not in data]
    if missing:
        raise ValueError(f"data is missing {', '.join(missing)}")
    checked = {key: np.asarray(data[key]) for key in _DATA_KEYS}
    for split in ("train", "val"):
        X, y = checked[f"X_{split}"], checked[f"y_{split}"]
        if y.dtype.kind not in "iu":
            raise TypeError(f"y_{split} must hold integer labels, got dtype {y.dtype}")
        if X.ndim < 2 or y.shape != (X.shape[0],):
            raise ValueError(
                f"X_{split} must be (N, ...) and y_{split} (N,), got {X.shape} and {y.shape}"
            )
        if X.shape[0] == 0:
            raise ValueError(f"X_{split} is empty")
    return checked


def _model_generators(model: Model) -> dict[str, np.random.Generator]:
    """The random generators a model holds as attributes (e.g. for dropout masks)."""
    return {
        name: value for name, value in vars(model).items() if isinstance(value, np.random.Generator)
    }


def evaluate(
    model: Model, X: np.ndarray, y: np.ndarray, batch_size: int = 200
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on the images ``X`` with labels ``y``.

    Parameters
    ----------
    model : Model
    X : ndarray, shape (N, ...)
    y : ndarray of int, shape (N,)
    batch_size : int
        Images per forward pass.

    Returns
    -------
    accuracy : float
        Fraction of images whose highest score is their label.
    loss : float
        Mean softmax cross-entropy (the data loss, without regularization), in float64.
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(X) != y.shape[0] or y.dtype.kind not in "iu":
        raise ValueError(f"need X (N, ...) and integer y (N,), got {np.shape(X)}, {y.shape}")
    scores = class_scores(model, X, batch_size).astype(np.float64)
    if y.min() < 0 or y.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in [0, {scores.shape[1]})")
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    accuracy = float(np.mean(np.argmax(scores, axis=1) == y))
    return accuracy, float(-np.mean(log_probs[np.arange(len(y)), y]))


class Solver:
    """Minibatch training of a model on ``data``.

    Parameters
    ----------
    model : Model
        Has ``params`` (name -> ndarray) and ``loss(X, y=None)``.
    data : mapping
        ``X_train`` (N, ...), ``y_train`` (N,), ``X_val`` (M, ...), ``y_val`` (M,).
        ``X`` should have the model's dtype; it is never copied or modified.
    update_rule : str or callable
        A name in ``convnet.optim.UPDATE_RULES`` or a function
        ``update(w, dw, config) -> (next_w, config)``.
    optim_config : dict, optional
        Initial hyperparameters for the update rule (e.g. ``learning_rate``); every
        parameter gets its own copy, which then also carries its optimizer state.
    lr_decay : float
        Factor applied to every ``learning_rate`` at the end of each epoch.
    batch_size : int
        Images per step; each epoch visits every training image once.
    num_epochs : int
        Total epochs; a resumed run continues up to this count.
    num_train_samples : int or None
        Training images drawn to estimate the training accuracy each epoch (None: all).
    num_val_samples : int or None
        Validation images used each epoch (None: all).
    seed : int
        Seed of the generator behind shuffling and sampling.
    progress : bool
        Show a tqdm bar with the loss and images/s where someone can see it: on a terminal
        or in a Jupyter notebook (tqdm's auto bar), not in redirected output, and not when
        tqdm is not installed.
    checkpoint_dir : str or Path, optional
        Where ``checkpoint.npz`` is written at the end of every epoch.
    print_every : int, optional
        With ``verbose``, also print the loss every this many iterations.
    verbose : bool
        Print a line per epoch.
    resume_from : str or Path, optional
        A checkpoint to continue from (see :meth:`load_checkpoint`).
    divergence_factor : float
        Training stops with :class:`TrainingDiverged` when a step's loss is NaN, infinite,
        or more than this many times the first loss of the run (or than
        ``DIVERGENCE_FLOOR`` = 1.0 when the first loss is smaller).
    comm : mpi4py.MPI.Comm, optional
        Train data-parallel over this communicator's ranks (see :mod:`convnet.distributed`);
        None trains in this process alone. Every rank builds the same model and passes the
        same data and options; all ranks take rank 0's parameters, generator states and
        (read on rank 0 alone) checkpoint, each computes the gradients of its slice of every
        batch of ``batch_size`` images, and the Allreduced gradients give every rank the same
        update. Rank 0 alone shows progress, prints and writes checkpoints. A model's
        generators (dropout masks) draw a different stream on each rank, rank 0 the one a
        single process would draw; its running statistics (``model.buffers()``, or for a
        model without it the ``running_*`` arrays of CS231n's ``model.bn_params``: see
        :func:`convnet.distributed.running_statistics`) start as rank 0's and are
        averaged over the ranks before every evaluation. An exception on one rank inside
        :meth:`train` ends every rank (see :meth:`convnet.distributed.Ranks.abort_on_error`);
        run scripts with ``python -m mpi4py`` for the same elsewhere.

    Attributes
    ----------
    epoch, iteration : int
        Completed epochs and steps.
    loss_history : list of float
        The loss of every step.
    epoch_loss_history : list of float
        The mean training loss of every epoch.
    val_loss_history : list of float
        The validation data loss (mean cross-entropy, no regularization) after every epoch.
    train_acc_history, val_acc_history : list of float
        Accuracies at the end of every epoch.
    best_val_acc : float or None
        The best validation accuracy so far; ``best_params`` holds the parameters behind it
        and ``best_buffers`` the running statistics (batch norm's) that went with them.
    optim_configs : dict
        Per parameter, the update rule's hyperparameters and state.
    train_seconds, images_per_second : float
        Wall time of the last :meth:`train` call, and its training throughput.
    checkpoint_dir : Path or None
        Where the epoch checkpoints go; may be set after construction (``convnet train``
        sets it once the checkpoint it resumes from has loaded).
    last_checkpoint : Path or None
        The checkpoint this solver wrote last.
    ranks : convnet.distributed.Ranks
        This rank and the number of ranks (one without ``comm``).
    """

    def __init__(
        self,
        model: Model,
        data: Mapping[str, Any],
        *,
        update_rule: str | UpdateRule = "adam",
        optim_config: Mapping[str, Any] | None = None,
        lr_decay: float = 1.0,
        batch_size: int = 100,
        num_epochs: int = 10,
        num_train_samples: int | None = 1000,
        num_val_samples: int | None = None,
        seed: int = 0,
        progress: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        print_every: int | None = None,
        verbose: bool = False,
        resume_from: str | os.PathLike | None = None,
        divergence_factor: float = DIVERGENCE_FACTOR,
        comm: Any = None,
    ) -> None:
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not (isinstance(num_epochs, int) and num_epochs >= 0):
            raise ValueError(f"num_epochs must be a non-negative integer, got {num_epochs!r}")
        if not (math.isfinite(lr_decay) and lr_decay > 0):
            raise ValueError(f"lr_decay must be a positive number, got {lr_decay!r}")
        if not divergence_factor > 1:
            raise ValueError(f"divergence_factor must exceed 1, got {divergence_factor!r}")
        for name, value in (
            ("num_train_samples", num_train_samples),
            ("num_val_samples", num_val_samples),
        ):
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        self.ranks = Ranks(comm)
        self.model = model
        self.data = _check_data(data)
        self.update_rule_name, self.update_rule = _resolve_update_rule(update_rule)
        self.lr_decay = float(lr_decay)
        self.batch_size = batch_size
        self.num_epochs = num_epochs
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.seed = seed
        self.progress = progress and self.ranks.is_root
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.print_every = print_every
        self.verbose = verbose and self.ranks.is_root
        self.divergence_factor = float(divergence_factor)

        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.iteration = 0
        self.loss_history: list[float] = []
        self.epoch_loss_history: list[float] = []
        self.val_loss_history: list[float] = []
        self.train_acc_history: list[float] = []
        self.val_acc_history: list[float] = []
        self.best_val_acc: float | None = None
        self.best_params: dict[str, np.ndarray] = {}
        self.best_buffers: dict[str, np.ndarray] = {}
        # The update rules store their state into these dicts: one deep copy per parameter.
        initial_config = dict(optim_config or {})
        self.optim_configs = {name: copy.deepcopy(initial_config) for name in model.params}
        self.train_seconds = 0.0
        self.images_per_second = 0.0
        self.last_checkpoint: Path | None = None
        if resume_from is not None:
            self.ranks.run_on_root(self.load_checkpoint, resume_from)
        if self.ranks.distributed:
            self._take_state_of_rank_0()

    def _take_state_of_rank_0(self) -> None:
        """Check every rank has data of the same shapes, then copy rank 0's parameters,
        training state and generators to every rank (each rank's model generators then
        jump to their own stream)."""
        shapes = {key: value.shape for key, value in self.data.items()}
        self.ranks.check_same("the shapes of the data", shapes)
        self.ranks.broadcast_arrays(self.model.params)
        self.ranks.broadcast_statistics(self.model)
        shared = {key: getattr(self, key) for key in _SHARED_STATE}
        shared["rng_state"] = self.rng.bit_generator.state
        shared = self.ranks.broadcast(shared)
        self.rng.bit_generator.state = shared.pop("rng_state")
        for key, value in shared.items():
            setattr(self, key, value)
        self.ranks.split_generators(_model_generators(self.model))

    @property
    def checkpoint_path(self) -> Path | None:
        """``checkpoint_dir / "checkpoint.npz"``, or None without a checkpoint directory."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    @property
    def history(self) -> dict[str, Any]:
        """Loss per iteration, losses and accuracies per epoch, the best validation accuracy."""
        curves = {key: list(getattr(self, key)) for key in HISTORIES}
        return {**curves, "best_val_acc": self.best_val_acc}

    def _log(self, message: str, bar: Any) -> None:
        if bar is None:
            print(message, flush=True)
        else:
            bar.write(message)

    def _progress_bar(self, total: int) -> Any:
        if not (self.progress and stderr_is_interactive()):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=total, unit="batch", dynamic_ncols=True)

    def _step(
        self, X_batch: np.ndarray, y_batch: np.ndarray, total: int, epoch: int, iteration: int
    ) -> float:
        """One update from this rank's ``X_batch`` of a global batch of ``total`` images."""
        loss, grads = self.ranks.loss_and_gradients(self.model, X_batch, y_batch, total)
        first = self.loss_history[0] if self.loss_history else abs(loss)
        reference = max(first, DIVERGENCE_FLOOR)
        if not (math.isfinite(loss) and loss <= self.divergence_factor * reference):
            detail = ""
            if math.isfinite(loss):
                detail = f" (more than {self.divergence_factor:g} times the first loss {first:g}"
                if reference > first:
                    detail += f", taken as {DIVERGENCE_FLOOR:g}"
                detail += ")"
            if self.last_checkpoint is not None:
                detail += f" (the checkpoint of epoch {self.epoch} is {self.last_checkpoint})"
            raise raised_on_every_rank(TrainingDiverged(loss, epoch, iteration, detail))
        for name, value in self.model.params.items():
            next_value, config = self.update_rule(value, grads[name], self.optim_configs[name])
            self.model.params[name] = next_value
            self.optim_configs[name] = config
        return loss

    def train(self) -> dict[str, Any]:
        """Train from the current epoch up to ``num_epochs``, then load the best parameters.

        Returns
        -------
        dict
            :attr:`history`.

        Raises
        ------
        TrainingDiverged
            When the loss becomes NaN or infinite or explodes (see ``divergence_factor``);
            the checkpoint of the last completed epoch is left as it was.

        Notes
        -----
        Every step allocates the same large arrays again; :func:`convnet.keep_freed_memory`
        (process-wide, so the Solver leaves it to you; ``convnet train`` calls it) makes
        glibc reuse freed memory and spares a page fault per page.
        """
        X_train, y_train = self.data["X_train"], self.data["y_train"]
        num_train = X_train.shape[0]
        iterations_per_epoch = self._iterations_per_epoch()
        bar = self._progress_bar(max(self.num_epochs - self.epoch, 0) * iterations_per_epoch)
        step_seconds = 0.0
        images = 0
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.ranks.abort_on_error(self._checkpoint_hint, quiet=(OSError,)))
            stack.callback(self._finish_training, bar, started)
            while self.epoch < self.num_epochs:
                epoch = self.epoch + 1
                if bar is not None:
                    bar.set_description(f"epoch {epoch}/{self.num_epochs}")
                order = self.rng.permutation(num_train)
                for batch in range(iterations_per_epoch):
                    indices = order[batch * self.batch_size : (batch + 1) * self.batch_size]
                    mine = indices[self.ranks.share(indices.size)]
                    step_started = time.perf_counter()
                    loss = self._step(X_train[mine], y_train[mine], indices.size, epoch, batch + 1)
                    step_seconds += time.perf_counter() - step_started
                    images += indices.size
                    self.iteration += 1
                    self.loss_history.append(loss)
                    self.images_per_second = images / step_seconds if step_seconds else 0.0
                    if bar is not None:
                        postfix = {"loss": f"{loss:.4f}", "img/s": f"{self.images_per_second:.0f}"}
                        bar.set_postfix(postfix, refresh=False)
                        bar.update(1)
                    if self.verbose and self.print_every and self.iteration % self.print_every == 0:
                        self._log(f"iteration {self.iteration}: loss {loss:.6f}", bar)
                self._end_epoch(bar)
        if self.best_params:
            self._restore(self.best_params, self.best_buffers)
        return self.history

    def _snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Copies of the model's parameters and of its running statistics."""
        params = {name: value.copy() for name, value in self.model.params.items()}
        buffers = {name: value.copy() for name, value in running_statistics(self.model).items()}
        return params, buffers

    def _restore(self, params: Mapping[str, np.ndarray], buffers: Mapping[str, np.ndarray]) -> None:
        """Put copies of ``params`` and ``buffers`` (running statistics) into the model."""
        for name, value in params.items():
            self.model.params[name] = value.copy()
        set_running_statistics(self.model, {name: value.copy() for name, value in buffers.items()})

    def _finish_training(self, bar: Any, started: float) -> None:
        if bar is not None:
            bar.close()
        self.train_seconds = time.perf_counter() - started

    def _checkpoint_hint(self) -> str:
        if self.checkpoint_dir is None or self.epoch == 0:
            return "no checkpoint was written"
        return f"rank 0's {self.checkpoint_path} holds epoch {self.epoch}"

    def _end_epoch(self, bar: Any) -> None:
        self.epoch += 1
        for config in self.optim_configs.values():
            if "learning_rate" in config:
                config["learning_rate"] *= self.lr_decay
        self.ranks.average_statistics(self.model)
        epoch_losses = self.loss_history[-self._iterations_per_epoch() :]
        self.epoch_loss_history.append(float(np.mean(epoch_losses)))
        train_acc = self.check_accuracy(
            self.data["X_train"], self.data["y_train"], num_samples=self.num_train_samples
        )
        X_val, y_val = self._sample(self.data["X_val"], self.data["y_val"], self.num_val_samples)
        val_acc, val_loss = self.ranks.mean_over_shares(partial(evaluate, self.model), X_val, y_val)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        self.val_loss_history.append(val_loss)
        if self.best_val_acc is None or val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            self.best_params, self.best_buffers = self._snapshot()
        if self.checkpoint_dir is not None and self.ranks.is_root:
            self.save_checkpoint()
        if self.verbose:
            self._log(
                f"epoch {self.epoch}/{self.num_epochs}: loss {self.epoch_loss_history[-1]:.4f} "
                f"(mean), val loss {val_loss:.4f}, train acc {train_acc:.4f}, "
                f"val acc {val_acc:.4f}",
                bar,
            )

    def predict(self, X: np.ndarray, batch_size: int = 200) -> np.ndarray:
        """Predicted class of every image.

        Parameters
        ----------
        X : ndarray, shape (N, ...)
        batch_size : int
            Images per forward pass.

        Returns
        -------
        ndarray of int64, shape (N,)
        """
        return predict_labels(self.model, X, batch_size)

    def check_accuracy(
        self,
        X: np.ndarray,
        y: np.ndarray,
        num_samples: int | None = None,
        batch_size: int = 200,
    ) -> float:
        """Fraction of images the model classifies correctly.

        Parameters
        ----------
        X : ndarray, shape (N, ...)
        y : ndarray of int, shape (N,)
        num_samples : int, optional
            When given and smaller than N, score a random subset of this size, drawn with the
            solver's generator.
        batch_size : int
            Images per forward pass.

        Returns
        -------
        float

        Notes
        -----
        With a communicator every rank must call it: each scores its share of the images
        and the counts of correct answers are summed.
        """
        X, y = np.asarray(X), np.asarray(y)
        if X.shape[0] == 0 or y.shape != (X.shape[0],):
            raise ValueError(f"need a non-empty X (N, ...) and y (N,), got {X.shape}, {y.shape}")
        X, y = self._sample(X, y, num_samples)
        mine = self.ranks.share(X.shape[0])
        correct = int(np.count_nonzero(self.predict(X[mine], batch_size) == y[mine]))
        return self.ranks.sum(correct) / X.shape[0]

    def _sample(
        self, X: np.ndarray, y: np.ndarray, num_samples: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random subset of ``num_samples`` images (drawn with the solver's generator)."""
        if num_samples is not None and X.shape[0] > num_samples:
            chosen = self.rng.choice(X.shape[0], num_samples, replace=False)
            return X[chosen], y[chosen]
        return X, y

    def _iterations_per_epoch(self) -> int:
        return math.ceil(self.data["X_train"].shape[0] / self.batch_size)

    def checkpoint_state(self) -> dict[str, Any]:
        """The training state a checkpoint holds (see :mod:`convnet.checkpoint`)."""
        return {
            "update_rule": self.update_rule_name,
            "epoch": self.epoch,
            "iteration": self.iteration,
            **{key: getattr(self, key) for key in HISTORIES},
            "best_val_acc": self.best_val_acc,
            "rng_state": self.rng.bit_generator.state,
            "model_rng_states": {
                name: generator.bit_generator.state
                for name, generator in _model_generators(self.model).items()
            },
            "params": self.model.params,
            "best_params": self.best_params,
            "buffers": running_statistics(self.model),
            "best_buffers": self.best_buffers,
            "optim": self.optim_configs,
        }

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write the training state atomically; an existing file is replaced only when whole.

        Parameters
        ----------
        path : str or Path, optional
            Defaults to :attr:`checkpoint_path`.

        Returns
        -------
        Path
            Where the checkpoint was written.
        """
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("no path given and the solver has no checkpoint_dir")
        self.last_checkpoint = checkpoint_format.save_checkpoint(target, self.checkpoint_state())
        return target

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore the model and the training state from a checkpoint.

        The parameters, optimizer states (including the decayed learning rate), counters,
        histories, best parameters and generator state all come from the file; ``num_epochs``,
        ``batch_size`` and ``lr_decay`` stay as this solver was given them.

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist.
        ValueError
            When the file is not a readable checkpoint, or does not fit this model or update
            rule.
        """
        path = Path(path)
        state = checkpoint_format.load_checkpoint(path)
        buffers = running_statistics(self.model)
        checkpoint_format.separate_buffers(state, buffers)
        if state["update_rule"] != self.update_rule_name:
            raise ValueError(
                f"checkpoint {path} was written with update rule {state['update_rule']!r}, "
                f"not {self.update_rule_name!r}"
            )
        checkpoint_format.check_fits(state["params"], self.model.params, path)
        checkpoint_format.check_fits(
            state["best_params"], self.model.params, path, allow_empty=True
        )
        for key in ("buffers", "best_buffers"):
            checkpoint_format.check_fits(state[key], buffers, path, allow_empty=True)
        if set(state["optim"]) != set(self.model.params):
            raise ValueError(f"checkpoint {path} lacks optimizer state for some parameters")
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = state["rng_state"]
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            raise ValueError(f"checkpoint {path} holds an unusable generator state") from error
        # A saved state of a generator the model does not hold is left alone: models keep a
        # dropout generator only when they have dropout layers (older ones always kept one).
        generators = _model_generators(self.model)
        if not set(generators) <= set(state["model_rng_states"]):
            raise ValueError(f"checkpoint {path} does not match the model's random generators")
        try:
            for name, generator in generators.items():
                generator.bit_generator.state = state["model_rng_states"][name]
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            raise ValueError(f"checkpoint {path} holds an unusable generator state") from error
        self.rng = rng
        self._restore(state["params"], state["buffers"])
        self.best_params = state["best_params"]
        self.best_buffers = state["best_buffers"]
        self.optim_configs = state["optim"]
        for key in ("epoch", "iteration", "best_val_acc", *HISTORIES):
            setattr(self, key, state[key])
