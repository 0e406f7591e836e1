"""Reading convnet's ``.npz`` archives at a cost bounded by the file's own size.

``numpy.load`` trusts an archive: an entry whose ``.npy`` header claims a huge shape is
allocated before its data is found missing, and a deflated entry of gigabytes of zeros is
inflated whole. :class:`NpzReader` checks the zip directory when it opens a file (every
entry a ``.npy``, named once, the entries' uncompressed sizes together no larger than the
file: convnet writes uncompressed archives) and each entry's ``.npy`` header before reading
its data (a plain dtype, and a shape whose bytes are exactly what the entry holds). So the
caller can refuse unexpected entries by name, and nothing read ever exceeds the file's
size. Every way a file can be damaged or forged is a ``ValueError`` naming the file.
Nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import math
import os
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

# What the zip and .npy readers raise on damaged input (NotImplementedError: an unknown
# compression method; OverflowError, MemoryError: absurd sizes in a damaged directory;
# TokenError, SyntaxError: a .npy header that is not a Python literal).
_DAMAGE = (
    OSError,
    tokenize.TokenError,
    SyntaxError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
    OverflowError,
    MemoryError,
)
PLAIN_KINDS = "biufU"  # booleans, integers, floats and text; never objects or records
_SUFFIX = ".npy"
_ENCRYPTED = 0x1  # the zip format's general-purpose flag bit 0


class NpzReader:
    """An open ``.npz`` archive whose entries are read one by one, each checked first.

    Parameters
    ----------
    path : str or path-like
        The archive.
    what : str
        What the file should be, for messages (``"convnet checkpoint"``).

    Attributes
    ----------
    names : frozenset of str
        The entries (without ``.npy``).

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file.
    ValueError
        When it is not a zip archive of ``.npy`` entries, or its entries would inflate to
        more than its own size.
    """

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.what = what
        if not self.path.is_file():
            raise FileNotFoundError(f"no {what} at {self.path}")
        try:
            size = self.path.stat().st_size
            self._zip = zipfile.ZipFile(self.path)
        except _DAMAGE as error:
            raise self._damaged(error) from error
        try:
            self._entries = self._check_directory(size)
        except BaseException:
            self._zip.close()
            raise
        self.names = frozenset(self._entries)

    def _damaged(self, detail: object) -> ValueError:
        return ValueError(f"{self.path} is not a readable {self.what} ({detail})")

    def _check_directory(self, size: int) -> dict[str, zipfile.ZipInfo]:
        entries: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = info.filename
            if not name.endswith(_SUFFIX) or name[: -len(_SUFFIX)] in entries:
                raise self._damaged(f"unexpected entry {name!r}")
            if info.flag_bits & _ENCRYPTED:
                raise self._damaged(f"entry {name!r} is encrypted")
            entries[name[: -len(_SUFFIX)]] = info
        inflated = sum(info.file_size for info in entries.values())
        if inflated > size:
            raise self._damaged(
                f"its entries would inflate to {inflated} bytes, more than the file's {size}: "
                "convnet writes uncompressed archives"
            )
        return entries

    def header(self, name: str, kinds: str = PLAIN_KINDS) -> tuple[tuple[int, ...], np.dtype]:
        """The shape and dtype entry ``name`` announces, checked against ``kinds`` and the
        entry's size; no data is read."""
        with self._open(name) as (info, handle):
            shape, _, dtype = _read_header(info, handle, kinds)
        return shape, dtype

    def read(self, name: str, kinds: str = PLAIN_KINDS) -> np.ndarray:
        """The array of entry ``name``, its header checked before its data is read.

        Parameters
        ----------
        name : str
            An entry of :attr:`names`.
        kinds : str
            The dtype kinds accepted (numpy's one-letter codes), e.g. ``"f"`` for floats.

        Returns
        -------
        ndarray
            A new, writable array in native byte order.
        """
        with self._open(name) as (info, handle):
            return _read_data(handle, *_read_header(info, handle, kinds))

    @contextlib.contextmanager
    def _open(self, name: str) -> Iterator[tuple[zipfile.ZipInfo, IO[bytes]]]:
        """Entry ``name`` opened; what damage raises inside becomes a ValueError."""
        info = self._entries.get(name)
        if info is None:
            raise self._damaged(f"it has no entry {name!r}")
        try:
            with self._zip.open(info) as handle:
                yield info, handle
        except _DAMAGE as error:
            raise ValueError(
                f"{self.path} is a corrupt {self.what} (entry {name!r}: {error})"
            ) from error

    def close(self) -> None:
        """Close the archive."""
        self._zip.close()

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _read_header(
    info: zipfile.ZipInfo, handle: IO[bytes], kinds: str
) -> tuple[tuple[int, ...], bool, np.dtype]:
    """A ``.npy`` entry's shape, order and dtype, checked against ``kinds`` and against
    the entry's size (the data must be exactly what the header announces)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f".npy format version {version}")
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in kinds:
        raise ValueError(f"it holds {dtype}, not {_kind_names(kinds)}")
    nbytes = math.prod(shape) * dtype.itemsize
    header = handle.tell()
    if header + nbytes != info.file_size:
        raise ValueError(
            f"it claims shape {shape} of {dtype} ({nbytes} bytes) but holds "
            f"{info.file_size - header}"
        )
    return shape, fortran_order, dtype


def _read_data(
    handle: IO[bytes], shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype
) -> np.ndarray:
    """Exactly the bytes the header announced, as a new array in native byte order."""
    nbytes = math.prod(shape) * dtype.itemsize
    data = bytearray(nbytes)
    view = memoryview(data)
    filled = 0
    while filled < nbytes:
        count = handle.readinto(view[filled:])
        if not count:
            raise ValueError("it is truncated")
        filled += count
    if handle.read(1):  # also makes zipfile check the entry's CRC
        raise ValueError("it holds more than its header says")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return array.astype(dtype.newbyteorder("="), copy=False)


def _kind_names(kinds: str) -> str:
    names = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "U": "text"}
    return " or ".join(dict.fromkeys(names[kind] for kind in kinds))
