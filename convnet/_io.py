"""One atomic writer for every file convnet writes.

A file is written to a temporary name in its own directory, flushed and fsynced, given the
permissions a new file gets from the user's umask, and renamed over the target; the
directory is then fsynced so the rename itself survives a crash. A reader therefore sees
the old file or the whole new one, never a half-written one, and a failed write leaves no
temporary file behind.

A symlink is written through: its target is replaced and the link kept. A path that names
a stream rather than a file (a device such as ``/dev/null``, a FIFO, a socket, or one of
this process's descriptors such as ``/dev/stdout``) cannot be replaced: it is written
directly.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
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


# Paths that name one of this process's open descriptors: Linux's /proc/self/fd/N (or
# /proc/<this pid>/fd/N), /dev/fd/N, and /dev/stdout and its family (symlinks into /proc
# on Linux, devices elsewhere).
_DESCRIPTOR_PATH = re.compile(r"^/(?:proc/(self|\d+)/fd|dev/fd)/(\d+)$")
_STANDARD_STREAMS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_MAX_SYMLINKS = 40  # as Linux's path resolution


def _own_descriptor(path: str) -> int | None:
    """The descriptor of this process that ``path`` names, else None."""
    if path in _STANDARD_STREAMS:
        return _STANDARD_STREAMS[path]
    match = _DESCRIPTOR_PATH.match(path)
    if match is None or match.group(1) not in (None, "self", str(os.getpid())):
        return None
    return int(match.group(2))


def _resolve(path: Path) -> tuple[Path, int | None]:
    """Follow the symlinks that ``path`` names: its final target, and the descriptor of
    this process it names, if any (the chain is read link by link, because resolving
    ``/dev/stdout`` whole would give the file stdout is redirected to, not the stream)."""
    current = os.path.abspath(path)
    for _ in range(_MAX_SYMLINKS):
        current = os.path.join(
            os.path.realpath(os.path.dirname(current)), os.path.basename(current)
        )
        descriptor = _own_descriptor(current)
        if descriptor is not None:
            return Path(current), descriptor
        if not os.path.islink(current):
            break
        current = os.path.join(os.path.dirname(current), os.readlink(current))
    return Path(current), None


def _is_stream(path: Path) -> bool:
    """Whether ``path`` exists and is not a regular file or a folder (a device, a FIFO, a
    socket): something to write to, not to replace."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextlib.contextmanager
def _stream_open(path: Path, descriptor: int | None) -> Iterator[BinaryIO]:
    """A handle writing straight to a stream: a duplicate of this process's
    ``descriptor`` (after flushing Python's own buffers of stdout and stderr, so the
    output stays in order), else ``path`` opened for writing."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    try:
        if descriptor is not None:
            opened = os.dup(descriptor)
        else:
            opened = os.open(path, os.O_WRONLY)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from error
    with os.fdopen(opened, "wb") as handle:
        yield handle


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary handle whose content replaces ``path`` atomically when the block ends.

    Parameters
    ----------
    path : str or path-like
        The file to write; its directory must exist. An existing file is replaced whole,
        or, if the block raises, left as it was (and the temporary file is removed). A
        symlink's target is replaced (the link stays); a stream (``/dev/null``, a FIFO,
        ``/dev/stdout``) is written directly, without atomicity.

    Yields
    ------
    BinaryIO
        A handle on the temporary file (or on the stream).
    """
    target, descriptor = _resolve(Path(path))
    if descriptor is not None or _is_stream(target):
        with _stream_open(target, descriptor) as handle:
            yield handle
        return
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
