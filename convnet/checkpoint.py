"""The training checkpoint: one ``.npz`` file that lets a run resume exactly.

The archive holds every array under a short key (``a0``, ``a1``, ...) and, under ``meta``,
a JSON string: ``format`` ("convnet-checkpoint"), ``version`` (1), the update rule's name,
the counters, the histories, the generator states, and which key holds each parameter,
best parameter and optimizer-state array. Nothing is pickled. Files are written by
:func:`convnet._io.atomic_open`, so an existing checkpoint is replaced whole or not at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from convnet._io import atomic_open

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


def _parse(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
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
        "loss_history": [float(value) for value in meta["loss_history"]],
        "epoch_loss_history": [float(value) for value in meta.get("epoch_loss_history", [])],
        "val_loss_history": [float(value) for value in meta.get("val_loss_history", [])],
        "train_acc_history": [float(value) for value in meta["train_acc_history"]],
        "val_acc_history": [float(value) for value in meta["val_acc_history"]],
        "best_val_acc": None if meta["best_val_acc"] is None else float(meta["best_val_acc"]),
        "rng_state": meta["rng_state"],
        "model_rng_states": dict(meta["model_rng_states"]),
        **{
            key: {name: arrays[stored] for name, stored in meta.get(key, {}).items()}
            for key in ARRAY_KEYS
        },
        "optim": optim,
    }


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read the training state :func:`save_checkpoint` wrote.

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
        When the file is not a readable convnet checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays.pop("meta")[()]))
        return _parse(meta, arrays)
    except Exception as error:
        # numpy, zipfile, zlib and json raise many different types on damaged files
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
