"""Forged .npz archives for the tests of untrusted files, and the memory a load takes."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def peak_bytes(function: Callable[[], Any]) -> int:
    """The most memory ``function()`` held at once (numpy's arrays included)."""
    tracemalloc.start()
    try:
        function()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def add_deflated_zeros(path: Path, mebibytes: int = 256) -> None:
    """Append an entry ``zeros.npy`` of that many MiB of zeros, deflated to a few KiB."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.npy", "w", force_zip64=True) as entry:
            chunk = bytes(2**20)
            for _ in range(mebibytes):
                entry.write(chunk)


def claim_huge_shape(path: Path, entry: str, itemsize: int = 8) -> None:
    """Replace entry ``entry`` by a .npy header claiming shape (10**12,) and one item."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    dtype = np.dtype(f"f{itemsize}")
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, dtype=dtype))
    header["shape"] = (10**12,)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    entries[f"{entry}.npy"] = buffer.getvalue() + bytes(itemsize)
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
