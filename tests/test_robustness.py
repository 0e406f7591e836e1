"""Inputs and situations found by review: huge strides, foreign and malformed caches, thread-count
changes during calls, fork, and the scratch memory of the backward pass."""

from __future__ import annotations

import os
import select
import signal
import threading
import time

import numpy as np
import pytest
from conv_helpers import extra_peak_mib

import convnet
import convnet.models
from convnet import _backend, _parallel
from convnet.fast_layers import (
    affine_backward_fast,
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
    set_workspace_limit,
)
from convnet.layers import (
    affine_backward,
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    relu_backward,
)

needs_kernel = pytest.mark.skipif(
    _backend.kernel is None, reason="the compiled kernel is not in use"
)


@pytest.mark.parametrize("stride", [(1, 2**31 - 1), (2**31 - 1, 1), (5, 2**20)])
def test_strides_far_beyond_the_input_match_naive(stride):
    x = np.arange(1.0, 13.0).reshape(1, 1, 3, 4)
    w = np.ones((2, 1, 2, 2))
    b = np.array([0.5, -1.0])
    conv_param = {"stride": stride, "pad": (1, 2)}
    out_ref, cache_ref = conv_forward_naive(x, w, b, conv_param)
    out, cache = conv_forward_fast(x, w, b, conv_param)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12)
    dout = np.ones_like(out)
    for grad, ref in zip(
        conv_backward_fast(dout, cache), conv_backward_naive(dout, cache_ref), strict=True
    ):
        np.testing.assert_allclose(grad, ref, rtol=1e-12)


@pytest.mark.parametrize("key", ["stride", "pad"])
def test_parameters_beyond_2_to_the_31_are_refused(key):
    conv_param = {"stride": 1, "pad": 0, key: 2**63}
    with pytest.raises(ValueError, match="at most 2\\*\\*31 - 1"):
        conv_forward_fast(np.ones((1, 1, 3, 3)), np.ones((1, 1, 1, 1)), np.zeros(1), conv_param)
    pool_param = {"pool_height": 1, "pool_width": 1, "stride": 2**63}
    with pytest.raises(ValueError, match="at most 2\\*\\*31 - 1"):
        max_pool_forward_fast(np.ones((1, 1, 3, 3)), pool_param)


def test_the_2_to_the_31_bound_is_for_layer_parameters_only():
    model = convnet.models.ThreeLayerConvNet(input_dim=(1, 4, 4), num_filters=2, seed=2**40)
    assert model.loss(np.ones((1, 1, 4, 4))).shape == (1, 10)


@needs_kernel
def test_pool_backward_refuses_a_cache_from_another_forward_pass():
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    _, cache = max_pool_forward_fast(np.ones((1, 1, 4, 4)), pool_param)
    foreign = cache._replace(x=np.ones((30, 1, 4, 4)))
    with pytest.raises(ValueError, match="argmax"):
        max_pool_backward_fast(np.ones((30, 1, 2, 2)), foreign)


def test_pool_backward_refuses_a_cache_whose_x_was_swapped_for_a_smaller_one():
    """Once a segfault: the kernel scattered the argmax of 8x8 planes into 2x2 ones."""
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = max_pool_forward_fast(np.ones((2, 3, 8, 8)), pool_param)
    for smaller in (np.ones((2, 3, 2, 2)), np.ones((2, 3, 8, 2)), np.ones((1, 3, 8, 8))):
        for backward in (max_pool_backward_fast, max_pool_backward_naive):
            with pytest.raises(ValueError, match=r"does not (fit|belong)"):
                backward(np.ones(out.shape), cache._replace(x=smaller))


@needs_kernel
@pytest.mark.parametrize("bad_index", [16, 10**6, -1, np.iinfo(np.intc).min])
def test_pool_backward_refuses_argmax_outside_the_plane(bad_index):
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = max_pool_forward_fast(np.ones((2, 3, 4, 4)), pool_param)
    argmax = cache.argmax.copy()
    argmax[1, 2, 1, 1] = bad_index
    with pytest.raises(ValueError, match="outside the 4x4 input plane"):
        max_pool_backward_fast(np.ones(out.shape), cache._replace(argmax=argmax))
    argmax[1, 2, 1, 1] = 15  # the last element of the plane is fine
    assert max_pool_backward_fast(np.ones(out.shape), cache._replace(argmax=argmax)).shape == (
        2,
        3,
        4,
        4,
    )


@needs_kernel
def test_pool_backward_refuses_argmax_of_another_dtype_or_layout():
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = max_pool_forward_fast(np.ones((2, 3, 4, 4)), pool_param)
    wide = np.zeros((2, 3, 4, 4), dtype=np.intc)[:, :, ::2, ::2]
    for argmax in (cache.argmax.astype(np.int64), np.asfortranarray(cache.argmax), wide):
        with pytest.raises(ValueError, match="argmax"):
            max_pool_backward_fast(np.ones(out.shape), cache._replace(argmax=argmax))
    with pytest.raises(TypeError, match="argmax must be an array"):
        max_pool_backward_fast(np.ones(out.shape), cache._replace(argmax=[0] * 12))


