"""Run folders under faults: every fault leaves a run that can be resumed or finished, a
run records what ran, one process per folder, runs/latest names the newest model, and
every error is one line (issue 16, cases 3-6, 8, 10 and 13)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_cifar import write_batches

import convnet
from convnet import checkpoint as checkpoint_module
from convnet import cli
from convnet.cli import run_folder
from convnet.runs import (
    CURVES_FILE,
    FILTERS_FILE,
    MODEL_FILE,
    OPTIONS_FILE,
    SUMMARY_FILE,
)
from convnet.serialization import load_model
from convnet.solver import CHECKPOINT_NAME, Solver

QUICK = ["--num-train", "100", "--no-progress", "--quiet", "--num-filters", "2"]
OUTPUTS = (MODEL_FILE, SUMMARY_FILE, CURVES_FILE, FILTERS_FILE)
ROOT = Path(convnet.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _needs_training_extras() -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")


def run_cli(*argv: str | Path) -> int:
    return cli.main([str(arg) for arg in argv])


def one_line_error(capsys: pytest.CaptureFixture, code: int, status: int = 2) -> str:
    err = capsys.readouterr().err
    assert code == status, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.iterdir()}


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A finished run of two epochs."""
    out = tmp_path / "run"
    assert run_cli("train", *QUICK, "--epochs", "2", "--out", out) == 0
    return out


# --- case 3: a run whose training is done can always be finished ---------------------------


@pytest.mark.parametrize(
    "lost", [(MODEL_FILE,), (SUMMARY_FILE, CURVES_FILE), OUTPUTS], ids=["model", "record", "all"]
)
def test_resume_writes_the_outputs_a_finished_run_lacks(
    finished: Path, capsys: pytest.CaptureFixture, lost: tuple[str, ...]
) -> None:
    """Killed after its last checkpoint but before model.npz (or with the disk full then),
    a run said "nothing left to train" forever and never got its model."""
    kept = {name: (finished / name).read_bytes() for name in OUTPUTS if name not in lost}
    expected = load_model(finished / MODEL_FILE)
    checkpoint = (finished / CHECKPOINT_NAME).read_bytes()
    for name in lost:
        (finished / name).unlink()
    capsys.readouterr()
    assert run_cli("train", "--resume", "--out", finished, "--no-progress") == 0
    out = capsys.readouterr().out
    assert "training had finished" in out and ", ".join(lost) in out
    assert all((finished / name).is_file() for name in OUTPUTS)
    assert {name: (finished / name).read_bytes() for name in kept} == kept
    assert (finished / CHECKPOINT_NAME).read_bytes() == checkpoint
    model = load_model(finished / MODEL_FILE)
    for name, value in expected.params.items():
        np.testing.assert_array_equal(model.params[name], value)
    summary = json.loads((finished / SUMMARY_FILE).read_text())
    assert summary["epochs"] == 2
    if SUMMARY_FILE in lost:
        assert summary["epochs_this_run"] == 0 and summary["resumed_at_epoch"] == 2


def test_a_kill_between_the_last_checkpoint_and_the_model_is_finished_by_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convnet.cli import train

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # what a kill at that moment leaves: no model, no summary

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(train, "write_outputs", killed)
        assert run_cli("train", *QUICK, "--epochs", "1", "--out", out) == 130
    assert not (out / MODEL_FILE).exists() and (out / CHECKPOINT_NAME).is_file()
    assert run_cli("train", "--resume", "--out", out, "--no-progress") == 0
    assert all((out / name).is_file() for name in OUTPUTS)


def test_a_full_disk_while_writing_the_model_is_one_line_and_resume_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convnet import serialization

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "model.npz"))

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(serialization, "save_model", full)
        err = one_line_error(capsys, run_cli("train", *QUICK, "--epochs", "1", "--out", out))
    assert "No space left on device" in err and "--resume` writes it" in err
    assert run_cli("train", "--resume", "--out", out, "--no-progress") == 0
    assert (out / MODEL_FILE).is_file()


def test_a_complete_finished_run_is_left_alone(
    finished: Path, capsys: pytest.CaptureFixture
) -> None:
    before = snapshot(finished)
    assert run_cli("train", "--resume", "--out", finished, "--no-progress") == 0
    assert "nothing left to train" in capsys.readouterr().out
    assert snapshot(finished) == before


