"""Shared fixtures and the hypothesis settings profiles of the test suite.

``HYPOTHESIS_PROFILE=thorough`` runs every property with many more examples.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import pytest
from hypothesis import settings

import convnet
from convnet import _backend, _conv_work, _parallel, _phases, fast_affine, fast_layers, fast_pool

INSTRUCTION_SETS = {0: "portable", 1: "avx2", 2: "avx512"}

settings.register_profile("default", max_examples=150, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test the naive layers of an unbuilt checkout while passing for the real ones."""
    if _backend.unbuilt_checkout:
        pytest.exit(
            f"convnet's compiled kernel is not in use: {_backend.naive_reason}. To fix: "
            f"{_backend.CHECKOUT_FIX}",
            returncode=4,
        )


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator seeded per test, so every test sees the same data on every run."""
    return np.random.default_rng(20240531)


@pytest.fixture
def restore_workspace_limit() -> Iterator[None]:
    """Put back the fast convolution's workspace limit whatever the test set it to."""
    previous = fast_layers.get_workspace_limit()
    yield
    fast_layers.set_workspace_limit(previous)


LAYOUTS = ("fortran", "transposed", "strided", "negative-strides", "read-only")


def _to_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """The values of ``array`` in another memory layout (a view or copy that is not C-order)."""
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "transposed":
        return np.ascontiguousarray(array.T).T
    if layout == "strided":
        return np.repeat(array, 2, axis=-1)[..., ::2]
    if layout == "negative-strides":
        return np.ascontiguousarray(array[..., ::-1])[..., ::-1]
    if layout == "read-only":
        frozen = array.copy()
        frozen.setflags(write=False)
        return frozen
    raise ValueError(f"unknown layout {layout!r}")


@pytest.fixture(params=LAYOUTS)
def to_layout(request: pytest.FixtureRequest) -> Callable[[np.ndarray], np.ndarray]:
    """Convert an array to one non-C-contiguous or read-only layout (one per parameter)."""
    return partial(_to_layout, layout=request.param)


@pytest.fixture
def restore_num_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Put back the fast layers' thread count whatever the test set it to.

    Also sends even the tests' small convolutions, pools and GEMMs to the worker threads, which real
    code skips for problems too small to repay them.
    """
    monkeypatch.setattr(_conv_work, "SMALL_CONV_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(fast_pool, "SMALL_POOL_ELEMENTS", 0)
    monkeypatch.setattr(fast_pool, "SMALL_VECTORIZED_POOL_ELEMENTS", 0)
    monkeypatch.setattr(fast_affine, "SMALL_GEMM", 0)
    monkeypatch.setattr(_phases, "SMALL_PHASE_COPY_ELEMENTS", 0)
    monkeypatch.setattr(_parallel, "POOL_MIN_ELEMENTS", 0)
    previous = _parallel.get_num_threads()
    yield
    _parallel.set_num_threads(previous)


@pytest.fixture(params=sorted(INSTRUCTION_SETS), ids=list(INSTRUCTION_SETS.values()))
def instruction_set(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the channels-last kernels' copy for one instruction set (skipped where the CPU
    lacks it), then put back the one in use."""
    kernel = _backend.channels_last_kernel
    if kernel is None:
        pytest.skip("needs the compiled kernel convnet._channels_last")
    previous = kernel.instruction_set()
    if kernel.set_instruction_set(request.param) != request.param:
        kernel.set_instruction_set(previous)
        pytest.skip(f"this CPU lacks {INSTRUCTION_SETS[request.param]}")
    yield request.param
    kernel.set_instruction_set(previous)


@pytest.fixture
def restore_conv_algorithm() -> Iterator[None]:
    """Put back the process-wide convolution algorithm whatever the test set it to."""
    previous = convnet.get_conv_algorithm()
    yield
    convnet.set_conv_algorithm(previous)
