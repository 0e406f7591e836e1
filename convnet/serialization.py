"""Saving a model to one ``.npz`` file and loading it back.

The file holds every array of ``model.params`` and of ``model.buffers()`` (batch norm's
running statistics) under its name, and under ``"__convnet_meta__"`` a JSON string
``{"architecture": <class name>, "config": model.config(), "format_version": 1}``:
:func:`load_model` rebuilds the model from its class and configuration, then checks and
loads the arrays. Nothing is pickled.

``from convnet.models import save_model, load_model`` still works (they lived there).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from convnet._io import atomic_open
from convnet.models import FullyConnectedNet, ThreeLayerConvNet
from convnet.nn import Classifier

FORMAT_VERSION = 1
_META_KEY = "__convnet_meta__"

# The classes a file may hold, by the name it records.
ARCHITECTURES: dict[str, type[Classifier]] = {
    "ThreeLayerConvNet": ThreeLayerConvNet,
    "FullyConnectedNet": FullyConnectedNet,
    "Classifier": Classifier,
}


def save_model(model: Classifier, path: str | os.PathLike) -> Path:
    """Write a model's parameters and configuration to one ``.npz`` file at ``path``.

    The archive holds every array of ``model.params`` and of ``model.buffers()`` (batch
    norm's running statistics) under its name and, under
    ``"__convnet_meta__"``, the JSON string
    ``{"architecture": <class name>, "config": model.config(), "format_version": 1}``.
    A :class:`convnet.nn.Classifier`'s config holds its network as nested JSON (layer
    types and arguments); its parameters and buffers are stored under their dotted names.
    The file is written atomically (:func:`convnet._io.atomic_open`), so an existing file at
    ``path`` is replaced whole or not at all. ``path`` is used as given (no suffix added).

    Parameters
    ----------
    model : ThreeLayerConvNet, FullyConnectedNet or convnet.nn.Classifier
    path : str or path-like

    Returns
    -------
    path : Path
        Where the model was written.
    """
    architecture = type(model).__name__
    if ARCHITECTURES.get(architecture) is not type(model):
        raise TypeError(f"save_model saves {', '.join(ARCHITECTURES)}, got {type(model).__name__}")
    meta = {"architecture": architecture, "config": model.config(), "format_version": 1}
    arrays = _model_arrays(model)
    path = Path(path)
    with atomic_open(path) as file:
        np.savez(file, **arrays, **{_META_KEY: np.array(json.dumps(meta))})
    return path


def _model_arrays(model: Classifier) -> dict[str, np.ndarray]:
    """The parameters and buffers of ``model``, which share the archive's names."""
    buffers = model.buffers()
    clash = sorted(buffers.keys() & model.params.keys())
    if clash:
        raise ValueError(f"{type(model).__name__} has buffers named like parameters: {clash}")
    return {**model.params, **buffers}


_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file at ``path``, or a ``ValueError`` saying why not."""
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise ValueError(f"{path} is not a readable .npz model file: {error}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single .npy array, not an .npz model file")
    try:
        with archive:
            return {name: archive[name] for name in archive.files}
    except _READ_ERRORS as error:
        raise ValueError(f"{path} is a corrupt .npz model file: {error}") from error


def _read_meta(path: Path, raw: np.ndarray | None) -> dict[str, Any]:
    if raw is None:
        raise ValueError(f"{path} has no {_META_KEY!r} entry: it was not written by save_model")
    try:
        meta = json.loads(str(raw[()]))
    except (json.JSONDecodeError, IndexError) as error:
        raise ValueError(f"{path} has unreadable model metadata: {error}") from error
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path} has malformed model metadata: {meta!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {meta.get('format_version')!r}; this convnet reads "
            f"version {FORMAT_VERSION}"
        )
    if meta.get("architecture") not in ARCHITECTURES:
        raise ValueError(
            f"{path} holds an unknown architecture {meta.get('architecture')!r}; "
            f"known: {', '.join(ARCHITECTURES)}"
        )
    return meta


def load_model(path: str | os.PathLike, expected: str | type | None = None) -> Classifier:
    """Rebuild the model that :func:`save_model` wrote to ``path``.

    Parameters
    ----------
    path : str or path-like
    expected : str or class, optional
        Architecture the caller needs (e.g. ``"ThreeLayerConvNet"``); a file holding
        another one is refused.

    Returns
    -------
    model : ThreeLayerConvNet, FullyConnectedNet or convnet.nn.Classifier
        With the saved configuration, parameters and buffers (in the saved dtype).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not a readable ``.npz`` archive written by :func:`save_model`, holds
        another architecture than ``expected``, or a parameter is missing, unexpected or
        of the wrong shape for the saved configuration.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    meta = _read_meta(path, arrays.pop(_META_KEY, None))
    architecture = meta["architecture"]
    if expected is not None:
        expected_name = expected if isinstance(expected, str) else expected.__name__
        if expected_name != architecture:
            raise ValueError(f"{path} holds a {architecture}, not the expected {expected_name}")
    try:
        model = ARCHITECTURES[architecture](**meta["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} has an invalid {architecture} config: {error}") from error

    initial = _model_arrays(model)
    missing = sorted(initial.keys() - arrays.keys())
    unexpected = sorted(arrays.keys() - initial.keys())
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match its {architecture} config: missing parameters "
            f"{missing or 'none'}, unexpected entries {unexpected or 'none'}"
        )
    for name, value in initial.items():
        array = arrays[name]
        if array.shape != value.shape or array.dtype.kind != "f":
            raise ValueError(
                f"{path}: parameter {name} has shape {array.shape} and dtype {array.dtype}, "
                f"its config needs shape {value.shape} of floats"
            )
    for name in model.params:
        model.params[name] = arrays[name].astype(model.dtype, copy=False)
    model.set_buffers({name: arrays[name] for name in model.buffers()})
    return model
