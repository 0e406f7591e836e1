"""Describe this installation: version, backend, OpenMP and numpy's BLAS."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from convnet import _backend
from convnet._version import __version__


def _blas_description() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (KeyError, TypeError, ValueError):
        return "unknown"
    return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()


def config_info() -> dict[str, Any]:
    """Return the facts :func:`show_config` prints, as a dict."""
    threads = _backend.openmp_threads()
    return {
        "convnet": __version__,
        "backend": _backend.BACKEND,
        "naive_reason": _backend.naive_reason,
        "openmp": "on" if threads else "off",
        "openmp_threads": threads,
        "numpy": np.__version__,
        "blas": _blas_description(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def show_config() -> None:
    """Print the convnet version, the backend, OpenMP (on/off, threads) and numpy's BLAS."""
    info = config_info()
    print(f"convnet {info['convnet']}")
    backend = info["backend"]
    if info["naive_reason"]:
        backend += f" ({info['naive_reason']})"
    print(f"  backend:  {backend}")
    openmp = info["openmp"]
    if info["openmp_threads"]:
        openmp += f", {info['openmp_threads']} threads"
    print(f"  OpenMP:   {openmp}")
    print(f"  numpy:    {info['numpy']} (BLAS: {info['blas']})")
    print(f"  python:   {info['python']} on {info['machine']}")
