"""How the ``convnet`` command fails: its exit statuses and the one-line user error."""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a Unix tool killed by a closed pipe


class UsageError(Exception):
    """A bad command line, option value, environment variable or input file, a folder that
    cannot be used: one line on stderr and exit status 2."""


class RunFailed(Exception):
    """Training could not go on (it diverged, or the disk filled): one line on stderr and
    exit status 1; the run folder keeps its last checkpoint."""


# What a missing or damaged file, a bad option value or data that do not fit raise: the
# library's documented errors. Anything else (a TypeError, a KeyError, ...) is a bug and
# keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError)
# numpy's readers of .npy / .npz files also raise these on damaged or truncated files
NPY_READ_ERRORS = (*USER_ERRORS, EOFError, zipfile.BadZipFile)


@contextlib.contextmanager
def user_errors(what: str = "", kinds: tuple[type[Exception], ...] = USER_ERRORS) -> Iterator[None]:
    """Turn the errors of ``kinds`` raised in this block (a user's mistake: a bad file,
    option or dataset) into a one-line UsageError; any other exception propagates."""
    try:
        yield
    except kinds as error:
        raise UsageError(f"{what}{error}") from error


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
