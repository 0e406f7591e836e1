"""Tests of the worker threads: BLAS limits that respect the user's, fork, worker placement."""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from convnet import _parallel
from convnet._parallel import map_groups, restore_blas_threads, single_threaded_blas

threadpoolctl = pytest.importorskip("threadpoolctl")
DELAY = 0.05


def blas_threads() -> list[int]:
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    return [library.num_threads for library in blas.lib_controllers]


@pytest.fixture
def blas(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """numpy's BLAS thread counts before the test (skips without a multi-threaded BLAS);
    a short restore delay; the counts are put back after the test."""
    restore_blas_threads()
    before = blas_threads()
    if not before or any(threads != before[0] for threads in before):
        pytest.skip("needs one BLAS library, or several with equal thread counts")
    monkeypatch.setattr(_parallel, "BLAS_RESTORE_DELAY", DELAY)
    yield before
    restore_blas_threads()
    for library in _parallel._blas():
        library.set(before[0])


def wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(DELAY / 5)
    return condition()


def test_blas_is_limited_inside_and_given_back_after_the_delay(blas: list[int]) -> None:
    with single_threaded_blas():
        assert blas_threads() == [1] * len(blas)
    assert wait_for(lambda: blas_threads() == blas)


def test_a_users_limit_of_one_is_left_alone(blas: list[int]) -> None:
    with threadpoolctl.threadpool_limits(limits=1):
        with single_threaded_blas():
            assert blas_threads() == [1] * len(blas)
        assert _parallel._blas_saved is None or not _parallel._blas_saved
        time.sleep(4 * DELAY)
        assert blas_threads() == [1] * len(blas)
    assert blas_threads() == blas


def test_the_users_limit_comes_back_exactly(blas: list[int]) -> None:
    users = blas[0] + 1
    with threadpoolctl.threadpool_limits(limits=users):
        with single_threaded_blas():
            assert blas_threads() == [1] * len(blas)
        restore_blas_threads()
        assert blas_threads() == [users] * len(blas)
    assert blas_threads() == blas


def test_a_users_block_in_another_thread_keeps_control(blas: list[int]) -> None:
    """Our limit, set from another thread while the user's block runs here, must neither
    stop the user's block from restoring its original count nor undo that later."""
    users = blas[0] + 1
    with threadpoolctl.threadpool_limits(limits=users):
        thread = threading.Thread(target=lambda: map_groups(lambda a, b: None, 2))
        with single_threaded_blas():
            thread.start()
            thread.join()
    # The user's block has ended inside our restore delay: its restore stands.
    assert blas_threads() == blas
    time.sleep(4 * DELAY)
    assert blas_threads() == blas
    with threadpoolctl.threadpool_limits(limits=users):
        assert blas_threads() == [users] * len(blas)


def test_a_count_changed_during_the_delay_is_kept(blas: list[int]) -> None:
    with single_threaded_blas():
        pass
    for library in _parallel._blas():
        library.set(blas[0] + 2)
    time.sleep(4 * DELAY)
    assert blas_threads() == [blas[0] + 2] * len(blas)


def test_nested_and_concurrent_blocks_hold_the_limit(blas: list[int]) -> None:
    inside = threading.Event()
    leave = threading.Event()

    def other() -> None:
        with single_threaded_blas():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with single_threaded_blas():
        thread.start()
        inside.wait(10)
    time.sleep(4 * DELAY)
    assert blas_threads() == [1] * len(blas)
    leave.set()
    thread.join()
    assert wait_for(lambda: blas_threads() == blas)


def run_in_child(child, timeout: float = 60.0) -> bytes:
    """Fork; run ``child()`` (bytes) in the child; return what it wrote."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            os.write(write_end, child())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], timeout)
    answer = os.read(read_end, 64) if ready else b""
    os.close(read_end)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return answer


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_inside_a_block_keeps_the_limit_until_the_block_ends(blas: list[int]) -> None:
    def child() -> bytes:
        time.sleep(6 * DELAY)
        still_limited = blas_threads() == [1] * len(blas)
        block.__exit__(None, None, None)
        given_back = wait_for(lambda: blas_threads() == blas)
        return b"%d%d" % (still_limited, given_back)

    block = single_threaded_blas()
    block.__enter__()
    try:
        answer = run_in_child(child)
    finally:
        block.__exit__(None, None, None)
    assert answer == b"11", "in the child: limited inside the block, given back after it"
    assert wait_for(lambda: blas_threads() == blas)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_inside_a_users_limit_keeps_the_users_limit(blas: list[int]) -> None:
    users = blas[0] + 1

    def child() -> bytes:
        map_groups(lambda a, b: None, 2)
        time.sleep(6 * DELAY)
        return b"1" if blas_threads() == [users] * len(blas) else b"0"

    with threadpoolctl.threadpool_limits(limits=users):
        assert run_in_child(child) == b"1"
    assert blas_threads() == blas


needs_affinity = pytest.mark.skipif(
    _parallel._sched_getcpu is None or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and at least two CPUs to run on",
)


@needs_affinity
def test_workers_keep_off_the_callers_cpu_and_the_caller_stays_only_during_the_call(
    restore_num_threads: None,
) -> None:
    _parallel.set_num_threads(2)
    allowed = os.sched_getaffinity(0)
    seen: dict[str, object] = {}

    def work(start: int, stop: int) -> None:
        if threading.current_thread() is threading.main_thread():
            seen["caller_cpu"] = _parallel._sched_getcpu()
            seen["caller_affinity"] = os.sched_getaffinity(0)
            time.sleep(0.01)
        else:
            seen["worker_affinity"] = os.sched_getaffinity(0)
            seen["worker_cpu"] = _parallel._sched_getcpu()

    for _ in range(5):
        map_groups(work, 2)
        assert seen["worker_affinity"] <= allowed
        assert len(seen["worker_affinity"]) == len(allowed) - 1
        assert seen["worker_cpu"] in seen["worker_affinity"]
        assert seen["caller_affinity"] == {seen["caller_cpu"]}
        assert seen["caller_cpu"] not in seen["worker_affinity"]
        assert os.sched_getaffinity(0) == allowed


@needs_affinity
def test_the_caller_gets_its_affinity_back_when_a_group_raises(
    restore_num_threads: None,
) -> None:
    _parallel.set_num_threads(2)
    allowed = os.sched_getaffinity(0)

    def work(start: int, stop: int) -> None:
        if threading.current_thread() is threading.main_thread():
            raise RuntimeError("the caller's group failed")
        time.sleep(0.01)

    with pytest.raises(RuntimeError, match="caller's group failed"):
        map_groups(work, 2)
    assert os.sched_getaffinity(0) == allowed


@needs_affinity
def test_placement_off_gives_workers_every_allowed_cpu(
    restore_num_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _parallel.set_num_threads(2)
    map_groups(lambda a, b: None, 2)
    monkeypatch.setattr(_parallel, "PLACE_WORKERS", False)
    affinities = []

    def work(start: int, stop: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            affinities.append(os.sched_getaffinity(0))

    map_groups(work, 2)
    assert affinities == [os.sched_getaffinity(0)]


@needs_affinity
def test_more_workers_than_other_cpus_get_every_allowed_cpu() -> None:
    allowed = os.sched_getaffinity(0)
    assert _parallel._worker_cpus(len(allowed)) == allowed
    assert len(_parallel._worker_cpus(len(allowed) - 1)) == len(allowed) - 1


def test_placement_is_a_no_op_where_the_platform_cannot_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_parallel, "_sched_getcpu", None)
    assert _parallel._worker_cpus(1) is None
    assert _parallel._run_placed(None, lambda a, b: a + b, 2, 3) == 5


if sys.platform.startswith("linux"):

    def test_place_workers_can_be_switched_off_by_environment() -> None:
        import subprocess

        code = "from convnet import _parallel; print(_parallel._place_workers())"
        env = {**os.environ, "CONVNET_PLACE_WORKERS": "0"}
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(_parallel.__file__)),
        )
        assert result.stdout.strip() == "False"


def test_the_solver_leaves_malloc_alone_and_convnet_train_sets_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import numpy as np

    from convnet import _memory, cli
    from convnet.cli import train as cli_train
    from convnet.models import ThreeLayerConvNet
    from convnet.solver import Solver

    calls: list[str] = []
    monkeypatch.setattr(_memory, "keep_freed_memory", lambda: calls.append("library") or True)
    monkeypatch.setattr(cli_train, "keep_freed_memory", lambda: calls.append("cli") or True)
    rng = np.random.default_rng(0)
    data = {
        "X_train": rng.standard_normal((4, 1, 8, 8)),
        "y_train": rng.integers(0, 10, 4),
        "X_val": rng.standard_normal((2, 1, 8, 8)),
        "y_val": rng.integers(0, 10, 2),
    }
    model = ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=2, hidden_dim=4, seed=0)
    Solver(model, data, num_epochs=1, batch_size=2, progress=False, verbose=False).train()
    assert calls == []
    quick = ["--num-train", "20", "--epochs", "1", "--no-progress", "--quiet"]
    assert cli.main(["train", *quick, "--out", str(tmp_path)]) == 0
    assert calls == ["cli"]


def test_a_fast_layer_runs_every_product_on_one_blas_thread(
    blas: list[int], restore_num_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filter transform runs outside the workers: a multi-threaded GEMM there would
    leave OpenBLAS's threads spinning on the workers' cores."""
    import numpy as np

    from convnet import winograd
    from convnet.fast_layers import conv_forward_fast

    if blas[0] < 2:
        pytest.skip("needs a multi-threaded BLAS")
    _parallel.set_num_threads(2)
    seen: list[list[int]] = []
    transform = winograd.filter_transform

    def recording_transform(*args, **kwargs):
        seen.append(blas_threads())
        return transform(*args, **kwargs)

    monkeypatch.setattr(winograd, "filter_transform", recording_transform)
    x = np.ones((4, 8, 6, 6))
    w = np.ones((8, 8, 3, 3))
    conv_forward_fast(x, w, np.zeros(8), {"stride": 1, "pad": 1, "algorithm": "winograd"})
    assert seen and all(threads == [1] * len(blas) for threads in seen)
    _parallel.set_num_threads(1)
    restore_blas_threads()
    conv_forward_fast(x, w, np.zeros(8), {"stride": 1, "pad": 1, "algorithm": "winograd"})
    assert seen[-1] == blas
