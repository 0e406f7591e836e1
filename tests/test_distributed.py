"""Tests of data-parallel training over MPI (convnet.distributed, Solver(comm=...), the CLI).

The tests that need MPI run ``mpiexec`` from this interpreter's environment (the ``mpi``
extra puts it there) in subprocesses with a timeout, so a hang fails instead of blocking;
they are skipped when mpi4py or that mpiexec is absent. The rank programs of
tests/mpi_programs.py run under ``python -m mpi4py``, so a check failing on one rank
aborts every rank at once instead of leaving the others waiting in a collective until the
timeout. The rest run in this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convnet
from convnet import _launcher, _parallel, cli, distributed
from convnet.distributed import (
    Ranks,
    launch_info,
    running_statistics,
    set_running_statistics,
    shard,
)
from convnet.models import FullyConnectedNet, ThreeLayerConvNet

MPIEXEC = Path(sys.executable).parent / "mpiexec"
PROGRAMS = Path(__file__).with_name("mpi_programs.py")
SOURCE_ROOT = Path(convnet.__file__).resolve().parents[1]
TIMEOUT = 120
# The rank programs take about 2 s (seen: 28 s on a loaded machine); a failing check ends
# them at once, so this only stops a real hang.
PROGRAM_TIMEOUT = 60
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or not MPIEXEC.is_file(),
    reason='needs mpi4py and mpiexec in the environment (pip install ".[mpi]")',
)
LAUNCHER_NAMES = [name for names in _launcher.LAUNCHER_VARIABLES for name in names]


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without any MPI launcher's variables."""
    for name in LAUNCHER_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("names", _launcher.LAUNCHER_VARIABLES)
def test_launch_info_reads_each_launchers_variables(
    no_launcher: pytest.MonkeyPatch, names: tuple[str, str, str]
) -> None:
    rank, size, local = names
    no_launcher.setenv(rank, "3")
    no_launcher.setenv(size, "8")
    no_launcher.setenv(local, "4")
    assert launch_info() == {"rank": 3, "size": 8, "local_size": 4}
    assert distributed.ranks_on_this_node() == 4 and distributed.launched_rank() == 3
    no_launcher.delenv(local)
    assert launch_info() == {"rank": 3, "size": 8, "local_size": 8}


@pytest.mark.parametrize(
    ("rank", "size"), [(None, None), ("0", "1"), ("2", "2"), ("-1", "4"), ("x", "2"), ("0", "")]
)
def test_no_launcher_or_one_rank_is_one_process(
    no_launcher: pytest.MonkeyPatch, rank: str | None, size: str | None
) -> None:
    if rank is not None:
        no_launcher.setenv("PMI_RANK", rank)
        no_launcher.setenv("PMI_SIZE", size)
    assert launch_info() is None
    assert distributed.ranks_on_this_node() == 1 and distributed.launched_rank() == 0
    assert distributed.world() is None


