"""The thread pool of the channels-last kernels (``_cl_threads.h``): a child made by
``os.fork()`` after the pool ran (or while another thread runs it) computes correctly and
exits; Python threads calling at once get the answers one caller gets; a thread count
beyond the pool's workers."""

from __future__ import annotations

import os
import select
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from channels_last_helpers import needs_channels_last
from fresh_interpreter import run_python

import convnet
from convnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from convnet.fast_normalization import (
    spatial_batchnorm_relu_backward_fast,
    spatial_batchnorm_relu_forward_fast,
)
from convnet.memory_format import to_channels_last

pytestmark = needs_channels_last
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}
CHILD_TIMEOUT = 20


def layer_inputs(seed: int, algorithm: str) -> tuple:
    """x (channels-last float32), the filters, bias, conv_param, batch norm's gamma and beta."""
    rng = np.random.default_rng(seed)
    x = to_channels_last(rng.standard_normal((6, 12, 10, 10)).astype(np.float32))
    w = rng.standard_normal((16, 12, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    gamma, beta = np.ones(16, np.float32), np.zeros(16, np.float32)
    return x, w, b, {"stride": 1, "pad": 1, "algorithm": algorithm}, gamma, beta


def run_layers(x, w, b, param, gamma, beta) -> list[np.ndarray]:
    """Convolution, batch norm + ReLU and max pooling forward and backward (every kernel
    that splits its work over the pool): every result."""
    conv_out, conv_cache = conv_forward_fast(x, w, b, param)
    normalized, norm_cache = spatial_batchnorm_relu_forward_fast(
        conv_out, gamma, beta, {"mode": "train"}
    )
    pooled, pool_cache = max_pool_forward_fast(normalized, POOL)
    dnormalized = max_pool_backward_fast(np.ones_like(pooled), pool_cache)
    dconv, dgamma, dbeta = spatial_batchnorm_relu_backward_fast(dnormalized, norm_cache)
    return [pooled, dnormalized, dgamma, dbeta, *conv_backward_fast(dconv, conv_cache)]


def assert_identical(results, expected) -> None:
    for result, wanted in zip(results, expected, strict=True):
        np.testing.assert_array_equal(result, wanted)


@pytest.mark.parametrize("algorithm", ["winograd", "im2col"])
@pytest.mark.parametrize("while_busy", [False, True], ids=["after-a-call", "while-busy"])
def test_a_forked_child_computes_and_exits(algorithm, while_busy, restore_num_threads):
    """fork() copies no worker: the child starts its own (and the lock and the busy flag
    afresh, even when another thread of the parent was inside the pool) and gets the
    parent's results, bit for bit. A hang fails after CHILD_TIMEOUT seconds."""
    convnet.set_num_threads(2)
    inputs = layer_inputs(1, algorithm)
    expected = run_layers(*inputs)
    started, stop = threading.Event(), threading.Event()

    def keep_busy() -> None:
        started.set()
        while not stop.is_set():
            run_layers(*inputs)

    busy = threading.Thread(target=keep_busy)
    if while_busy:
        busy.start()
        started.wait(timeout=30)
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except BaseException:
        stop.set()
        raise
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            results = run_layers(*inputs)
            same = all(np.array_equal(r, e) for r, e in zip(results, expected, strict=True))
            os.write(write_end, b"1" if same else b"0")
            status = 0
        finally:
            os._exit(status)
    stop.set()
    if while_busy:
        busy.join(timeout=60)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], CHILD_TIMEOUT)
    answer = os.read(read_end, 1) if ready else b""
    os.close(read_end)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert answer == b"1", "the child hung or computed other values"
    assert os.waitstatus_to_exitcode(status) == 0
    assert_identical(run_layers(*inputs), expected)  # and the parent's pool still works


