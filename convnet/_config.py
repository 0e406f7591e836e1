"""Describe this installation: version, backend, threads and numpy's BLAS."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from convnet import _backend
from convnet._parallel import get_num_threads
from convnet._version import __version__
from convnet.distributed import launch_info


def _blas_description() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (KeyError, TypeError, ValueError):
        return "unknown"
    return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()


def config_info() -> dict[str, Any]:
    """Return the facts :func:`show_config` prints, as a dict."""
    threads = get_num_threads()
    return {
        "convnet": __version__,
        "backend": _backend.BACKEND,
        "naive_reason": _backend.naive_reason,
        "threads": threads,
        "mpi": launch_info(),
        "numpy": np.__version__,
        "blas": _blas_description(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def show_config() -> None:
    """Print the convnet version, the backend, the worker threads and numpy's BLAS (and
    under an MPI launcher, this process's rank)."""
    info = config_info()
    print(f"convnet {info['convnet']}")
    backend = info["backend"]
    if info["naive_reason"]:
        backend += f" ({info['naive_reason']})"
    print(f"  backend:  {backend}")
    not_built = info["naive_reason"].startswith("the compiled")
    if not_built and not _backend.unbuilt_checkout:  # (a checkout's reason names its fix)
        print(f"  WARNING:  every fast layer runs the slow naive layers; {_backend.BUILD_HINT}")
    threads = f"{info['threads']} worker threads, single-threaded BLAS inside each"
    if info["backend"] == "naive":
        threads += " (unused by the naive backend)"
    print(f"  threads:  {threads}")
    if info["mpi"] is not None:
        mpi = info["mpi"]
        print(
            f"  mpi:      rank {mpi['rank']} of {mpi['size']} ({mpi['local_size']} ranks on "
            "this machine share its cores)"
        )
    print(f"  numpy:    {info['numpy']} (BLAS: {info['blas']})")
    print(f"  python:   {info['python']} on {info['machine']}")
