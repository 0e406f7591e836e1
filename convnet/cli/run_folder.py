"""Run folders of ``convnet train``: new ones, the lock that keeps one process in each, and
``runs/latest``.

A new run gets ``runs/<date>_<time>/`` (``_2``, ``_3``, ... for runs started in the same
second). While a process trains or finishes a run it holds the folder's lock, an exclusive
``flock`` on ``.convnet.lock`` inside it: a second process is refused, naming the first.
The kernel drops the lock when its process ends, however it ends (``kill -9`` included),
so a stale lock file never blocks a later run; the holder deletes the file when it lets go.
``runs/latest`` points at the newest run that produced a model (a relative symlink, or
where symlinks cannot be made a small file holding the folder's name).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from convnet._io import write_text
from convnet.checkpoint import CHECKPOINT_NAME
from convnet.runs import LATEST, MODEL_FILE, OPTIONS_FILE, PREPROCESSING_FILE, SUMMARY_FILE

LOCK_FILE = ".convnet.lock"
# The files whose presence makes a folder another run's: convnet writes them all.
RUN_FILES = (OPTIONS_FILE, PREPROCESSING_FILE, CHECKPOINT_NAME, MODEL_FILE, SUMMARY_FILE)
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK)  # (EDEADLK: Windows)


class FolderInUse(OSError):
    """Another process holds the run folder's lock."""


def run_files(folder: Path) -> list[str]:
    """The files of :data:`RUN_FILES` that ``folder`` holds."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def _try_lock(descriptor: int) -> None:
    """Take the exclusive lock of an open file without waiting (OSError if held)."""
    try:
        import fcntl
    except ImportError:  # Windows: a lock on the first byte
        import msvcrt

        msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip())
        return f"process {pid}"
    return "another process"


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the block.

    Raises
    ------
    FolderInUse
        When another process holds it.
    OSError
        When the lock file cannot be made (a read-only folder, say). A filesystem without
        locks gets a warning on stderr and no lock.
    """
    path = folder / LOCK_FILE
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _try_lock(descriptor)
        except OSError as error:
            os.close(descriptor)
            if error.errno in _BUSY:
                raise FolderInUse(
                    f"{_holder(path)} is using the run folder {folder} (it holds {path}): "
                    "wait for it to finish, or stop it"
                ) from None
            print(f"convnet: warning: cannot lock {folder} ({error})", file=sys.stderr)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            return
        try:
            if os.fstat(descriptor).st_ino == os.stat(path).st_ino:
                break  # not a file the previous holder deleted as we opened it
        except FileNotFoundError:
            pass
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before letting go, so a waiting opener sees it gone
        os.close(descriptor)


def timestamp(seconds: float | None = None) -> str:
    """``YYYY-MM-DD_HH-MM-SS`` of ``seconds`` (default now), local time."""
    moment = datetime.datetime.fromtimestamp(time.time() if seconds is None else seconds)
    return moment.strftime("%Y-%m-%d_%H-%M-%S")


def unique_folder(parent: Path, stem: str) -> Path:
    """Create and return ``parent/stem``, or ``parent/stem_2``, ... if that exists."""
    for attempt in itertools.count(1):
        folder = parent / (stem if attempt == 1 else f"{stem}_{attempt}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        return folder
    raise AssertionError("unreachable")


def newest_checkpoint(runs: Path) -> Path | None:
    """The checkpoint written last among the run folders directly in ``runs``."""
    found = []
    with contextlib.suppress(OSError):
        for folder in runs.iterdir():
            checkpoint = folder / CHECKPOINT_NAME
            if folder.name != LATEST and checkpoint.is_file():
                found.append((checkpoint.stat().st_mtime_ns, folder.name, checkpoint))
    return max(found)[2] if found else None


def point_latest(runs: Path, run: Path) -> None:
    """Make ``runs/latest`` point at ``run``: a relative symlink swapped in atomically, or,
    where symlinks cannot be made, a file holding the run folder's name."""
    link = runs / LATEST
    if link.is_dir() and not link.is_symlink():
        # a run folder written by an older convnet, whose default --out was runs/latest
        moved = unique_folder(runs, timestamp(link.stat().st_mtime))
        moved.rmdir()
        link.rename(moved)
        print(f"convnet: moved the run folder {link} to {moved}", file=sys.stderr)
    temporary = runs / f".{LATEST}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    try:
        os.symlink(run.name, temporary, target_is_directory=True)
    except (OSError, NotImplementedError):
        if link.is_symlink():
            link.unlink()  # the pointer file replaces the link, not the folder it names
        write_text(link, run.name + "\n")
        return
    os.replace(temporary, link)
