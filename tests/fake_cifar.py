"""A small archive in the format of CIFAR-10's python version, for tests without network."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

NAMES = (*(f"data_batch_{index}" for index in range(1, 6)), "test_batch")


def _batch(rng: np.random.Generator, images: int, label: int | None) -> bytes:
    """One pickled batch: random pixels; every label ``label``, or random labels."""
    labels = rng.integers(0, 10, images) if label is None else [label] * images
    batch = {
        b"data": rng.integers(0, 256, (images, 3072), dtype=np.uint8),
        b"labels": [int(value) for value in labels],
    }
    return pickle.dumps(batch, protocol=2)


def write_batches(folder: Path, images_per_batch: int = 8, label: int | None = None) -> Path:
    """Write the extracted batches into ``folder/cifar-10-batches-py``; return that folder."""
    rng = np.random.default_rng(0)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in NAMES:
        (batches / name).write_bytes(_batch(rng, images_per_batch, label))
    return batches


def write_archive(path: Path, images_per_batch: int = 8, seed: int = 0) -> str:
    """Write ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` as a .tar.gz; return its MD5."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as archive:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        archive.addfile(folder)
        for name in NAMES:
            payload = _batch(rng, images_per_batch, None)
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(payload)
            member.mode = 0o644
            archive.addfile(member, io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest()
