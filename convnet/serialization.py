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
from pathlib import Path
from typing import Any

import numpy as np

from convnet._io import atomic_open
from convnet._npz import NpzReader
from convnet.models import FullyConnectedNet, ThreeLayerConvNet
from convnet.nn import Classifier, without_arrays

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


_WHAT = ".npz model file"
_NPY_MAGIC = b"\x93NUMPY"
# What a forged metadata string or configuration raises while it is parsed or a model is
# built from it (a Sequential nested 500 deep: RecursionError; a list where a dict should
# be: AttributeError or TypeError; an integer too large for C: OverflowError).
_CONFIG_ERRORS = (TypeError, ValueError, KeyError, AttributeError, RecursionError, OverflowError)


def _open_archive(path: Path) -> NpzReader:
    """The archive at ``path``, its directory checked (a single ``.npy`` file named so)."""
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    with path.open("rb") as handle:
        if handle.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise ValueError(f"{path} is not a readable {_WHAT}: it holds a single .npy array")
    return NpzReader(path, _WHAT)


def _read_meta(path: Path, archive: NpzReader) -> dict[str, Any]:
    if _META_KEY not in archive.names:
        raise ValueError(
            f"{path} is not a readable {_WHAT}: it has no {_META_KEY!r} entry (it was not "
            "written by save_model)"
        )
    raw = archive.read(_META_KEY, kinds="U")
    try:
        meta = json.loads(str(raw[()]))
    except (*_CONFIG_ERRORS, IndexError) as error:
        raise ValueError(f"{path} has unreadable model metadata: {error}") from error
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path} has malformed model metadata")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {meta.get('format_version')!r}; this convnet reads "
            f"version {FORMAT_VERSION}"
        )
    architecture = meta.get("architecture")
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise ValueError(
            f"{path} holds an unknown architecture {architecture!r}; "
            f"known: {', '.join(ARCHITECTURES)}"
        )
    return meta


def _build(path: Path, architecture: str, config: dict[str, Any]) -> Classifier:
    try:
        return ARCHITECTURES[architecture](**config)
    except _CONFIG_ERRORS as error:
        raise ValueError(f"{path} has an invalid {architecture} config: {error}") from error


def _check_entries(path: Path, archive: NpzReader, architecture: str, shapes: dict) -> None:
    """The archive's entries must be the model's arrays, each of the shape its
    configuration gives and of floats: checked from the headers, before any data is read
    or any model array allocated."""
    entries = archive.names - {_META_KEY}
    missing, unexpected = sorted(shapes.keys() - entries), sorted(entries - shapes.keys())
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match its {architecture} config: missing parameters "
            f"{missing or 'none'}, unexpected entries {unexpected or 'none'}"
        )
    for name, shape in shapes.items():
        found, dtype = archive.header(name)
        if found != shape or dtype.kind != "f":
            raise ValueError(
                f"{path}: parameter {name} has shape {found} and dtype {dtype}, its config "
                f"needs shape {shape} of floats"
            )


def _finite_arrays(path: Path, archive: NpzReader, names: Any) -> dict[str, np.ndarray]:
    """The named arrays, refused if any holds NaN or infinity, or if a running variance
    is negative: a model with them predicts nonsense (class 0 for every image)."""
    arrays = {}
    for name in names:
        array = archive.read(name, kinds="f")
        if not np.isfinite(array).all():
            raise ValueError(f"{path}: {name} holds NaN or infinite values")
        if name.rsplit(".", 1)[-1].startswith("running_var") and (array < 0).any():
            raise ValueError(f"{path}: the running variance {name} has negative values")
        arrays[name] = array
    return arrays


def load_model(path: str | os.PathLike, expected: str | type | None = None) -> Classifier:
    """Rebuild the model that :func:`save_model` wrote to ``path``.

    The file is untrusted: its zip directory, its metadata and the headers of its arrays
    are checked against the architecture (the shapes its configuration gives, computed
    without allocating them: :func:`convnet.nn.without_arrays`) before any array is read
    or any model built, so loading costs at most about the file's size; and no array is
    unpickled.

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
        If the file is not a readable ``.npz`` archive written by :func:`save_model` (a
        text file, a damaged or forged archive, a configuration that cannot be built),
        holds another architecture than ``expected``, a parameter that is missing,
        unexpected or of the wrong shape for the saved configuration, a NaN or an
        infinity, or a negative running variance.
    """
    path = Path(path)
    with _open_archive(path) as archive:
        meta = _read_meta(path, archive)
        architecture, config = meta["architecture"], meta["config"]
        if expected is not None:
            expected_name = expected if isinstance(expected, str) else expected.__name__
            if expected_name != architecture:
                raise ValueError(f"{path} holds a {architecture}, not the expected {expected_name}")
        with without_arrays():
            shapes = _build(path, architecture, config).array_shapes()
        _check_entries(path, archive, architecture, shapes)
        arrays = _finite_arrays(path, archive, shapes)
    model = _build(path, architecture, config)
    for name in model.params:
        model.params[name] = arrays[name].astype(model.dtype, copy=False)
    model.set_buffers({name: arrays[name] for name in model.buffers()})
    return model