# --- case 4: what a run records is what ran -----------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("--lr", "0.5"), ("--seed", "3"), ("--init", "normal"), ("--hidden-dim", "7")],
)
def test_an_option_a_resume_cannot_apply_is_refused(
    finished: Path, capsys: pytest.CaptureFixture, option: str, value: str
) -> None:
    """`--resume --lr 0.5` trained with the checkpoint's learning rate but recorded 0.5."""
    before = snapshot(finished)
    code = run_cli("train", "--resume", "--out", finished, "--epochs", "3", option, value)
    err = one_line_error(capsys, code)
    assert f"{option} {value} differs from the resumed run's" in err
    assert snapshot(finished) == before


def test_the_options_a_resume_applies_are_recorded_and_applied(
    finished: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--epochs", "3", "--batch-size", "20", "--reg", "0.01", "--lr-decay", "0.5"]
    assert run_cli("train", "--resume", "--out", finished, "--no-progress", "--quiet", *argv) == 0
    summary = json.loads((finished / SUMMARY_FILE).read_text())
    options = json.loads((finished / OPTIONS_FILE).read_text())
    assert options == summary["options"]
    assert (options["batch_size"], options["reg"], options["lr_decay"]) == (20, 0.01, 0.5)
    assert options["lr"] == 2e-3  # the run's own, which the checkpoint's optimizer continues
    assert summary["iterations"] == 2 * 2 + 100 // 20  # two epochs of 50, one of 20
    assert summary["epochs"] == 3 and summary["epochs_this_run"] == 1
    assert summary["resumed_at_epoch"] == 2
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "epoch 3 in" in last and "resumed after epoch 2" in last


# --- case 5: the truth about interrupted, diverged and empty runs; runs/latest ----------------


def _interrupt_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    original = Solver._step
    calls = []

    def step_or_interrupt(self: Solver, *args: object) -> float:
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Solver, "_step", step_or_interrupt)


def test_an_interrupt_after_a_checkpoint_says_which_epoch_it_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, 3)  # two steps an epoch: in epoch 2
        err = one_line_error(capsys, run_cli("train", *QUICK, "--epochs", "3", "--out", out), 130)
    assert "interrupted in epoch 2" in err
    assert f"{out / CHECKPOINT_NAME} holds epoch 1: continue with `convnet train --out" in err
    assert checkpoint_module.checkpoint_epoch(out / CHECKPOINT_NAME) == 1
    assert run_cli("train", "--resume", "--out", out, "--no-progress", "--quiet") == 0
    assert json.loads((out / SUMMARY_FILE).read_text())["epochs"] == 3


