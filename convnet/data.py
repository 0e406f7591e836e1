"""Datasets as dicts of arrays: images (N, C, H, W) in a float dtype, labels (N,) of int64.

:func:`load_digits_dataset` needs no download: it splits scikit-learn's bundled 8x8 digits
(an optional dependency, ``pip install "convnet[train]"``). :func:`load_cifar10` reads the
CIFAR-10 "python version" batches from a directory, and :func:`preprocess_cifar10` carves
out the usual train/validation/test subsets and subtracts the mean training image.
:func:`download_cifar10` fetches the official archive into a cache folder, checks its
published MD5 and extracts it atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from convnet import _environment
from convnet._io import atomic_open, fsync_directory, stderr_is_interactive

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
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published beside the archive
CIFAR10_URL_VARIABLE = _environment.CIFAR10_URL  # a mirror of the same archive
DATA_DIR_VARIABLE = _environment.DATA_DIR
DIGITS_SCALE = 1 / 16  # the digits' pixels are 0..16; load_digits_dataset scales them to [0, 1]
_DOWNLOAD_CHUNK = 2**20
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


class DownloadError(OSError):
    """A download failed or gave a file other than the one expected; nothing was kept."""


def default_data_dir() -> Path:
    """Where downloaded datasets are cached.

    ``$CONVNET_DATA_DIR`` if set, else ``convnet`` in the user's cache directory
    (``$XDG_CACHE_HOME``, else ``~/.cache``; ``%LOCALAPPDATA%`` on Windows).
    """
    chosen = _environment.data_dir()
    if chosen is not None:
        return Path(chosen)
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "convnet"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "convnet"


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def cifar10_is_cached(directory: str | os.PathLike | None = None) -> bool:
    """Whether ``directory`` (default :func:`default_data_dir`) holds the extracted batches."""
    root = Path(directory).expanduser() if directory is not None else default_data_dir()
    batches = root / _CIFAR10_SUBDIRECTORY
    names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    return all((batches / name).is_file() for name in names)


def _fetch(url: str, destination: Path, progress: bool) -> str:
    """Copy ``url`` into the open-for-writing ``destination``; return the content's MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    bar = None
    try:
        with urllib.request.urlopen(url, timeout=60) as response, destination.open("wb") as out:
            total = response.headers.get("Content-Length")
            if progress and stderr_is_interactive():
                with contextlib.suppress(ImportError):
                    from tqdm.auto import tqdm

                    size = int(total) if total and total.isdigit() else None
                    bar = tqdm(total=size, unit="B", unit_scale=True, desc="CIFAR-10")
            while chunk := response.read(_DOWNLOAD_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    finally:
        if bar is not None:
            bar.close()
    return digest.hexdigest()


def _safe_members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The archive's members, refusing links, devices and paths outside the batches folder."""
    members = archive.getmembers()
    for member in members:
        parts = Path(member.name).parts
        if (
            not (member.isfile() or member.isdir())
            or Path(member.name).is_absolute()
            or ".." in parts
            or parts[:1] != (_CIFAR10_SUBDIRECTORY,)
        ):
            raise DownloadError(f"the CIFAR-10 archive holds an unexpected entry {member.name!r}")
    return members


def _extract(archive: tarfile.TarFile, destination: Path) -> None:
    """Write the archive's checked members under ``destination``, every file through the
    atomic writer (fsynced, renamed into place, its folder fsynced; the umask's
    permissions)."""
    for member in _safe_members(archive):
        path = destination / member.name
        if member.isdir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        source = archive.extractfile(member)
        if source is None:
            raise DownloadError(f"cannot read {member.name!r} from the CIFAR-10 archive")
        with source, atomic_open(path) as out:
            shutil.copyfileobj(source, out)


def download_cifar10(
    directory: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    md5: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch and extract the CIFAR-10 python archive, unless it is already cached.

    The archive is downloaded to a temporary file in ``directory``, its MD5 compared with
    the published one, and it is extracted (each file fsynced by the atomic writer of
    :mod:`convnet._io`) into a temporary folder that is then renamed to
    ``directory/cifar-10-batches-py`` (and ``directory`` fsynced): an interrupted, failed
    or corrupt download leaves nothing behind, and an existing cache is reused without any
    network access.

    Parameters
    ----------
    directory : str or Path, optional
        The cache folder; default :func:`default_data_dir`.
    url : str, optional
        Where to fetch the archive: default ``$CONVNET_CIFAR10_URL``, else
        :data:`CIFAR10_URL`. Any URL ``urllib`` opens (``file://`` too).
    md5 : str, optional
        The archive's expected MD5; default :data:`CIFAR10_MD5`, the published one.
    progress : bool
        Show a progress bar (on a terminal or in a notebook, when tqdm is installed).

    Returns
    -------
    Path
        The ``cifar-10-batches-py`` folder.

    Raises
    ------
    DownloadError
        When the download fails, the checksum differs or the archive is not CIFAR-10's;
        the folders it created for the cache are removed again.
    ValueError
        When ``$CONVNET_CIFAR10_URL`` is set to something that is not a URL.
    """
    root = Path(directory).expanduser() if directory is not None else default_data_dir()
    target = root / _CIFAR10_SUBDIRECTORY
    if cifar10_is_cached(root):
        return target
    url = url or _environment.cifar10_url() or CIFAR10_URL
    created = _missing_folders(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create the data folder {root}: {error}") from error
    workspace = Path(tempfile.mkdtemp(prefix=".cifar-10-download.", dir=root))
    succeeded = False
    try:
        archive_path = workspace / "cifar-10-python.tar.gz"
        try:
            actual = _fetch(url, archive_path, progress)
        except (OSError, ValueError, urllib.error.URLError) as error:
            raise DownloadError(f"downloading CIFAR-10 from {url} failed: {error}") from error
        md5 = md5 or CIFAR10_MD5
        if actual != md5:
            raise DownloadError(
                f"the file downloaded from {url} has MD5 {actual}, not CIFAR-10's {md5}: "
                "it is corrupt or not the CIFAR-10 python archive (nothing was kept)"
            )
        extracted = workspace / "extracted"
        try:
            with tarfile.open(archive_path, "r:gz") as archive:
                _extract(archive, extracted)
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DownloadError(
                f"cannot extract the CIFAR-10 archive from {url}: {error}"
            ) from error
        if not cifar10_is_cached(extracted):
            raise DownloadError(f"the archive from {url} lacks some CIFAR-10 batches")
        try:
            os.rename(extracted / _CIFAR10_SUBDIRECTORY, target)
        except OSError as error:
            if not cifar10_is_cached(root):  # not another process that finished first
                raise DownloadError(
                    f"cannot put the CIFAR-10 batches at {target}: {error}"
                ) from error
        fsync_directory(root)
        succeeded = True
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
        if not succeeded:
            for folder in created:  # innermost first; only those still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return target
