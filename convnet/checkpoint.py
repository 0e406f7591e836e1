"""The training checkpoint: one ``.npz`` file that lets a run resume exactly.

The archive holds every array under a short key (``a0``, ``a1``, ...) and, under ``meta``,
a JSON string: ``format`` ("convnet-checkpoint"), ``version`` (1), the update rule's name,
the counters, the histories, the generator states, and which key holds each parameter,
best parameter and optimizer-state array. Nothing is pickled. Files are written by
:func:`convnet._io.atomic_open`, so an existing checkpoint is replaced whole or not at all.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from convnet._io import atomic_open
from convnet._npz import NpzReader
from convnet.optim import UPDATE_RULES

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT = "convnet-checkpoint"
FORMAT_VERSION = 1
# The training curves: lists of floats, one entry a step or an epoch.
HISTORIES = (
    "loss_history",
    "epoch_loss_history",
    "val_loss_history",
    "train_acc_history",
    "val_acc_history",
)
# The training state, as save_checkpoint takes it and load_checkpoint returns it.
STATE_KEYS = (
    "update_rule",
    "epoch",
    "iteration",
    *HISTORIES,
    "best_val_acc",
    "rng_state",
    "model_rng_states",
    "params",
    "best_params",
    "buffers",
    "best_buffers",
    "optim",
)
# Named arrays: the parameters, and the state trained without gradients (batch norm's
# running statistics), as they are and as they were at the best validation accuracy.
ARRAY_KEYS = ("params", "best_params", "buffers", "best_buffers")


def _write_arrays(handle: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    np.savez(handle, **arrays)


def _is_json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _to_arrays(state: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}

    def store(value: np.ndarray | np.generic) -> str:
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value)
        return key

    optim: dict[str, dict[str, dict[str, Any]]] = {}
    for name, config in state["optim"].items():
        entries: dict[str, dict[str, Any]] = {}
        for key, value in config.items():
            if isinstance(value, np.ndarray | np.generic):
                entries[key] = {"array": store(value), "scalar": isinstance(value, np.generic)}
            elif _is_json_scalar(value):
                entries[key] = {"value": value}
            else:
                raise TypeError(
                    f"cannot checkpoint optimizer state {name}.{key} of type {type(value).__name__}"
                )
        optim[name] = entries
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        **{key: state[key] for key in STATE_KEYS if key not in (*ARRAY_KEYS, "optim")},
        **{key: {name: store(value) for name, value in state[key].items()} for key in ARRAY_KEYS},
        "optim": optim,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a training state to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        The file; its directory is created if need be.
    state : dict
        Every key of ``STATE_KEYS``: ``params``, ``best_params``, ``buffers`` and
        ``best_buffers`` map names to arrays,
        ``optim`` maps names to update-rule configs (arrays, numpy scalars and JSON
        scalars), the rest are JSON-compatible.

    Returns
    -------
    Path
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays = _to_arrays(state)
    with atomic_open(target) as handle:
        _write_arrays(handle, arrays)
    return target


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def _numbers(values: Any, what: str, length: int | None, low: float, high: float) -> list[float]:
    """A list of finite numbers in [low, high] (of ``length`` items unless None)."""
    if not isinstance(values, list) or (length is not None and len(values) != length):
        raise ValueError(f"{what} must be a list of {length} numbers")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what} must hold numbers, got {value!r}")
        if not low <= value <= high:  # False for NaN
            raise ValueError(f"{what} must hold numbers in [{low:g}, {high:g}], got {value!r}")
    return [float(value) for value in values]


def _history(meta: dict[str, Any], key: str, epochs: int, low: float, high: float) -> list[float]:
    """A per-epoch history: one value per epoch (or none, in older checkpoints)."""
    values = meta.get(key, [])
    return _numbers(values, key, epochs if values else 0, low, high)


def check_generator_state(state: Any, what: str) -> dict[str, Any]:
    """A ``bit_generator.state`` dict: a generator's name and integers >= 0 (numpy takes
    some negative or fractional values silently and fails at the next draw); ``has_uint32``
    0 or 1. Setting it on a generator then checks the rest."""

    def check(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)
        else:
            _integer(value, what)

    if not isinstance(state, dict) or not isinstance(state.get("bit_generator"), str):
        raise ValueError(f"{what} is not a generator state")
    check({key: value for key, value in state.items() if key != "bit_generator"})
    if state.get("has_uint32", 0) not in (0, 1):
        raise ValueError(f"{what} has has_uint32 {state['has_uint32']!r}, not 0 or 1")
    return state


# What the built-in update rules keep in a config (convnet.optim's table): hyperparameters
# and the ranges that make sense, and state arrays shaped like the parameter.
_POSITIVE = (0.0, False)  # (low, whether low itself is allowed); high is always finite
_FRACTION = (0.0, True)  # [0, 1)
_HYPERPARAMETERS = {
    "learning_rate": _POSITIVE,
    "epsilon": _POSITIVE,
    "momentum": _FRACTION,
    "decay_rate": _FRACTION,
    "beta1": _FRACTION,
    "beta2": _FRACTION,
}
_STATE_ARRAYS = {"velocity": False, "m": False, "v": True, "cache": True}  # True: >= 0


def _check_rule_config(name: str, config: dict[str, Any], param: np.ndarray) -> None:
    """A built-in update rule's config for parameter ``name``: hyperparameters in range,
    the step count an integer >= 0, state arrays of the parameter's shape and dtype,
    finite (and >= 0 where they are sums of squares)."""
    for key, value in config.items():
        what = f"the optimizer's {key} of {name}"
        if key in _HYPERPARAMETERS:
            low, inclusive = _HYPERPARAMETERS[key]
            number = float(value) if isinstance(value, int | float | np.number) else math.nan
            high = 1.0 if inclusive else math.inf
            above = number >= low if inclusive else number > low
            if isinstance(value, bool) or not (above and number < high and math.isfinite(number)):
                interval = f"[{low:g}, 1)" if inclusive else f"> {low:g} and finite"
                raise ValueError(f"{what} must be {interval}, got {value!r}")
        elif key == "t":
            _integer(int(value) if isinstance(value, np.integer) else value, what)
        elif key in _STATE_ARRAYS:
            if not isinstance(value, np.ndarray) or value.shape != param.shape:
                shape = getattr(value, "shape", type(value).__name__)
                raise ValueError(f"{what} has shape {shape}, the parameter {param.shape}")
            if value.dtype != param.dtype or not np.isfinite(value).all():
                raise ValueError(f"{what} must hold finite {param.dtype} values")
            if _STATE_ARRAYS[key] and (value < 0).any():
                raise ValueError(f"{what} must be >= 0 (a mean of squares)")


def _check_arrays(
    arrays: dict[str, np.ndarray], like: dict[str, np.ndarray] | None, what: str
) -> None:
    """Finite float arrays; with ``like``, none or all of its names, each of its shape
    and dtype; running variances (names ending ``running_var...``) >= 0."""
    if like is not None and arrays and set(arrays) != set(like):
        raise ValueError(f"the {what} are {sorted(arrays)}, not {sorted(like)}")
    for name, value in arrays.items():
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            raise ValueError(f"the {what} {name} must hold finite floats")
        if like is not None and (value.shape, value.dtype) != (like[name].shape, like[name].dtype):
            raise ValueError(
                f"the {what} {name} is {value.dtype} {value.shape}, its parameter "
                f"{like[name].dtype} {like[name].shape}"
            )
        if name.rsplit(".", 1)[-1].startswith("running_var") and (value < 0).any():
            raise ValueError(f"the running variance {name} has negative values")


def _parse(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The training state from the archive's metadata and arrays, every part checked."""
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown format {meta.get('format')!r} version {meta.get('version')!r}")
    epoch = _integer(meta["epoch"], "epoch")
    iteration = _integer(meta["iteration"], "iteration")
    named = {
        key: {name: arrays[stored] for name, stored in meta.get(key, {}).items()}
        for key in ARRAY_KEYS
    }
    _check_arrays(named["params"], None, "parameters")
    _check_arrays(named["best_params"], named["params"], "best parameters")
    _check_arrays(named["buffers"], None, "running statistics")
    _check_arrays(named["best_buffers"], named["buffers"], "best running statistics")
    update_rule = meta["update_rule"]
    if not isinstance(update_rule, str):
        raise ValueError(f"update_rule must be a name, got {update_rule!r}")
    if set(meta["optim"]) != set(named["params"]):
        raise ValueError("the optimizer state does not name the parameters")
    optim: dict[str, dict[str, Any]] = {}
    for name, entries in meta["optim"].items():
        config: dict[str, Any] = {}
        for key, entry in entries.items():
            if "array" in entry:
                value = arrays[entry["array"]]
                config[key] = value[()] if entry["scalar"] else value
            elif _is_json_scalar(entry["value"]):
                config[key] = entry["value"]
            else:
                raise ValueError(f"the optimizer's {key} of {name} is not a number or text")
        if update_rule in UPDATE_RULES:
            _check_rule_config(name, config, named["params"][name])
        optim[name] = config
    val_acc_history = _numbers(meta["val_acc_history"], "val_acc_history", epoch, 0, 1)
    best_val_acc = meta["best_val_acc"]
    if (best_val_acc is None) != (epoch == 0) or (epoch and best_val_acc != max(val_acc_history)):
        raise ValueError(f"best_val_acc {best_val_acc!r} is not the best of {val_acc_history}")
    return {
        "update_rule": update_rule,
        "epoch": epoch,
        "iteration": iteration,
        "loss_history": _numbers(
            meta["loss_history"], "loss_history", iteration, -math.inf, math.inf
        ),
        "epoch_loss_history": _history(meta, "epoch_loss_history", epoch, -math.inf, math.inf),
        "val_loss_history": _history(meta, "val_loss_history", epoch, 0, math.inf),
        "train_acc_history": _numbers(meta["train_acc_history"], "train_acc_history", epoch, 0, 1),
        "val_acc_history": val_acc_history,
        "best_val_acc": None if best_val_acc is None else float(best_val_acc),
        "rng_state": check_generator_state(meta["rng_state"], "the solver's generator state"),
        "model_rng_states": {
            str(name): check_generator_state(state, f"the generator state of {name}")
            for name, state in meta["model_rng_states"].items()
        },
        **named,
        "optim": optim,
    }


