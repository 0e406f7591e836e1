"""How a fast convolution divides its work: the scratch-memory budget, each worker's
chunk of it, and whether a call is large enough to hand to the worker threads.

One worker per core (:mod:`convnet._parallel`) takes a contiguous group of images and
works through it in cache-sized chunks whose workspace stays under a byte budget
(:func:`set_workspace_limit`), so memory does not grow with the batch beyond the output
and gradients themselves.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from convnet._parallel import get_num_threads, work_groups
from convnet._validation import ConvGeometry

DEFAULT_WORKSPACE_BYTES = 64 * 2**20
CHUNK_TARGET_BYTES = 2**20
SMALL_CONV_MULTIPLY_ADDS = 2**22
_workspace_bytes = DEFAULT_WORKSPACE_BYTES


def set_workspace_limit(nbytes: int) -> int:
    """Bound the chunks a convolution call works in; return the previous bound.

    Parameters
    ----------
    nbytes : int
        Bytes for the column matrices of all worker threads together. Each worker
        processes chunks of as many images as fit in its share (and in the cache-sized
        ``CHUNK_TARGET_BYTES``); one image always fits, whatever its size. Beyond the
        chunks a call allocates only its outputs, its gradients and two (F, C*HH*WW)
        dW arrays per worker.
    """
    global _workspace_bytes
    if isinstance(nbytes, (bool, np.bool_)) or not isinstance(nbytes, numbers.Integral):
        raise TypeError(f"workspace limit must be an int of bytes, got {nbytes!r}")
    if nbytes < 1:
        raise ValueError(f"workspace limit must be at least 1 byte, got {nbytes}")
    previous, _workspace_bytes = _workspace_bytes, int(nbytes)
    return previous


def get_workspace_limit() -> int:
    """The current scratch-memory bound of one convolution call, in bytes."""
    return _workspace_bytes


def chunk_bytes(target: int = CHUNK_TARGET_BYTES) -> int:
    """One worker's share of the workspace, at most ``target``."""
    return min(target, _workspace_bytes // get_num_threads())


def images_per_chunk(bytes_per_image: int) -> int:
    """Images of ``bytes_per_image`` scratch each in one worker's chunk (at least one)."""
    return max(1, chunk_bytes() // max(1, bytes_per_image))


def conv_workers(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> int | None:
    """``max_groups`` of a convolution: one worker for fewer than
    ``SMALL_CONV_MULTIPLY_ADDS`` multiply-adds, too few to repay handing out work."""
    work = x_shape[0] * w_shape[0] * math.prod(w_shape[1:]) * geo.out_h * geo.out_w
    return work_groups(work, SMALL_CONV_MULTIPLY_ADDS)
