"""Train a model by minibatch gradient descent, with checkpoints that resume exactly.

A :class:`Solver` shuffles the training set every epoch with its own
``np.random.default_rng(seed)``, applies an update rule from :mod:`convnet.optim` to every
parameter, decays the learning rate once per epoch and keeps the parameters that scored best
on the validation set. With ``checkpoint_dir`` set, it writes ``checkpoint.npz`` at the end
of every epoch (atomically: a temporary file, then :func:`os.replace`). A checkpoint holds
the parameters, every optimizer state, the counters, the histories, the best parameters,
the solver's generator state and that of every ``np.random.Generator`` the model holds as
an attribute (dropout masks), so a run resumed from it follows the same trajectory as one
never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from convnet.optim import UPDATE_RULES

CHECKPOINT_NAME = "checkpoint.npz"
_FORMAT = "convnet-checkpoint"
_FORMAT_VERSION = 1
_DATA_KEYS = ("X_train", "y_train", "X_val", "y_val")

UpdateRule = Callable[[np.ndarray, np.ndarray, dict], tuple[np.ndarray, dict]]


class Model(Protocol):
    """What a :class:`Solver` needs from a model."""

    params: dict[str, np.ndarray]

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        """Scores (N, C) when ``y`` is None, else ``(loss, grads)`` keyed like ``params``."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite.

    Attributes
    ----------
    loss : float
        The non-finite loss.
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
            f"training diverged: the loss is {loss} at epoch {epoch}, iteration {iteration}"
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


