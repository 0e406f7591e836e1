"""The run folders ``convnet train`` writes, and predictions from raw images in Python.

A run folder holds ``model.npz`` (:func:`convnet.serialization.save_model`),
``preprocessing.npz`` (the scaling and the mean image training applied to the raw images:
:class:`Preprocessing`), ``options.json``, ``summary.json``, ``curves.png``,
``filters.png`` and ``checkpoint.npz``. :func:`load_run` gives Python what
``convnet predict`` does::

    from convnet.runs import load_run

    run = load_run("runs/latest")        # a run folder, or the model.npz in one
    labels = run.predict(raw_images)     # (N, C, H, W) as the dataset has them

Images holding NaN or infinite values get no prediction: such a call raises a
``ValueError`` naming them (a model's scores for them would be NaN, and an argmax of NaN
scores is class 0, a label made up).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convnet._io import atomic_open
from convnet._npz import NpzReader

MODEL_FILE = "model.npz"
PREPROCESSING_FILE = "preprocessing.npz"
OPTIONS_FILE = "options.json"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
FILTERS_FILE = "filters.png"
LATEST = "latest"


def follow_latest(path: str | os.PathLike) -> Path:
    """``path`` with a ``latest`` pointer file followed.

    ``runs/latest`` is a symlink, which every path operation follows; where symlinks cannot
    be made it is a small file holding the run folder's name, which this resolves (e.g.
    ``runs/latest/model.npz`` -> ``runs/2026-01-31_12-00-00/model.npz``).

    Raises
    ------
    OSError
        When the pointer file cannot be read.
    """
    path = Path(path)
    parts = path.parts
    for index in range(len(parts)):
        prefix = Path(*parts[: index + 1])
        if prefix.name == LATEST and prefix.is_file() and not prefix.is_symlink():
            target = prefix.read_text().strip()
            return prefix.parent / target / Path(*parts[index + 1 :])
    return path


@dataclass(frozen=True)
class Preprocessing:
    """What training did to the raw images: ``images * scale - mean_image``.

    Attributes
    ----------
    scale : float
        Positive (digits: 1/16, pixels 0..16 to [0, 1]; CIFAR-10: 1).
    mean_image : ndarray, shape (C, H, W)
        The mean training image (after scaling), subtracted from every image.
    """

    scale: float
    mean_image: np.ndarray

    def __post_init__(self) -> None:
        mean_image = np.asarray(self.mean_image)
        if not (isinstance(self.scale, int | float) and math.isfinite(self.scale)):
            raise ValueError(f"scale must be a finite number, got {self.scale!r}")
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale!r}")
        if mean_image.ndim != 3 or mean_image.dtype.kind != "f":
            raise ValueError(
                f"mean_image must be floats (C, H, W), got {mean_image.dtype} {mean_image.shape}"
            )
        if not np.isfinite(mean_image).all():
            raise ValueError("mean_image holds NaN or infinite values")

    def apply(self, images: Any, dtype: Any) -> np.ndarray:
        """``images * scale - mean_image`` in ``dtype``.

        Parameters
        ----------
        images : ndarray, shape (N, C, H, W)
            Raw images, integers or floats (``mean_image``'s C, H, W).
        dtype : float32 or float64
            The model's.

        Returns
        -------
        ndarray, shape (N, C, H, W), of ``dtype``
        """
        images = np.asarray(images)
        if images.dtype.kind not in "iuf":
            raise ValueError(
                f"images must hold real numbers (float or integer), got {images.dtype}"
            )
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
        if images.shape[1:] != self.mean_image.shape:
            raise ValueError(
                f"the model was trained on images {self.mean_image.shape} (C, H, W), got "
                f"{images.shape[1:]}"
            )
        dtype = np.dtype(dtype)
        return images.astype(dtype) * dtype.type(self.scale) - self.mean_image.astype(dtype)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``scale`` and ``mean_image`` to an ``.npz`` file, atomically."""
        with atomic_open(path) as handle:
            np.savez(handle, scale=np.array(self.scale), mean_image=self.mean_image)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Preprocessing:
        """Read what :meth:`save` wrote (at a cost bounded by the file's size).

        Raises
        ------
        FileNotFoundError
            When there is no file at ``path``.
        ValueError
            When it is not a readable preprocessing file.
        """
        with NpzReader(path, "preprocessing file") as archive:
            if archive.names != {"scale", "mean_image"}:
                raise ValueError(
                    f"{path} is not a readable preprocessing file (entries "
                    f"{sorted(archive.names)}, not ['mean_image', 'scale'])"
                )
            scale = archive.read("scale", kinds="f")
            mean_image = archive.read("mean_image", kinds="f")
        if scale.shape != ():
            raise ValueError(f"{path}: scale must be one number, got shape {scale.shape}")
        try:
            return cls(float(scale), mean_image)
        except ValueError as error:
            raise ValueError(f"{path} is not a readable preprocessing file ({error})") from error


def _not_finite(rows: np.ndarray) -> np.ndarray:
    """Indices of the rows (images, or score vectors) holding a NaN or an infinity."""
    flat = rows.reshape(len(rows), -1)
    return np.flatnonzero(~np.isfinite(flat).all(axis=1))


def _name_images(indices: np.ndarray, total: int) -> str:
    shown = ", ".join(str(index) for index in indices[:5])
    more = ", ..." if len(indices) > 5 else ""
    return f"{'image' if len(indices) == 1 else 'images'} {shown}{more} ({len(indices)} of {total})"


class TrainedRun:
    """A trained model with the preprocessing of its run.

    Attributes
    ----------
    folder : Path
    model
        What :func:`convnet.serialization.load_model` returns.
    preprocessing : Preprocessing or None
        None when the folder holds no ``preprocessing.npz`` (models trained outside
        ``convnet train``): pass ``preprocessed=True`` with images prepared as in training.
    """

    def __init__(self, folder: Path, model: Any, preprocessing: Preprocessing | None) -> None:
        self.folder = folder
        self.model = model
        self.preprocessing = preprocessing

    def prepare(self, images: Any) -> np.ndarray:
        """Raw images (N, C, H, W) as training prepared them, in the model's dtype."""
        if self.preprocessing is None:
            raise ValueError(
                f"no {PREPROCESSING_FILE} in {self.folder}: pass preprocessed=True with "
                "images prepared as the training images were"
            )
        return self.preprocessing.apply(images, self.model.dtype)

    def scores(self, images: Any, batch_size: int = 200, preprocessed: bool = False) -> np.ndarray:
        """Class scores (N, classes) in float64.

        Parameters
        ----------
        images : ndarray, shape (N, C, H, W)
            Raw images (or, with ``preprocessed``, images prepared as in training).
        batch_size : int
            Images per forward pass.
        preprocessed : bool
            Skip the run's preprocessing.

        Raises
        ------
        ValueError
            When images hold NaN or infinite values (naming them), or the model's scores
            for some image are not finite (values too large for the model's dtype).
        """
        from convnet.solver import class_scores

        images = np.asarray(images)
        if images.dtype.kind == "f" and len(bad := _not_finite(images)):
            raise ValueError(
                f"{_name_images(bad, len(images))} hold NaN or infinite values: no prediction "
                "is made for a batch holding them"
            )
        with np.errstate(all="ignore"):  # values too large become inf, caught below
            prepared = images if preprocessed else self.prepare(images)
            scores = class_scores(self.model, prepared, batch_size).astype(np.float64)
        if len(bad := _not_finite(scores)):
            raise ValueError(
                f"the model's scores for {_name_images(bad, len(images))} are not finite (their "
                f"values are too large for {self.model.dtype}): no prediction is made"
            )
        return scores

    def predict(self, images: Any, batch_size: int = 200, preprocessed: bool = False) -> np.ndarray:
        """The predicted class of every image: int64 (N,) (see :meth:`scores`)."""
        return np.argmax(self.scores(images, batch_size, preprocessed), axis=1).astype(np.int64)

    def predict_proba(
        self, images: Any, batch_size: int = 200, preprocessed: bool = False
    ) -> np.ndarray:
        """Softmax probabilities (N, classes) in float64 (see :meth:`scores`)."""
        scores = self.scores(images, batch_size, preprocessed)
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def load_run(path: str | os.PathLike) -> TrainedRun:
    """Load a run's model and its preprocessing.

    Parameters
    ----------
    path : str or path-like
        A run folder (``runs/latest``, ``runs/2026-01-31_12-00-00``) or a model file in
        one; a ``latest`` pointer file is followed.

    Returns
    -------
    TrainedRun

    Raises
    ------
    FileNotFoundError
        When there is no model file.
    ValueError
        When the model or preprocessing file is damaged.
    """
    from convnet.serialization import load_model

    path = follow_latest(path)
    model_path = path / MODEL_FILE if path.is_dir() else path
    model = load_model(model_path)
    preprocessing_path = model_path.parent / PREPROCESSING_FILE
    preprocessing = None
    if preprocessing_path.exists():
        preprocessing = Preprocessing.load(preprocessing_path)
    return TrainedRun(model_path.parent, model, preprocessing)
