"""Describe this installation: version, backend, threads and numpy's BLAS."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from convnet import _backend
from convnet._blas_core import (
    CORETYPE_VARIABLE,
    blas_core_advice,
    cpu_flags,
    has_avx512,
    openblas_cores,
)
from convnet._launcher import launch_info
from convnet._parallel import get_num_threads
from convnet._version import __version__


def _blas_description() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (KeyError, TypeError, ValueError):
        return "unknown"
    return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()


def config_info() -> dict[str, Any]:
    """Return the facts :func:`show_config` prints, as a dict."""
    threads = get_num_threads()
    flags = cpu_flags()
    return {
        "convnet": __version__,
        "backend": _backend.BACKEND,
        "naive_reason": _backend.naive_reason,
        "kernels": _backend.loaded_kernels(),
        "threads": threads,
        "mpi": launch_info(),
        "numpy": np.__version__,
        "blas": _blas_description(),
        "blas_cores": openblas_cores(),
        "blas_coretype_variable": os.environ.get(CORETYPE_VARIABLE),
        "avx512": has_avx512(flags),
        "blas_advice": blas_core_advice(flags, os.environ, openblas_cores()),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def show_config() -> None:
    """Print the convnet version, the backend and its compiled kernels, the worker threads
    (and under an MPI launcher, this process's rank), numpy's BLAS, the GEMM kernels
    OpenBLAS runs, whether the CPU has AVX-512, and how to get faster kernels."""
    info = config_info()
    print(f"convnet {info['convnet']}")
    backend = info["backend"]
    if info["naive_reason"]:
        backend += f" ({info['naive_reason']})"
    print(f"  backend:  {backend}")
    not_built = info["naive_reason"].startswith("the compiled")
    if not_built and not _backend.unbuilt_checkout:  # (a checkout's reason names its fix)
        print(f"  WARNING:  every fast layer runs the slow naive layers; {_backend.BUILD_HINT}")
    if info["backend"] == "cython":
        kernels = info["kernels"]
        print(f"  kernels:  {', '.join(name for name, loaded in kernels.items() if loaded)}")
        for name, loaded in kernels.items():
            if not loaded:
                what, instead = _backend.KERNELS[name]
                print(f"  WARNING:  {name} ({what}) did not load: {instead}")
    count = info["threads"]
    threads = f"{count} worker thread{'' if count == 1 else 's'}, single-threaded BLAS inside each"
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
    cores = ", ".join(info["blas_cores"]) or "not OpenBLAS, or unknown"
    variable = info["blas_coretype_variable"]
    if variable is not None:
        cores += f" ({CORETYPE_VARIABLE}={variable!r} is set)"
    print(f"  GEMM:     OpenBLAS core type {cores}")
    avx512 = {True: "yes", False: "no", None: "unknown"}[info["avx512"]]
    print(f"  AVX-512:  {avx512} (avx512f, dq, bw and vl)")
    if info["blas_advice"]:
        print(f"  advice:   {info['blas_advice']}")
    print(f"  python:   {info['python']} on {info['machine']}")