def test_python_threads_calling_at_once_get_one_callers_answers(restore_num_threads):
    """The pool serves one caller at a time; another caller meanwhile runs its parts one
    after another on its own thread: the same shares, so the same bits."""
    convnet.set_num_threads(2)
    inputs = [layer_inputs(seed, algorithm) for seed, algorithm in ((2, "winograd"), (3, "im2col"))]
    expected = [run_layers(*args) for args in inputs]
    start = threading.Barrier(len(inputs))
    wrong: list[str] = []

    def caller(index: int) -> None:
        start.wait(timeout=30)
        for _ in range(15):
            if not all(
                np.array_equal(r, e)
                for r, e in zip(run_layers(*inputs[index]), expected[index], strict=True)
            ):
                wrong.append(f"caller {index}")

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    assert not wrong, wrong


MANY_THREADS_SCRIPT = """
import numpy as np
import convnet
from convnet import _conv_work, _parallel
from convnet.fast_activation import relu_forward_fast
from convnet.fast_layers import conv_backward_fast, conv_forward_fast, max_pool_forward_fast
from convnet.fast_normalization import spatial_batchnorm_relu_forward_fast
from convnet.layers import conv_forward_naive
from convnet.memory_format import to_channels_last

_conv_work.SMALL_CONV_MULTIPLY_ADDS = 0
_parallel.POOL_MIN_ELEMENTS = 0
rng = np.random.default_rng(0)
x = to_channels_last(rng.standard_normal((2, 8, 6, 6)).astype(np.float32))
w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
b = np.zeros(8, np.float32)
expected = conv_forward_naive(x.astype(float), w.astype(float), b.astype(float),
                              {"stride": 1, "pad": 1})[0]
convnet.set_num_threads(300)
for algorithm in ("winograd", "im2col"):
    out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1, "algorithm": algorithm})
    assert np.allclose(out, expected, rtol=1e-4, atol=1e-4), algorithm
    conv_backward_fast(np.ones_like(out), cache)
spatial_batchnorm_relu_forward_fast(x, np.ones(8, np.float32), np.zeros(8, np.float32),
                                    {"mode": "train"})
relu_forward_fast(x)
max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
print("ok")
"""


def test_more_threads_than_the_pool_holds_still_work(tmp_path):
    """set_num_threads beyond the pool's 256 parts (a large machine's default): the calls
    use the parts the pool has. In a fresh interpreter, so its 255 workers go with it."""
    root = Path(convnet.__file__).resolve().parents[1]
    result = run_python(MANY_THREADS_SCRIPT, pythonpath=root, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


PLACEMENT_PROGRAM = """
import os, threading, time
import numpy as np
import convnet
from convnet import _backend, _parallel

kernel = _backend.channels_last_kernel
x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
out = np.empty_like(x)
seen = set()

def run_and_record():
    before = os.sched_getaffinity(0)
    for _ in range(20):
        time.sleep(0.005)  # the workers fall asleep: the next call places them
        kernel.relu(x, out, 2)
        seen.add(frozenset(os.sched_getaffinity(0)))
    assert os.sched_getaffinity(0) == before, (before, os.sched_getaffinity(0))

assert _parallel.pool_threads() >= 1  # tells the pool CONVNET_PLACE_WORKERS
run_and_record()
thread = threading.Thread(target=run_and_record)
thread.start()
thread.join()
np.testing.assert_array_equal(out, np.maximum(x, 0))


def thread_cpus():
    cpus = []
    for status in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{status}/status") as lines:
            cpus += [line.split()[1] for line in lines if line.startswith("Cpus_allowed_list")]
    return set(cpus)


kernel.set_worker_placement(False)  # turned off, the workers get every CPU back
time.sleep(0.005)
kernel.relu(x, out, 2)
assert len(thread_cpus()) == 1, thread_cpus()
print(len(seen), sorted(map(sorted, seen)))
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs",
)
@pytest.mark.parametrize("place", ["1", "0"])
def test_a_placed_call_gives_the_caller_its_cpus_back(place, tmp_path):
    """While a call runs its caller stays on one CPU (its workers off it); afterwards the
    caller's own affinity is back, in the main thread and in another, placed or not."""
    root = Path(convnet.__file__).resolve().parents[1]
    result = run_python(
        PLACEMENT_PROGRAM, pythonpath=root, cwd=tmp_path, CONVNET_PLACE_WORKERS=place
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1 "), result.stdout