def test_latest_is_the_newest_run_that_produced_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diverged run, an interrupted one and `--epochs 0` all became runs/latest, and
    `convnet evaluate runs/latest/model.npz` then failed."""
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", *QUICK, "--epochs", "1") == 0
    first = (tmp_path / "runs" / "latest").resolve()
    with np.errstate(all="ignore"):
        code = run_cli("train", *QUICK, "--epochs", "2", "--optimizer", "sgd", "--lr", "1e6")
    assert code == 1 and "training diverged" in capsys.readouterr().err
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, 3)
        assert run_cli("train", *QUICK, "--epochs", "2") == 130
    capsys.readouterr()
    one_line_error(capsys, run_cli("train", *QUICK, "--epochs", "0"))
    assert (tmp_path / "runs" / "latest").resolve() == first
    capsys.readouterr()
    assert run_cli("evaluate", "runs/latest/model.npz") == 0
    # a bare --resume continues the run trained last (the interrupted one), not latest
    assert run_cli("train", "--resume", "--no-progress", "--quiet") == 0
    latest = (tmp_path / "runs" / "latest").resolve()
    assert latest != first and json.loads((latest / SUMMARY_FILE).read_text())["epochs"] == 2


def test_a_run_that_diverges_in_its_first_epoch_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with np.errstate(all="ignore"):
        code = run_cli("train", *QUICK, "--epochs", "1", "--optimizer", "sgd", "--lr", "1e6")
    err = one_line_error(capsys, code, 1)
    assert "training diverged" in err and "nothing was kept" in err
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_diverged_run_with_a_checkpoint_says_how_to_keep_its_model(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convnet.solver import TrainingDiverged

    original = Solver._step
    calls = []

    def diverge_in_epoch_2(self: Solver, *args: object) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise TrainingDiverged(float("nan"), 2, 1, "")
        return original(self, *args)

    monkeypatch.setattr(Solver, "_step", diverge_in_epoch_2)
    out = tmp_path / "run"
    err = one_line_error(capsys, run_cli("train", *QUICK, "--epochs", "3", "--out", out), 1)
    command = f"convnet train --out {out} --resume --epochs 1` writes its model"
    assert command in err
    monkeypatch.undo()
    assert run_cli("train", "--out", out, "--resume", "--epochs", "1", "--no-progress") == 0
    assert (out / MODEL_FILE).is_file()


# --- case 6: one process per run folder; a folder holding another run is refused -----------


def test_a_run_folder_in_use_is_refused(finished: Path, capsys: pytest.CaptureFixture) -> None:
    """`--resume` while the run still trained resumed into the same folder, and both
    processes overwrote checkpoint.npz."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from convnet.cli.run_folder import locked\n"
            f"with locked(__import__('pathlib').Path({str(finished)!r})):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        before = snapshot(finished)
        code = run_cli("train", "--resume", "--out", finished, "--epochs", "3")
        err = one_line_error(capsys, code)
        assert f"process {holder.pid} is using the run folder {finished}" in err
        assert snapshot(finished) == before
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # the holder was killed: its lock went with it, though its file stayed
    assert (finished / run_folder.LOCK_FILE).exists()
    assert run_cli("train", "--resume", "--out", finished, "--epochs", "3", "--quiet") == 0
    assert not (finished / run_folder.LOCK_FILE).exists()


def test_two_processes_cannot_hold_one_folder(tmp_path: Path) -> None:
    with run_folder.locked(tmp_path):
        with pytest.raises(run_folder.FolderInUse, match="is using the run folder"):
            with run_folder.locked(tmp_path):
                pass
    with run_folder.locked(tmp_path):
        pass  # released: taken again
    assert list(tmp_path.iterdir()) == []


def test_a_folder_holding_another_run_is_refused_without_resume(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`--out` on a finished run without --resume, killed midway, left a folder mixing two
    runs that `evaluate` used silently."""
    before = snapshot(finished)
    err = one_line_error(capsys, run_cli("train", *QUICK, "--epochs", "1", "--out", finished))
    assert "holds another run" in err and "--resume" in err
    elsewhere = tmp_path / "elsewhere"
    assert run_cli("train", *QUICK, "--epochs", "1", "--out", elsewhere) == 0
    capsys.readouterr()
    code = run_cli("train", "--resume", elsewhere / CHECKPOINT_NAME, "--out", finished)
    assert "holds another run" in one_line_error(capsys, code)
    assert snapshot(finished) == before


# --- case 8 (and 10's full disk): folders that cannot be written; one line ------------------


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Path:
    """An existing folder nobody may write in: by its mode, or for root (whom modes do not
    stop) by the immutable attribute."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (needs chattr)")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("where", ["folder", "subfolder", "working folder"])
def test_a_read_only_place_is_one_line(
    read_only_folder: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """`--out` naming an existing read-only folder gave a 49-line traceback."""
    argv = ["train", *QUICK, "--epochs", "1"]
    if where == "folder":
        argv += ["--out", read_only_folder]
    elif where == "subfolder":
        argv += ["--out", read_only_folder / "run"]
    else:
        monkeypatch.chdir(read_only_folder)
    err = one_line_error(capsys, run_cli(*argv))
    assert str(read_only_folder) in err or "runs" in err


def test_a_full_disk_while_checkpointing_is_one_line_and_the_run_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = []
    original = checkpoint_module._write_arrays

    def full_at_the_second(handle: object, arrays: dict) -> None:
        writes.append(1)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(handle, arrays)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "_write_arrays", full_at_the_second)
        code = run_cli("train", *QUICK, "--epochs", "3", "--out", out)
    err = one_line_error(capsys, code, 1)
    assert "cannot write the checkpoint" in err and "No space left on device" in err
    assert f"{out / CHECKPOINT_NAME} holds epoch 1" in err
    assert run_cli("train", "--resume", "--out", out, "--no-progress", "--quiet") == 0
    assert json.loads((out / SUMMARY_FILE).read_text())["epochs"] == 3