def _referenced_keys(meta: dict[str, Any]) -> set[str]:
    """The archive keys the metadata names (every array but the metadata itself)."""
    keys = {stored for key in ARRAY_KEYS for stored in meta.get(key, {}).values()}
    for entries in meta["optim"].values():
        keys |= {entry["array"] for entry in entries.values() if "array" in entry}
    return keys


# The errors a forged or damaged metadata string raises while it is taken apart.
_META_ERRORS = (TypeError, ValueError, KeyError, AttributeError, RecursionError, OverflowError)


def _read_meta(archive: NpzReader) -> dict[str, Any]:
    if "meta" not in archive.names:
        raise ValueError(f"{archive.path} is not a readable convnet checkpoint (no metadata)")
    text = archive.read("meta", kinds="U")
    try:
        meta = json.loads(str(text[()]))
    except _META_ERRORS as error:
        raise ValueError(
            f"{archive.path} is not a readable convnet checkpoint ({error})"
        ) from error
    if not isinstance(meta, dict):
        raise ValueError(f"{archive.path} is not a readable convnet checkpoint (bad metadata)")
    return meta


def checkpoint_epoch(path: str | os.PathLike) -> int:
    """The epochs a checkpoint holds, read from its metadata alone (no array is read).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a readable convnet checkpoint.
    """
    with NpzReader(path, "convnet checkpoint") as archive:
        meta = _read_meta(archive)
    epoch = meta.get("epoch")
    if meta.get("format") != FORMAT or isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError(f"{path} is not a readable convnet checkpoint (bad metadata)")
    return epoch


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read the training state :func:`save_checkpoint` wrote, checking every part of it.

    The archive's entries are checked against its metadata before any array is read,
    and each array's header against its entry (:class:`convnet._npz.NpzReader`), so
    reading costs at most the file's size. Then the state must hang together: counters
    and histories of matching lengths, accuracies in [0, 1], finite float parameters
    (best ones and running statistics alike, running variances >= 0), generator states
    of integers, and for the built-in update rules hyperparameters in their ranges and
    state arrays of their parameter's shape and dtype.

    Returns
    -------
    dict
        Every key of ``STATE_KEYS`` (``epoch_loss_history``, ``val_loss_history``,
        ``buffers`` and ``best_buffers`` are empty for checkpoints written before they were
        recorded).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a readable convnet checkpoint, or holds a state no training
        could have written.
    """
    path = Path(path)
    with NpzReader(path, "convnet checkpoint") as archive:
        meta = _read_meta(archive)
        try:
            expected = _referenced_keys(meta) | {"meta"}
        except _META_ERRORS as error:
            raise ValueError(f"{path} is not a readable convnet checkpoint ({error})") from error
        if archive.names != expected:
            extra, missing = sorted(archive.names - expected), sorted(expected - archive.names)
            raise ValueError(
                f"{path} is not a readable convnet checkpoint (entries {extra or 'none'} are "
                f"not in its metadata, {missing or 'none'} are missing)"
            )
        arrays = {key: archive.read(key, kinds="biuf") for key in sorted(expected - {"meta"})}
    try:
        return _parse(meta, arrays)
    except _META_ERRORS as error:
        raise ValueError(f"{path} is not a readable convnet checkpoint ({error})") from error


def check_fits(
    saved: dict[str, np.ndarray],
    params: dict[str, np.ndarray],
    path: str | os.PathLike,
    *,
    allow_empty: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``saved`` has the names, shapes and dtypes of ``params``."""
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


def separate_buffers(state: dict[str, Any], buffer_names: Collection[str]) -> None:
    """Move the named buffers out of the parameters of a training state, in place.

    Checkpoints of :class:`convnet.nn.Classifier` models written before the running
    statistics of batch norm became buffers hold them among the parameters (with an
    optimizer state, which every update rule left unused): this moves them from
    ``params`` / ``best_params`` to ``buffers`` / ``best_buffers`` and drops their
    optimizer state. A state without such entries is left as it is.
    """
    for name in buffer_names:
        for params, buffers in (("params", "buffers"), ("best_params", "best_buffers")):
            if name in state[params]:
                state[buffers][name] = state[params].pop(name)
        state["optim"].pop(name, None)