def _write_arrays(handle: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    np.savez(handle, **arrays)


def _model_generators(model: Model) -> dict[str, np.random.Generator]:
    """The random generators a model holds as attributes (e.g. for dropout masks)."""
    return {
        name: value for name, value in vars(model).items() if isinstance(value, np.random.Generator)
    }


def _is_json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


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
        Show a tqdm bar with the loss and images/s (off when tqdm is not installed).
    checkpoint_dir : str or Path, optional
        Where ``checkpoint.npz`` is written at the end of every epoch.
    print_every : int, optional
        With ``verbose``, also print the loss every this many iterations.
    verbose : bool
        Print a line per epoch.
    resume_from : str or Path, optional
        A checkpoint to continue from (see :meth:`load_checkpoint`).

    Attributes
    ----------
    epoch, iteration : int
        Completed epochs and steps.
    loss_history : list of float
        The loss of every step.
    train_acc_history, val_acc_history : list of float
        Accuracies at the end of every epoch.
    best_val_acc : float or None
        The best validation accuracy so far; ``best_params`` holds the parameters behind it.
    optim_configs : dict
        Per parameter, the update rule's hyperparameters and state.
    train_seconds, images_per_second : float
        Wall time of the last :meth:`train` call, and its training throughput.
    last_checkpoint : Path or None
        The checkpoint this solver wrote last.
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
    ) -> None:
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not (isinstance(num_epochs, int) and num_epochs >= 0):
            raise ValueError(f"num_epochs must be a non-negative integer, got {num_epochs!r}")
        if not (math.isfinite(lr_decay) and lr_decay > 0):
            raise ValueError(f"lr_decay must be a positive number, got {lr_decay!r}")
        for name, value in (
            ("num_train_samples", num_train_samples),
            ("num_val_samples", num_val_samples),
        ):
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        self.model = model
        self.data = _check_data(data)
        self.update_rule_name, self.update_rule = _resolve_update_rule(update_rule)
        self.lr_decay = float(lr_decay)
        self.batch_size = batch_size
        self.num_epochs = num_epochs
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.seed = seed
        self.progress = progress
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.print_every = print_every
        self.verbose = verbose

        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.iteration = 0
        self.loss_history: list[float] = []
        self.train_acc_history: list[float] = []
        self.val_acc_history: list[float] = []
        self.best_val_acc: float | None = None
        self.best_params: dict[str, np.ndarray] = {}
        initial_config = dict(optim_config or {})
        self.optim_configs = {name: dict(initial_config) for name in model.params}
        self.train_seconds = 0.0
        self.images_per_second = 0.0
        self.last_checkpoint: Path | None = None
        if resume_from is not None:
            self.load_checkpoint(resume_from)

    @property
    def checkpoint_path(self) -> Path | None:
        """``checkpoint_dir / "checkpoint.npz"``, or None without a checkpoint directory."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    @property
    def history(self) -> dict[str, Any]:
        """Loss per iteration, accuracies per epoch and the best validation accuracy."""
        return {
            "loss_history": list(self.loss_history),
            "train_acc_history": list(self.train_acc_history),
            "val_acc_history": list(self.val_acc_history),
            "best_val_acc": self.best_val_acc,
        }

    def _log(self, message: str, bar: Any) -> None:
        if bar is None:
            print(message, flush=True)
        else:
            bar.write(message)

    def _progress_bar(self, total: int) -> Any:
        if not self.progress:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=total, unit="batch", dynamic_ncols=True)

    def _step(self, X_batch: np.ndarray, y_batch: np.ndarray, epoch: int, iteration: int) -> float:
        loss, grads = self.model.loss(X_batch, y_batch)
        loss = float(loss)
        if not math.isfinite(loss):
            detail = ""
            if self.last_checkpoint is not None:
                detail = f" (the checkpoint of epoch {self.epoch} is {self.last_checkpoint})"
            raise TrainingDiverged(loss, epoch, iteration, detail)
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
            When the loss becomes NaN or infinite; the checkpoint of the last completed
            epoch is left as it was.

        Notes
        -----
        Every step allocates the same large arrays again; :func:`convnet.keep_freed_memory`
        (process-wide, so the Solver leaves it to you; ``convnet train`` calls it) makes
        glibc reuse freed memory and spares a page fault per page.
        """
        X_train, y_train = self.data["X_train"], self.data["y_train"]
        num_train = X_train.shape[0]
        iterations_per_epoch = math.ceil(num_train / self.batch_size)
        bar = self._progress_bar(max(self.num_epochs - self.epoch, 0) * iterations_per_epoch)
        step_seconds = 0.0
        images = 0
        started = time.perf_counter()
        try:
            while self.epoch < self.num_epochs:
                epoch = self.epoch + 1
                if bar is not None:
                    bar.set_description(f"epoch {epoch}/{self.num_epochs}")
                order = self.rng.permutation(num_train)
                for batch in range(iterations_per_epoch):
                    indices = order[batch * self.batch_size : (batch + 1) * self.batch_size]
                    step_started = time.perf_counter()
                    loss = self._step(X_train[indices], y_train[indices], epoch, batch + 1)
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
        finally:
            if bar is not None:
                bar.close()
            self.train_seconds = time.perf_counter() - started
        if self.best_params:
            for name, value in self.best_params.items():
                self.model.params[name] = value.copy()
        return self.history

    def _end_epoch(self, bar: Any) -> None:
        self.epoch += 1
        for config in self.optim_configs.values():
            if "learning_rate" in config:
                config["learning_rate"] *= self.lr_decay
        train_acc = self.check_accuracy(
            self.data["X_train"], self.data["y_train"], num_samples=self.num_train_samples
        )
        val_acc = self.check_accuracy(
            self.data["X_val"], self.data["y_val"], num_samples=self.num_val_samples
        )
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if self.best_val_acc is None or val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            self.best_params = {name: value.copy() for name, value in self.model.params.items()}
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        if self.verbose:
            self._log(
                f"epoch {self.epoch}/{self.num_epochs}: loss {self.loss_history[-1]:.4f}, "
                f"train acc {train_acc:.4f}, val acc {val_acc:.4f}",
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
        ndarray of intp, shape (N,)
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        predictions = [
            np.argmax(self.model.loss(X[start : start + batch_size]), axis=1)
            for start in range(0, X.shape[0], batch_size)
        ]
        return np.concatenate(predictions) if predictions else np.empty(0, dtype=np.intp)

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
        """
        X, y = np.asarray(X), np.asarray(y)
        if X.shape[0] == 0 or y.shape != (X.shape[0],):
            raise ValueError(f"need a non-empty X (N, ...) and y (N,), got {X.shape}, {y.shape}")
        if num_samples is not None and X.shape[0] > num_samples:
            chosen = self.rng.choice(X.shape[0], num_samples, replace=False)
            X, y = X[chosen], y[chosen]
        return float(np.mean(self.predict(X, batch_size) == y))

    def _checkpoint_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}

        def store(value: np.ndarray | np.generic) -> str:
            key = f"a{len(arrays)}"
            arrays[key] = np.asarray(value)
            return key

        optim: dict[str, dict[str, dict[str, Any]]] = {}
        for name, config in self.optim_configs.items():
            entries: dict[str, dict[str, Any]] = {}
            for key, value in config.items():
                if isinstance(value, np.ndarray | np.generic):
                    entries[key] = {"array": store(value), "scalar": isinstance(value, np.generic)}
                elif _is_json_scalar(value):
                    entries[key] = {"value": value}
                else:
                    raise TypeError(
                        f"cannot checkpoint optimizer state {name}.{key} of type "
                        f"{type(value).__name__}"
                    )
            optim[name] = entries
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "update_rule": self.update_rule_name,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "loss_history": self.loss_history,
            "train_acc_history": self.train_acc_history,
            "val_acc_history": self.val_acc_history,
            "best_val_acc": self.best_val_acc,
            "rng_state": self.rng.bit_generator.state,
            "model_rng_states": {
                name: generator.bit_generator.state
                for name, generator in _model_generators(self.model).items()
            },
            "params": {name: store(value) for name, value in self.model.params.items()},
            "best_params": {name: store(value) for name, value in self.best_params.items()},
            "optim": optim,
        }
        arrays["meta"] = np.array(json.dumps(meta))
        return arrays

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
        target.parent.mkdir(parents=True, exist_ok=True)
        arrays = self._checkpoint_arrays()
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
        try:
            with os.fdopen(descriptor, "wb") as handle:
                _write_arrays(handle, arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self.last_checkpoint = target
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
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
            meta = json.loads(str(arrays.pop("meta")[()]))
            state = _parse_checkpoint(meta, arrays)
        except Exception as error:
            # numpy, zipfile, zlib and json raise many different types on damaged files
            raise ValueError(f"{path} is not a readable convnet checkpoint ({error})") from error
        if state["update_rule"] != self.update_rule_name:
            raise ValueError(
                f"checkpoint {path} was written with update rule {state['update_rule']!r}, "
                f"not {self.update_rule_name!r}"
            )
        _check_fits(state["params"], self.model.params, path)
        _check_fits(state["best_params"], self.model.params, path, allow_empty=True)
        if set(state["optim"]) != set(self.model.params):
            raise ValueError(f"checkpoint {path} lacks optimizer state for some parameters")
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = state["rng_state"]
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"checkpoint {path} holds an unusable generator state") from error
        generators = _model_generators(self.model)
        if set(state["model_rng_states"]) != set(generators):
            raise ValueError(f"checkpoint {path} does not match the model's random generators")
        try:
            for name, saved in state["model_rng_states"].items():
                generators[name].bit_generator.state = saved
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"checkpoint {path} holds an unusable generator state") from error
        self.rng = rng
        self.model.params.update(state["params"])
        self.best_params = state["best_params"]
        self.optim_configs = state["optim"]
        for key in ("epoch", "iteration", "best_val_acc"):
            setattr(self, key, state[key])
        for key in ("loss_history", "train_acc_history", "val_acc_history"):
            setattr(self, key, [float(value) for value in state[key]])


def _parse_checkpoint(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
        raise ValueError(f"unknown format {meta.get('format')!r} version {meta.get('version')!r}")
    optim: dict[str, dict[str, Any]] = {}
    for name, entries in meta["optim"].items():
        config: dict[str, Any] = {}
        for key, entry in entries.items():
            if "array" in entry:
                value = arrays[entry["array"]]
                config[key] = value[()] if entry["scalar"] else value
            else:
                config[key] = entry["value"]
        optim[name] = config
    epoch, iteration = int(meta["epoch"]), int(meta["iteration"])
    if epoch < 0 or iteration < 0:
        raise ValueError("negative counters")
    return {
        "update_rule": str(meta["update_rule"]),
        "epoch": epoch,
        "iteration": iteration,
        "loss_history": list(meta["loss_history"]),
        "train_acc_history": list(meta["train_acc_history"]),
        "val_acc_history": list(meta["val_acc_history"]),
        "best_val_acc": None if meta["best_val_acc"] is None else float(meta["best_val_acc"]),
        "rng_state": meta["rng_state"],
        "model_rng_states": dict(meta["model_rng_states"]),
        "params": {name: arrays[key] for name, key in meta["params"].items()},
        "best_params": {name: arrays[key] for name, key in meta["best_params"].items()},
        "optim": optim,
    }


def _check_fits(
    saved: dict[str, np.ndarray],
    params: dict[str, np.ndarray],
    path: Path,
    *,
    allow_empty: bool = False,
) -> None:
    if allow_empty and not saved:
        return
    if set(saved) != set(params):
        raise ValueError(
            f"checkpoint {path} holds parameters {sorted(saved)}, the model has {sorted(params)}"
        )
    for name, value in saved.items():
        if value.shape != params[name].shape or value.dtype != params[name].dtype:
            raise ValueError(
                f"checkpoint {path}: parameter {name} is {value.dtype} {value.shape}, the model "
                f"expects {params[name].dtype} {params[name].shape}"
            )