def test_a_tampered_checkpoint_is_one_line_at_resume(
    finished: Path, capsys: pytest.CaptureFixture
) -> None:
    with np.load(finished / CHECKPOINT_NAME) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("meta")[()]))
    meta["optim"]["W1"]["beta2"] = {"value": 1e300}
    np.savez(finished / CHECKPOINT_NAME, meta=np.array(json.dumps(meta)), **arrays)
    code = run_cli("train", "--resume", "--out", finished, "--epochs", "3")
    assert "beta2" in one_line_error(capsys, code)


# --- case 13: what the records and messages say -----------------------------------------------


CIFAR_SMALL = ["--filter-size", "3", "--num-filters", "2", "--hidden-dim", "4", "--epochs", "1"]


def test_a_relative_data_dir_is_recorded_absolute(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_batches(tmp_path / "data", label=1)
    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", "cifar10", "--data-dir", "data", "--num-val", "5", "--num-train", "30"]
    assert run_cli("train", *argv, *CIFAR_SMALL, "--no-progress", "--quiet", "--out", "run") == 0
    options = json.loads((tmp_path / "run" / OPTIONS_FILE).read_text())
    assert options["data_dir"] == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert run_cli("evaluate", tmp_path / "run" / MODEL_FILE) == 0
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "said", "unsaid"),
    [
        (["--num-val", "2000"], "--num-val 2000 and one training image need 2001", "--num-train"),
        (["--num-train", "45"], "--num-train 45 and the default --num-val 1000", None),
        ([], "the default --num-val 1000 and one training image", "--num-train"),
    ],
)
def test_size_messages_name_only_the_options_given(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], said: str, unsaid: str | None
) -> None:
    write_batches(tmp_path, label=1)
    code = run_cli(
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        tmp_path,
        *argv,
        *CIFAR_SMALL,
        "--out",
        tmp_path / "run",
    )
    err = one_line_error(capsys, code)
    assert said in err and "there are 40" in err
    if unsaid is not None:
        assert unsaid not in err


def test_evaluate_on_another_dataset_does_not_blame_options_not_given(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_batches(tmp_path, label=1)
    argv = ["--dataset", "cifar10", "--data-dir", tmp_path, "--num-val", "5", "--num-train", "30"]
    assert (
        run_cli("train", *argv, *CIFAR_SMALL, "--no-progress", "--quiet", "--out", tmp_path / "run")
        == 0
    )
    capsys.readouterr()
    err = one_line_error(
        capsys, run_cli("evaluate", tmp_path / "run" / MODEL_FILE, "--dataset", "digits")
    )
    assert "--data-dir" not in err and "--download" not in err
    assert "does not fit the digits images" in err


def test_a_failed_download_leaves_no_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convnet import data

    monkeypatch.setenv("CONVNET_CIFAR10_URL", (tmp_path / "absent.tar.gz").as_uri())
    cache = tmp_path / "cache" / "convnet"
    with pytest.raises(data.DownloadError):
        data.download_cifar10(cache, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_last_line_of_a_resumed_run_names_the_epochs_it_trained(
    finished: Path, capsys: pytest.CaptureFixture
) -> None:
    capsys.readouterr()
    assert run_cli("train", "--resume", "--out", finished, "--epochs", "4", "--quiet") == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "epochs 3-4 in" in last and "resumed after epoch 2" in last


def test_the_lock_file_is_gone_after_every_command(finished: Path) -> None:
    assert not (finished / run_folder.LOCK_FILE).exists()
    stamp = time.time()
    assert run_cli("train", "--resume", "--out", finished, "--no-progress") == 0
    assert not (finished / run_folder.LOCK_FILE).exists()
    assert (finished / CHECKPOINT_NAME).stat().st_mtime < stamp  # nothing retrained
