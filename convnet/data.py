"""Datasets as dicts of arrays: images (N, C, H, W) in a float dtype, labels (N,) of int64.

:func:`load_digits_dataset` needs no download: it splits scikit-learn's bundled 8x8 digits
(an optional dependency, ``pip install "convnet[train]"``). :func:`load_cifar10` reads the
CIFAR-10 "python version" batches from a directory, and :func:`preprocess_cifar10` carves
out the usual train/validation/test subsets and subtracts the mean training image.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CIFAR10_SUBDIRECTORY = "cifar-10-batches-py"
_CIFAR10_PIXELS = 3 * 32 * 32
_DIGITS_SPLIT_SEED = 20240601


def load_digits_dataset(
    seed: int = 0,
    *,
    num_validation: int = 270,
    num_test: int = 270,
    dtype: Any = np.float32,
) -> dict[str, np.ndarray]:
    """scikit-learn's 1797 handwritten digits, split into train/val/test and centred.

    Pixels (0..16) are scaled to [0, 1]; the mean training image is then subtracted from
    every split. The split is a fixed permutation of the samples chosen by ``seed``, so it is
    the same on every machine and run.

    Parameters
    ----------
    seed : int
        Selects the permutation behind the split (the default gives 1257/270/270).
    num_validation, num_test : int
        Sizes of the validation and test sets; the rest is the training set.
    dtype : float32 or float64

    Returns
    -------
    dict
        ``X_train`` (N, 1, 8, 8), ``y_train`` (N,), ``X_val``, ``y_val``, ``X_test``,
        ``y_test`` and ``mean_image`` (1, 8, 8), the mean that was subtracted.

    Raises
    ------
    ImportError
        When scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            'the digits dataset needs scikit-learn: pip install "convnet[train]" '
            "(or pip install scikit-learn)"
        ) from error
    digits = load_digits()
    images = (digits.images / 16.0).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    if num_validation < 1 or num_test < 1 or num_validation + num_test >= len(labels):
        raise ValueError(
            f"num_validation and num_test must be positive and leave training images out of "
            f"{len(labels)}, got {num_validation} and {num_test}"
        )
    order = np.random.default_rng([_DIGITS_SPLIT_SEED, seed]).permutation(len(labels))
    num_train = len(labels) - num_validation - num_test
    parts = {
        "train": order[:num_train],
        "val": order[num_train : num_train + num_validation],
        "test": order[num_train + num_validation :],
    }
    mean_image = images[parts["train"]].mean(axis=0)
    dataset = {"mean_image": mean_image.astype(dtype)}
    for split, indices in parts.items():
        dataset[f"X_{split}"] = (images[indices] - mean_image).astype(dtype)
        dataset[f"y_{split}"] = labels[indices]
    return dataset


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches: dicts, lists, bytes and numpy arrays, and nothing else."""

    ALLOWED = frozenset(
        {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype")}
        | {
            (f"numpy.{core}.{module}", name)
            for core in ("core", "_core")
            for module, name in (
                ("multiarray", "_reconstruct"),
                ("multiarray", "scalar"),
                ("numeric", "_frombuffer"),
            )
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (n, 3, 32, 32) uint8 and labels (n,) int64."""
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch {path} is missing")
    try:
        with path.open("rb") as handle:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        OverflowError,
        TypeError,
        ValueError,
    ) as error:
        raise ValueError(f"CIFAR-10 batch {path} is corrupt or not a batch ({error})") from error
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR10_PIXELS:
        raise ValueError(
            f"CIFAR-10 batch {path}: data must be uint8 (n, {_CIFAR10_PIXELS}), "
            f"got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"CIFAR-10 batch {path}: expected {data.shape[0]} integer labels, "
            f"got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"CIFAR-10 batch {path}: labels must lie in [0, 10)")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar10_directory(path: str | os.PathLike) -> Path:
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 directory {directory} does not exist: download the python version "
            f"(cifar-10-python.tar.gz), extract it and pass the {_CIFAR10_SUBDIRECTORY} directory"
        )
    nested = directory / _CIFAR10_SUBDIRECTORY
    if not (directory / CIFAR10_TEST_BATCH).exists() and nested.is_dir():
        return nested
    return directory


