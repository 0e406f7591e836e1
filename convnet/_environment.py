"""The ``CONVNET_*`` environment variables, read by one rule.

A variable that is unset or empty takes its default. Any other value must be one the
variable accepts (surrounding spaces ignored; names and flags in any case), else reading it
raises ``ValueError("<NAME> must be <accepted values>, got '<value>'")``: no value is
ignored or quietly replaced. Each module reads its variable when it first needs it (so
``import convnet`` never fails on one), and the ``convnet`` command checks them all at
start (:func:`check_all`), reporting a bad one in one line.

This module imports nothing from convnet (``setup.py`` loads it by path, before the
package is built).

========================== ==================================== =========================
variable                   accepted values                      default
========================== ==================================== =========================
CONVNET_BACKEND            auto, cython, naive                  auto
CONVNET_NUM_THREADS        a positive integer                   cores / MPI ranks here
CONVNET_PLACE_WORKERS      a flag: 1, true, yes, on / 0, false, 1
                           no, off
CONVNET_DATA_DIR           a folder                             the user's cache folder
CONVNET_CIFAR10_URL        an http, https, ftp or file URL      the official archive
CONVNET_REQUIRE_EXTENSION  a flag (read by setup.py)            0
CONVNET_CONV_ALGORITHM     auto, im2col, winograd               auto
========================== ==================================== =========================
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from typing import Any

BACKEND = "CONVNET_BACKEND"
NUM_THREADS = "CONVNET_NUM_THREADS"
PLACE_WORKERS = "CONVNET_PLACE_WORKERS"
DATA_DIR = "CONVNET_DATA_DIR"
CIFAR10_URL = "CONVNET_CIFAR10_URL"
REQUIRE_EXTENSION = "CONVNET_REQUIRE_EXTENSION"
CONV_ALGORITHM = "CONVNET_CONV_ALGORITHM"

BACKENDS = ("naive", "cython", "auto")
CONV_ALGORITHMS = ("auto", "im2col", "winograd")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
URL_SCHEMES = ("http", "https", "ftp", "file")


def _raw(name: str) -> str | None:
    """The variable's value with surrounding spaces removed; None when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None


def _refuse(name: str, accepted: str) -> ValueError:
    return ValueError(f"{name} must be {accepted}, got {os.environ.get(name)!r}")


def read_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices`` (compared in lower case), or ``default`` when unset."""
    value = _raw(name)
    if value is None:
        return default
    if value.lower() not in choices:
        quoted = [repr(choice) for choice in choices]
        raise _refuse(name, ", ".join(quoted[:-1]) + f" or {quoted[-1]}")
    return value.lower()


def read_flag(name: str, default: bool) -> bool:
    """A yes/no flag: 1, true, yes, on or 0, false, no, off (any case)."""
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _refuse(name, "a flag: 1, true, yes or on, or 0, false, no or off")


def read_positive_int(name: str) -> int | None:
    """A positive integer (decimal), or None when unset."""
    value = _raw(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise _refuse(name, "a positive integer")
    return int(value)


def read_path(name: str) -> str | None:
    """A path (``~`` expanded), or None when unset."""
    value = _raw(name)
    return None if value is None else os.path.expanduser(value)


def read_url(name: str) -> str | None:
    """A URL with one of ``URL_SCHEMES``, or None when unset."""
    value = _raw(name)
    if value is None:
        return None
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme.lower() not in URL_SCHEMES or not (parsed.netloc or parsed.path):
        raise _refuse(name, "a URL starting with http://, https://, ftp:// or file://")
    return value


def backend() -> str:
    """``CONVNET_BACKEND``: 'auto' (default), 'cython' or 'naive'."""
    return read_choice(BACKEND, BACKENDS, "auto")


def num_threads() -> int | None:
    """``CONVNET_NUM_THREADS``, or None when unset."""
    return read_positive_int(NUM_THREADS)


def place_workers() -> bool:
    """``CONVNET_PLACE_WORKERS`` (default on)."""
    return read_flag(PLACE_WORKERS, True)


def data_dir() -> str | None:
    """``CONVNET_DATA_DIR``, or None when unset."""
    return read_path(DATA_DIR)


def cifar10_url() -> str | None:
    """``CONVNET_CIFAR10_URL``, or None when unset."""
    return read_url(CIFAR10_URL)


def require_extension() -> bool:
    """``CONVNET_REQUIRE_EXTENSION`` (default off), read by ``setup.py``."""
    return read_flag(REQUIRE_EXTENSION, False)


def conv_algorithm() -> str:
    """``CONVNET_CONV_ALGORITHM``: 'auto' (default), 'im2col' or 'winograd'."""
    return read_choice(CONV_ALGORITHM, CONV_ALGORITHMS, "auto")


READERS: dict[str, Callable[[], Any]] = {
    BACKEND: backend,
    NUM_THREADS: num_threads,
    PLACE_WORKERS: place_workers,
    DATA_DIR: data_dir,
    CIFAR10_URL: cifar10_url,
    REQUIRE_EXTENSION: require_extension,
    CONV_ALGORITHM: conv_algorithm,
}


def check_all() -> None:
    """Read every variable of :data:`READERS`: the first bad one raises ``ValueError``."""
    for read in READERS.values():
        read()
