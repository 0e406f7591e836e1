"""Helpers shared by the convolution tests (test_conv.py, test_conv_variants.py,
test_winograd.py, test_robustness.py and test_channels_last_conv.py): the workspace and
thread setting of an example, the comparison of a fast layer against its naive reference,
and the scratch memory of a pass."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Sequence
from typing import Any

import numpy as np
from layer_pairs import CONV, Layer
from tolerances import assert_matches

from convnet import fast_layers
from convnet._parallel import set_num_threads
from convnet.fast_layers import conv_backward_fast, conv_forward_fast


def as_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def use_workspace_and_threads(workspace: int | None, threads: int) -> None:
    """Set the fast layers' workspace limit (None: the default) and worker count."""
    fast_layers.set_workspace_limit(workspace or fast_layers.DEFAULT_WORKSPACE_BYTES)
    set_num_threads(threads)


def check_fast_matches_naive(
    naive: Layer,
    fast: Layer,
    arrays: Sequence[np.ndarray],
    param: dict,
    dout: np.ndarray | None = None,
) -> tuple[Any, tuple[np.ndarray, ...]]:
    """The fast layer's output and gradients match the naive layer's, all in the arrays'
    dtype, for ``dout`` (random when None). Returns the fast cache and the naive gradients."""
    dtype = arrays[0].dtype
    out_naive, cache_naive = naive[0](*arrays, param)
    out_fast, cache_fast = fast[0](*arrays, param)
    assert out_naive.dtype == dtype
    assert_matches(out_fast, out_naive)
    if dout is None:
        dout = np.random.default_rng(2).standard_normal(out_naive.shape).astype(dtype)
    grads_naive = tuple(naive[1](dout, cache_naive))
    for grad_fast, grad_naive in zip(fast[1](dout, cache_fast), grads_naive, strict=True):
        assert grad_naive.dtype == dtype
        assert_matches(grad_fast, grad_naive)
    return cache_fast, grads_naive


def check_conv_matches_naive(x, w, b, dout: np.ndarray, param: dict) -> Any:
    """The fast convolution's output and gradients (also with ``compute_dx=False``) match
    the naive layer's for ``dout``. Returns the fast cache."""
    cache, grads_naive = check_fast_matches_naive(
        CONV["naive"], CONV["fast"], (x, w, b), param, dout
    )
    dx_none, dw, db = conv_backward_fast(dout, cache, compute_dx=False)
    assert dx_none is None
    assert_matches(dw, grads_naive[1])
    assert_matches(db, grads_naive[2])
    return cache


def extra_peak_mib(x: np.ndarray, w: np.ndarray, conv_param: dict) -> float:
    """Peak MiB of a fast forward+backward beyond its output and gradients (the smaller of
    two passes: tracemalloc also counts what other threads allocate meanwhile)."""
    b = np.zeros(w.shape[0], dtype=x.dtype)
    extra = []
    for _ in range(2):
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        out, cache = conv_forward_fast(x, w, b, conv_param)
        grads = conv_backward_fast(np.ones_like(out), cache)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        needed = 2 * out.nbytes + sum(grad.nbytes for grad in grads if grad is not None)
        extra.append((peak - base - needed) / 2**20)
        del out, cache, grads
    return min(extra)