def load_cifar10(
    path: str | os.PathLike, dtype: Any = np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the CIFAR-10 python batches ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.

    Each batch is a pickled dict with ``b"data"`` (uint8, (n, 3072): 1024 red, then green,
    then blue values, rows top to bottom) and ``b"labels"`` (n ints). Only those types are
    unpickled; anything else in the file is refused.

    Parameters
    ----------
    path : str or Path
        The ``cifar-10-batches-py`` directory (or the directory holding it).
    dtype : float32 or float64

    Returns
    -------
    X_train : ndarray, shape (50000, 3, 32, 32)
        Raw pixel values 0..255 in ``dtype``.
    y_train : ndarray of int64, shape (50000,)
    X_test : ndarray, shape (10000, 3, 32, 32)
    y_test : ndarray of int64, shape (10000,)

    Raises
    ------
    FileNotFoundError
        When the directory or a batch file is missing.
    ValueError
        When a batch file is corrupt or holds something other than a batch.
    """
    directory = _cifar10_directory(path)
    train = [_read_batch(directory / name) for name in CIFAR10_TRAIN_BATCHES]
    X_test, y_test = _read_batch(directory / CIFAR10_TEST_BATCH)
    X_train = np.concatenate([images for images, _ in train]).astype(dtype)
    y_train = np.concatenate([labels for _, labels in train])
    return X_train, y_train, X_test.astype(dtype), y_test


def preprocess_cifar10(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_training: int = 49000,
    num_validation: int = 1000,
    num_test: int = 1000,
    subtract_mean: bool = True,
) -> dict[str, np.ndarray]:
    """Split off a validation set, subsample, and subtract the mean training image.

    The training set is the first ``num_training`` images, the validation set the next
    ``num_validation``, the test set the first ``num_test`` test images. The mean is taken
    over the (subsampled) training set only.

    Parameters
    ----------
    X_train : ndarray, shape (N, 3, 32, 32)
    y_train : ndarray of int, shape (N,)
    X_test : ndarray, shape (M, 3, 32, 32)
    y_test : ndarray of int, shape (M,)
    num_training, num_validation, num_test : int
    subtract_mean : bool

    Returns
    -------
    dict
        ``X_train``, ``y_train``, ``X_val``, ``y_val``, ``X_test``, ``y_test`` (images keep
        the input's dtype) and ``mean_image`` (3, 32, 32), zeros without ``subtract_mean``.
    """
    for name, value in (
        ("num_training", num_training),
        ("num_validation", num_validation),
        ("num_test", num_test),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if num_training + num_validation > len(X_train):
        raise ValueError(
            f"num_training + num_validation = {num_training + num_validation} exceeds the "
            f"{len(X_train)} training images"
        )
    if num_test > len(X_test):
        raise ValueError(f"num_test = {num_test} exceeds the {len(X_test)} test images")
    splits = {
        "train": (X_train[:num_training], y_train[:num_training]),
        "val": (
            X_train[num_training : num_training + num_validation],
            y_train[num_training : num_training + num_validation],
        ),
        "test": (X_test[:num_test], y_test[:num_test]),
    }
    train_images = splits["train"][0]
    mean_image = (
        train_images.mean(axis=0, dtype=np.float64).astype(train_images.dtype)
        if subtract_mean
        else np.zeros(train_images.shape[1:], dtype=train_images.dtype)
    )
    dataset = {"mean_image": mean_image}
    for split, (images, labels) in splits.items():
        dataset[f"X_{split}"] = images - mean_image
        dataset[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
    return dataset


def load_cifar10_dataset(
    path: str | os.PathLike, *, dtype: Any = np.float32, **options: Any
) -> dict[str, np.ndarray]:
    """:func:`load_cifar10` followed by :func:`preprocess_cifar10` (``options`` go to it)."""
    return preprocess_cifar10(*load_cifar10(path, dtype=dtype), **options)