def test_default_threads_share_the_cores_among_the_ranks_on_this_machine(
    no_launcher: pytest.MonkeyPatch,
) -> None:
    no_launcher.delenv("CONVNET_NUM_THREADS", raising=False)
    no_launcher.delenv("OMP_NUM_THREADS", raising=False)
    alone = _parallel._default_threads()
    no_launcher.setenv("OMPI_COMM_WORLD_RANK", "0")
    no_launcher.setenv("OMPI_COMM_WORLD_SIZE", "64")
    no_launcher.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    assert _parallel._default_threads() == max(1, alone // 2)
    no_launcher.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", str(4 * alone))
    assert _parallel._default_threads() == 1
    no_launcher.setenv("CONVNET_NUM_THREADS", "3")
    assert _parallel._default_threads() == 3


@given(total=st.integers(0, 300), size=st.integers(1, 70))
def test_shards_cover_every_item_once_in_order_and_balanced(total: int, size: int) -> None:
    shares = [shard(total, rank, size) for rank in range(size)]
    assert [i for share in shares for i in range(total)[share]] == list(range(total))
    lengths = [share.stop - share.start for share in shares]
    assert max(lengths) - min(lengths) <= 1


def test_shard_refuses_a_rank_outside_the_job() -> None:
    for rank in (-1, 4):
        with pytest.raises(ValueError, match="rank must lie in"):
            shard(10, rank, 4)


def test_one_process_ranks_are_the_identity(rng: np.random.Generator) -> None:
    ranks = Ranks(None)
    assert (ranks.rank, ranks.size, ranks.is_root, ranks.distributed) == (0, 1, True, False)
    assert ranks.share(7) == slice(0, 7)
    assert ranks.broadcast({"a": 1}) == {"a": 1} and ranks.sum(5) == 5
    model = ThreeLayerConvNet(input_dim=(1, 6, 6), num_filters=2, filter_size=3, hidden_dim=4)
    X, y = rng.standard_normal((3, 1, 6, 6)), rng.integers(0, 10, 3)
    loss, grads = ranks.loss_and_gradients(model, X, y, 3)
    expected_loss, expected = model.loss(X, y)
    assert loss == expected_loss
    for name, value in expected.items():
        np.testing.assert_array_equal(grads[name], value)
    states = {"running_mean": np.ones(2)}
    assert ranks.average_arrays(states) == states
    ranks.average_statistics(model)
    ranks.broadcast_statistics(model)
    ranks.check_same("anything", ranks.rank)
    with pytest.raises(KeyError), ranks.abort_on_error():
        raise KeyError("passes through with one process")
    with pytest.raises(ZeroDivisionError):
        ranks.run_on_root(lambda: 1 / 0)
    assert ranks.communication_seconds == 0


def test_running_statistics_are_a_models_buffers_or_its_bn_params() -> None:
    model = FullyConnectedNet([4, 3], input_dim=5, normalization="batchnorm")
    assert running_statistics(model).keys() == model.buffers().keys() != set()
    set_running_statistics(model, {"running_mean1": np.full(4, 2.0, dtype=np.float32)})
    np.testing.assert_array_equal(model.buffers()["running_mean1"], np.full(4, 2.0))
    cs231n_style = types.SimpleNamespace(
        bn_params=[{"mode": "train"}, {"running_mean": np.zeros(2), "running_var": np.ones(2)}]
    )
    assert sorted(running_statistics(cs231n_style)) == ["running_mean2", "running_var2"]
    set_running_statistics(cs231n_style, {"running_var2": np.full(2, 3.0)})
    np.testing.assert_array_equal(cs231n_style.bn_params[1]["running_var"], np.full(2, 3.0))
    assert cs231n_style.bn_params[0] == {"mode": "train"}
    assert running_statistics(types.SimpleNamespace()) == {}
    assert running_statistics(FullyConnectedNet([3], input_dim=5)) == {}


def test_one_process_never_imports_mpi4py(tmp_path: Path) -> None:
    """Training in one process, the CLI included, leaves mpi4py unimported."""
    code = (
        "import sys\n"
        "from convnet import cli\n"
        "status = cli.main(['train', '--num-train', '60', '--epochs', '1', '--no-progress',"
        f" '--quiet', '--out', {str(tmp_path)!r}])\n"
        "assert status == 0, status\n"
        "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n"
    )
    pytest.importorskip("sklearn")
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_NAMES}
    env["PYTHONPATH"] = str(SOURCE_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=tmp_path,  # not a source tree without the built kernel (see _mpiexec)
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["ranks"] == 1


def _mpiexec(ranks: int, *command: str | Path, timeout: float = TIMEOUT) -> tuple:
    """Run ``command`` on ``ranks`` ranks; return the completed process and the seconds.

    The ranks start in an empty directory: ``python -m`` puts the working directory first
    on the path, and from a source tree without the built kernel that would be the slow
    naive package instead of the convnet these tests imported.
    """
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as empty:
        result = subprocess.run(
            [str(MPIEXEC), "-n", str(ranks), *map(str, command)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=empty,
        )
    return result, time.perf_counter() - started


def _run_programs(ranks: int, *names: str) -> tuple:
    """Run the named checks of tests/mpi_programs.py on ``ranks`` ranks under
    ``python -m mpi4py`` (an exception on any rank aborts them all)."""
    command = (sys.executable, "-m", "mpi4py", PROGRAMS, *names)
    return _mpiexec(ranks, *command, timeout=PROGRAM_TIMEOUT)


def _train(ranks: int, out: Path, *options: str) -> subprocess.CompletedProcess:
    command = ["train", "--no-progress", "--out", str(out), *options]
    if ranks == 1:
        status = cli.main(command)
        return subprocess.CompletedProcess(command, status, "", "")
    result, _ = _mpiexec(ranks, sys.executable, "-m", "convnet", *command)
    return result


def _assert_same_parameters(left: Path, right: Path) -> None:
    with np.load(left / "model.npz") as a, np.load(right / "model.npz") as b:
        names = [name for name in a.files if not name.startswith("__")]
        assert names and sorted(names) == sorted(n for n in b.files if not n.startswith("__"))
        for name in names:
            error = np.max(np.abs(a[name] - b[name])) / np.max(np.abs(a[name]))
            assert error < 1e-6, f"{name} differs by {error:.3g} relative"


EQUIVALENCE = ["--dtype", "float64", "--seed", "0"]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``convnet train --dtype float64 --seed 0 --epochs 2`` in this process."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("alone")
    assert _train(1, out, *EQUIVALENCE, "--epochs", "2", "--quiet").returncode == 0
    return out


@needs_mpi
def test_two_ranks_train_the_parameters_of_one_process(
    one_process_run: Path, tmp_path: Path
) -> None:
    result = _train(2, tmp_path, *EQUIVALENCE, "--epochs", "2")
    assert result.returncode == 0, result.stderr
    _assert_same_parameters(one_process_run, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    alone = json.loads((one_process_run / "summary.json").read_text())
    assert summary["ranks"] == 2 and alone["ranks"] == 1
    assert summary["communication_seconds"] > 0 and alone["communication_seconds"] == 0
    assert summary["iterations"] == alone["iterations"] == 2 * 26  # 1257 images, batch 50
    assert summary["val_acc_history"] == alone["val_acc_history"]
    assert summary["test_accuracy"] == alone["test_accuracy"]
    # rank 0 alone prints: two epoch lines and one final line
    assert result.stdout.count("epoch 2/2") == 1 and result.stdout.count("wrote") == 1


@needs_mpi
def test_batch_norm_fc_net_trains_over_two_ranks(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    options = ["--model", "fc-net", "--normalization", "batchnorm", "--epochs", "1", "--quiet"]
    result = _train(2, tmp_path, *options)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["ranks"] == 2
    with np.load(tmp_path / "model.npz") as saved:
        assert np.all(np.isfinite(saved["running_mean1"])) and np.any(saved["running_mean1"])


@needs_mpi
@pytest.mark.parametrize(("first", "then"), [(2, 1), (1, 3)])
def test_resume_with_another_number_of_ranks(
    one_process_run: Path, tmp_path: Path, first: int, then: int
) -> None:
    result = _train(first, tmp_path, *EQUIVALENCE, "--epochs", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    result = _train(then, tmp_path, "--resume", "--epochs", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    _assert_same_parameters(one_process_run, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ranks"] == then and summary["epochs"] == 2


@needs_mpi
def test_solver_over_three_ranks() -> None:
    """Uneven and empty slices, sharded accuracy, shape checks, dropout streams, running
    statistics of batch norm, a resumed run's best state: see tests/mpi_programs.py."""
    checks = [
        "uneven_slices",
        "disagreeing_data",
        "dropout_streams",
        "cs231n_running_statistics",
        "batch_norm_statistics",
        "resumed_best_statistics",
    ]
    result, _ = _run_programs(3, *checks)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(re.findall(r"ok (\d)", result.stdout)) == ["0", "1", "2"], result.stdout


@needs_mpi
@pytest.mark.parametrize(
    ("program", "status", "message"),
    [
        ("failing_rank", 1, "rank 1 of 2 failed: RuntimeError: boom on rank 1"),
        ("interrupted_rank", 130, "rank 1 of 2 failed: interrupted"),
    ],
)
def test_a_failing_rank_ends_every_rank(program: str, status: int, message: str) -> None:
    """Rank 1 fails while rank 0 waits in the Allreduce; both end at once (the program
    would otherwise train for 1000 epochs) with rank 1's message and a non-zero status."""
    result, seconds = _run_programs(2, program)
    assert result.returncode == status, result.stderr
    assert message in result.stderr
    assert "ok" not in result.stdout
    assert seconds < PROGRAM_TIMEOUT / 2


@needs_mpi
def test_usage_error_under_mpi_is_printed_once(tmp_path: Path) -> None:
    result, _ = _mpiexec(
        2, sys.executable, "-m", "convnet", "train", "--out", tmp_path / "none", "--resume"
    )
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr.count("no checkpoint to resume from") == 1, result.stderr


@needs_mpi
def test_info_under_mpiexec_shows_rank_size_and_threads() -> None:
    result, _ = _mpiexec(2, sys.executable, "-m", "convnet", "info")
    assert result.returncode == 0, result.stderr
    assert "rank 0 of 2" in result.stdout and "rank 1 of 2" in result.stdout
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    if not (os.environ.get("CONVNET_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")):
        assert result.stdout.count(f"threads:  {max(1, cores // 2)} worker") == 2


STARTUP_TIMEOUT = 60


def _mpiexec_per_rank(*commands: list[str | Path], **env: str) -> tuple:
    """Run one command per rank (MPMD: ``mpiexec -n 1 A : -n 1 B``) in a session of its
    own; past STARTUP_TIMEOUT every process of it is killed and the test fails at once,
    naming what each rank printed."""
    child_env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_NAMES}
    child_env["PYTHONPATH"] = str(SOURCE_ROOT)
    child_env.update(env)
    argv: list[str] = [str(MPIEXEC)]
    for index, command in enumerate(commands):
        argv += [*([":"] if index else []), "-n", "1", *map(str, command)]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as empty:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env,
            cwd=empty,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=STARTUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"the ranks hung for {STARTUP_TIMEOUT} s:\n{out}{err}")
    result = subprocess.CompletedProcess(argv, process.returncode, out, err)
    return result, time.perf_counter() - started


def _convnet(*argv: str | Path, env: str | None = None) -> list[str | Path]:
    prefix = ["env", env] if env else []
    return [*prefix, sys.executable, "-m", "convnet", *argv]


@needs_mpi
def test_a_rank_that_cannot_start_ends_every_rank_with_its_message(tmp_path: Path) -> None:
    """Issue 16, case 14: rank 1 refused its environment before MPI began, and rank 0
    waited for it forever (the 120 s timeout)."""
    train = ["train", "--num-train", "60", "--epochs", "1", "--no-progress", "--out", tmp_path]
    result, seconds = _mpiexec_per_rank(
        _convnet(*train), _convnet(*train, env="CONVNET_BACKEND=bogus")
    )
    assert result.returncode == cli.EXIT_USAGE, result.stdout + result.stderr
    expected = "convnet: error: rank 1 of 2: CONVNET_BACKEND must be 'naive', 'cython' or 'auto'"
    assert expected in result.stderr and result.stderr.count("CONVNET_BACKEND") == 1
    assert not (tmp_path / "model.npz").exists()
    assert seconds < STARTUP_TIMEOUT / 2


@needs_mpi
def test_a_rank_with_a_bad_command_line_ends_every_rank(tmp_path: Path) -> None:
    train = ["train", "--num-train", "60", "--epochs", "1", "--no-progress", "--out", tmp_path]
    result, _ = _mpiexec_per_rank(_convnet(*train), _convnet("trian"))
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert "rank 1 of 2: argument COMMAND: invalid choice: 'trian'" in result.stderr


@needs_mpi
def test_an_error_of_every_rank_is_printed_once_without_rank_numbers() -> None:
    result, _ = _mpiexec_per_rank(
        _convnet("info", env="CONVNET_NUM_THREADS=0"), _convnet("info", env="CONVNET_NUM_THREADS=0")
    )
    assert result.returncode == cli.EXIT_USAGE
    expected = "convnet: error: CONVNET_NUM_THREADS must be a positive integer, got '0'\n"
    assert result.stderr == expected


@needs_mpi
def test_ranks_started_with_other_arguments_are_warned_about(tmp_path: Path) -> None:
    """Ranks started with different arguments were ignored silently: rank 0's apply."""
    train = ["train", "--num-train", "60", "--no-progress", "--quiet", "--out", tmp_path]
    result, _ = _mpiexec_per_rank(
        _convnet(*train, "--epochs", "1"), _convnet(*train, "--epochs", "2")
    )
    assert result.returncode == 0, result.stderr
    assert "warning: ranks were started with other arguments than rank 0's" in result.stderr
    assert "rank 1: train" in result.stderr and "--epochs 2" in result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == 1