BACKWARDS = {
    "conv_fast": conv_backward_fast,
    "conv_naive": conv_backward_naive,
    "pool_fast": max_pool_backward_fast,
    "pool_naive": max_pool_backward_naive,
    "affine_fast": affine_backward_fast,
    "affine_naive": affine_backward,
    "relu": relu_backward,
}


@pytest.mark.parametrize("name", sorted(BACKWARDS))
@pytest.mark.parametrize("cache", [None, (), (1, 2), "cache", [np.ones(3)] * 4])
def test_malformed_caches_are_a_type_error(name, cache):
    with pytest.raises(TypeError, match="cache"):
        BACKWARDS[name](np.ones((2, 2, 2, 2)), cache)


@pytest.mark.parametrize("backward", [conv_backward_fast, conv_backward_naive])
def test_conv_backward_refuses_a_cache_that_does_not_fit_together(backward):
    x, w, b = np.ones((2, 3, 6, 6)), np.ones((4, 3, 3, 3)), np.ones(4)
    out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    dout = np.ones(out.shape)
    with pytest.raises(ValueError, match="does not fit together"):
        backward(dout, cache._replace(x=np.ones((2, 3, 4, 4))))
    with pytest.raises(ValueError, match="channel"):
        backward(dout, cache._replace(w=np.ones((4, 2, 3, 3))))
    with pytest.raises(TypeError, match="geometry"):
        backward(dout, cache._replace(geometry=(1, 1, 1, 1)))
    with pytest.raises(TypeError, match="geometry must hold integers"):
        backward(dout, cache._replace(geometry=(1, 1, 1, 1, 6.0, 6, 1, 1, 1)))
    with pytest.raises(TypeError, match="numpy array"):
        backward(dout, cache._replace(b=[1.0] * 4))
    with pytest.raises(TypeError, match="float32 or float64"):
        backward(dout, cache._replace(x=np.ones((2, 3, 6, 6), dtype=int)))


@needs_kernel
def test_changing_the_thread_count_while_convolutions_run(restore_num_threads):
    x = np.ones((16, 4, 8, 8), np.float32)
    w = np.ones((4, 4, 3, 3), np.float32)
    b = np.zeros(4, np.float32)
    expected, _ = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    errors: list[BaseException] = []

    def convolve() -> None:
        try:
            for _ in range(100):
                out, _ = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
                np.testing.assert_array_equal(out, expected)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=convolve)
    thread.start()
    count = 0
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        convnet.set_num_threads(1 + count % 3)
        count += 1
    thread.join(timeout=1)
    assert not thread.is_alive(), "the convolutions did not finish"
    assert not errors, errors


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_blas_threads_back(restore_num_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    _parallel.restore_blas_threads()
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    before = [lib.num_threads for lib in blas.lib_controllers]
    if not any(threads > 1 for threads in before):
        pytest.skip("numpy's BLAS runs single-threaded here: nothing to restore")
    convnet.set_num_threads(2)
    x = np.ones((8, 4, 8, 8))
    conv_forward_fast(x, np.ones((4, 4, 3, 3)), np.zeros(4), {"stride": 1, "pad": 1})
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            time.sleep(10 * _parallel.BLAS_RESTORE_DELAY)
            child = threadpoolctl.ThreadpoolController().select(user_api="blas")
            restored = [lib.num_threads for lib in child.lib_controllers] == before
            os.write(write_end, b"1" if restored else b"0")
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 60)
    answer = os.read(read_end, 1) if ready else b""
    os.close(read_end)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert answer == b"1", "the child hung or kept single-threaded BLAS"


@needs_kernel
@pytest.mark.parametrize(
    "kernel_size, pad, algorithm", [(1, 0, "auto"), (3, 1, "im2col"), (3, 1, "winograd")]
)
def test_backward_scratch_memory_does_not_grow_with_the_batch(
    kernel_size, pad, algorithm, restore_workspace_limit, restore_num_threads
):
    """Beyond outputs and gradients, a pass needs its workspace limit (here 4 MiB, which
    both batches fill) and arrays the size of the filters (Winograd's transformed filters
    and weight gradients, (6x6)/(3x3) = 4 times larger, a few per worker), whatever the
    batch. On one thread the peak is deterministic: it must not grow at all; on two, when
    each worker's arrays are alive depends on timing, so only the bound holds."""
    set_workspace_limit(4 * 2**20)
    w = np.ones((256, 64, kernel_size, kernel_size), np.float32)
    param = {"stride": 1, "pad": pad, "algorithm": algorithm}
    transformed_filters_mib = 4 * w.nbytes / 2**20
    for threads in (1, 2):
        convnet.set_num_threads(threads)
        small = extra_peak_mib(np.ones((64, 64, 4, 4), np.float32), w, param)
        large = extra_peak_mib(np.ones((512, 64, 4, 4), np.float32), w, param)
        if threads == 1:
            assert large < small + 1.0, (small, large)
        assert large < 4 + 8 * transformed_filters_mib + 1.0, (threads, large)
