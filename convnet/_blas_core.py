"""Which GEMM kernels numpy's OpenBLAS runs, and when the ``convnet`` command picks better ones.

OpenBLAS chooses its kernels (its "core type") once, when the library loads, from the CPU
it detects; ``OPENBLAS_CORETYPE`` set before that overrides the choice. On a CPU with
AVX-512 an OpenBLAS that does not recognize the CPU (a newer AMD or Intel model than it
knows) or an ``OPENBLAS_CORETYPE=Haswell`` left in the environment runs the AVX2 kernels,
and single-precision GEMMs run at about 60% of the speed of the AVX-512 "SkylakeX" ones.

The processes convnet owns (the ``convnet`` command, ``python -m convnet`` and the scripts
under ``benchmarks/``) call :func:`use_fast_core` first. When numpy's OpenBLAS runs an AVX2
core on a CPU with all four AVX-512 extensions SkylakeX needs, and ``OPENBLAS_CORETYPE`` is
not in the environment at all, it re-executes the process with
``OPENBLAS_CORETYPE=SkylakeX``: OpenBLAS reads the variable only while loading, which has
happened by then. Any value the user set wins, the empty string too (an empty or unknown
value makes OpenBLAS detect the CPU itself). Importing convnet never changes the
environment; :func:`blas_core_advice` tells a library user what to set.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

CORETYPE_VARIABLE = "OPENBLAS_CORETYPE"
FAST_CORE = "SkylakeX"
# What OpenBLAS's SkylakeX kernels execute: AVX-512 foundation, DQ, BW and VL.
AVX512_FLAGS = ("avx512f", "avx512dq", "avx512bw", "avx512vl")
# OpenBLAS core types that run AVX2 kernels where SkylakeX could run. Only these are
# replaced: a core type not listed (SkylakeX, Cooperlake, SapphireRapids, a newer one) is
# never second-guessed.
AVX2_CORES = frozenset({"haswell", "zen"})


def _cpuinfo_value(key: str, cpuinfo: Path) -> str | None:
    """The value of the first ``key`` line of ``cpuinfo`` (Linux), or None where unknown."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags as the Linux kernel reports them, or None where unknown.

    The kernel lists a flag only when the CPU has it and the kernel enabled it (saving
    the AVX-512 registers on a context switch), so a listed flag is safe to use.
    """
    flags = _cpuinfo_value("flags", cpuinfo)
    return None if flags is None else frozenset(flags.split())


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux; else the platform's) and the CPUs this process may
    use, as benchmarks print it: ``"AMD EPYC, 2 CPUs"``."""
    name = _cpuinfo_value("model name", cpuinfo) or platform.processor() or platform.machine()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return f"{name}, {cpus} CPUs"


def has_avx512(flags: Iterable[str] | None) -> bool | None:
    """True if ``flags`` hold every one of :data:`AVX512_FLAGS`; None if flags are unknown."""
    if flags is None:
        return None
    return set(AVX512_FLAGS) <= set(flags)


def openblas_cores() -> list[str]:
    """The core type of every OpenBLAS loaded in this process (threadpoolctl's
    ``architecture``); empty if numpy uses another BLAS or none is loaded yet."""
    from threadpoolctl import threadpool_info

    return [
        str(info.get("architecture"))
        for info in threadpool_info()
        if info.get("internal_api") == "openblas" and info.get("architecture")
    ]


def runs_avx2_core(flags: Iterable[str] | None, cores: Iterable[str]) -> bool:
    """True if an OpenBLAS runs an AVX2 core on a CPU that has AVX-512."""
    return bool(has_avx512(flags)) and any(core.lower() in AVX2_CORES for core in cores)


def core_to_set(
    flags: Iterable[str] | None, environ: Mapping[str, str], cores: Iterable[str]
) -> str | None:
    """The ``OPENBLAS_CORETYPE`` a process of convnet's own should run with, or None.

    Parameters
    ----------
    flags : iterable of str or None
        The CPU's feature flags (:func:`cpu_flags`); None where unknown, which never
        selects anything.
    environ : mapping
        The environment. ``OPENBLAS_CORETYPE`` present with any value, even empty, is
        the user's choice and is kept.
    cores : iterable of str
        The core types OpenBLAS chose (:func:`openblas_cores`).

    Returns
    -------
    str or None
        ``"SkylakeX"`` when OpenBLAS runs an AVX2 core on a CPU with all of
        :data:`AVX512_FLAGS` and the user set nothing; otherwise None.
    """
    if CORETYPE_VARIABLE in environ:
        return None
    return FAST_CORE if runs_avx2_core(flags, cores) else None


def blas_core_advice(
    flags: Iterable[str] | None, environ: Mapping[str, str], cores: Iterable[str]
) -> str | None:
    """One line telling a library user how to get the faster GEMM kernels, or None."""
    if not runs_avx2_core(flags, cores):
        return None
    chosen = environ.get(CORETYPE_VARIABLE)
    cause = (
        "OpenBLAS runs its AVX2 kernels on this AVX-512 CPU"
        if chosen is None
        else f"{CORETYPE_VARIABLE}={chosen} makes OpenBLAS run its AVX2 kernels on this AVX-512 CPU"
    )
    return (
        f"{cause}: float32 GEMMs run ~1.6x faster with {CORETYPE_VARIABLE}={FAST_CORE} set "
        "before numpy is imported"
    )


def use_fast_core() -> None:
    """Re-execute this process with ``OPENBLAS_CORETYPE=SkylakeX`` when :func:`core_to_set`
    says so; otherwise return at once.

    For the entry points of processes convnet owns only: it runs before they do anything
    else (numpy is loaded, nothing has been read or printed). Linux only; a frozen
    executable, a script read from stdin or a failed ``exec`` leave the process as it is.
    """
    if not sys.platform.startswith("linux") or getattr(sys, "frozen", False):
        return
    if sys.argv[:1] in ([""], ["-"]) or not getattr(sys, "orig_argv", None):
        return
    core = core_to_set(cpu_flags(), os.environ, openblas_cores())
    if core is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, {**os.environ, CORETYPE_VARIABLE: core})
    except OSError:
        return
