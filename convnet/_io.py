"""One atomic writer for every file convnet writes.

A file is written to a temporary name in its own directory, flushed and fsynced, given the
permissions a new file gets from the user's umask, and renamed over the target; the
directory is then fsynced so the rename itself survives a crash. A reader therefore sees
the old file or the whole new one, never a half-written one, and a failed write leaves no
temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    """The process's umask: from /proc on Linux, else by setting it and putting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename in it) to disk; a no-op where unsupported."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _about_target(error: BaseException, temporary: str | None, target: Path) -> OSError | None:
    """A copy of the ``OSError`` naming ``target`` where it named the temporary file (a
    user never heard of ``.labels.npy.x1y2.tmp``), or named no file, or the temporary file
    could not be made (``temporary`` None); None for other errors, to raise as they are."""
    if not isinstance(error, OSError) or error.errno is None:
        return None
    if temporary is not None and error.filename not in (None, temporary):
        return None
    return OSError(error.errno, error.strerror, str(target))  # the errno's own subclass


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary handle whose content replaces ``path`` atomically when the block ends.

    Parameters
    ----------
    path : str or path-like
        The file to write; its directory must exist. An existing file is replaced whole,
        or, if the block raises, left as it was (and the temporary file is removed).

    Yields
    ------
    BinaryIO
        A handle on the temporary file.
    """
    target = Path(path)
    temporary = None
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except BaseException as error:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        renamed = _about_target(error, temporary, target)
        if renamed is None:
            raise
        raise renamed from error
    fsync_directory(target.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`); return the path."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_open`)."""
    return write_bytes(path, text.encode("utf-8"))


def stderr_is_interactive() -> bool:
    """Whether a progress bar would be seen: stderr is a terminal, or this is a notebook."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
