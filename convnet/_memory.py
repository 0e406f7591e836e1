"""Keep freed memory for reuse, so large arrays do not cost a page fault per 4 KiB page.

Every layer returns new arrays, several MiB each in a conv net. By default glibc's malloc
maps fresh pages for each large array and unmaps them when it is freed, so the next
array's first touch faults on every page again; on the virtual machines we measure on a
training step of ThreeLayerConvNet took 26-32 ms with about 4000 faults and 17 ms with none.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 2**30


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve arrays up to 32 MiB from its heap and keep freed memory.

    Process-wide: freed memory stays with the process (up to 1 GiB above its peak in use)
    and is reused by the next arrays instead of being returned to the system. The
    ``convnet`` command and the benchmarks call it; a library never changes malloc for
    the whole process on its own, so call it yourself before training with
    :class:`convnet.solver.Solver` or a hand-written loop.

    Returns
    -------
    bool
        True if the setting took effect; False where malloc is not glibc's (macOS,
        Windows, musl), which leaves everything as it was.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
