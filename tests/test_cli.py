"""Tests of the ``convnet`` command and of the plots it writes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import convnet
from convnet import cli, plots
from convnet.models import load_model
from convnet.plots import normalize_filters, plot_curves, plot_filters
from convnet.solver import CHECKPOINT_NAME, Solver

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SUMMARY_KEYS = {
    "val_accuracy",
    "train_accuracy",
    "test_accuracy",
    "epochs",
    "seconds",
    "images_per_second",
    "backend",
    "options",
}
QUICK = ["--num-train", "100", "--epochs", "1", "--no-progress", "--quiet"]


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    history = {
        "loss_history": [2.3, 1.5, 0.9, 0.4],
        "train_acc_history": [0.5, 0.8],
        "val_acc_history": [0.45, 0.7],
    }
    assert plot_curves(history, tmp_path / "curves.png") == tmp_path / "curves.png"
    assert is_png(tmp_path / "curves.png")


@pytest.mark.parametrize("shape", [(5, 1, 3, 3), (4, 3, 7, 7), (7, 1, 2, 2)])
def test_plot_filters_writes_grey_and_rgb_pngs(
    tmp_path: Path, shape: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(plots, "MAX_FILTERS_SHOWN", 6)
    W1 = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    plot_filters(W1, tmp_path / "filters.png")
    assert is_png(tmp_path / "filters.png")


def test_filters_are_normalized_one_by_one() -> None:
    W1 = np.stack([np.full((3, 2, 2), 5.0), np.arange(12.0).reshape(3, 2, 2) * -1])
    images = normalize_filters(W1)
    assert images.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(images[0], 0)
    assert images[1].min() == 0 and images[1].max() == 1
    assert images[1, 0, 0, 0] == 1  # the largest value, -0, of the second filter
    for bad in (np.zeros((2, 2, 3, 3)), np.zeros((0, 1, 3, 3)), np.zeros((3, 3))):
        with pytest.raises(ValueError, match="filters must be"):
            normalize_filters(bad)


def run_cli(*argv: str | Path) -> int:
    return cli.main([str(arg) for arg in argv])


@pytest.fixture
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("run")
    assert run_cli("train", *QUICK, "--num-filters", "4", "--hidden-dim", "20", "--out", out) == 0
    return out


def test_train_writes_summary_model_and_plots(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    summary = json.loads((trained_run / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["epochs"] == 1 and summary["backend"] == convnet.BACKEND
    assert summary["options"]["num_filters"] == 4 and summary["options"]["dataset"] == "digits"
    assert 0 <= summary["val_accuracy"] <= 1 and summary["images_per_second"] > 0
    model = load_model(trained_run / "model.npz")
    assert model.params["W1"].shape == (4, 1, 3, 3)
    assert is_png(trained_run / "curves.png") and is_png(trained_run / "filters.png")
    assert (trained_run / CHECKPOINT_NAME).is_file()


def test_resume_continues_with_the_saved_options(trained_run: Path) -> None:
    first = json.loads((trained_run / "summary.json").read_text())
    assert run_cli("train", "--resume", "--epochs", "2", "--no-progress", "--out", trained_run) == 0
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert summary["iterations"] == 2 * first["iterations"]
    assert summary["options"]["num_filters"] == 4 and summary["options"]["num_train"] == 100
    assert summary["resumed_from"] == str(trained_run / CHECKPOINT_NAME)
    assert summary["val_acc_history"][0] == first["val_acc_history"][0]


def test_fc_net_trains_and_plots_its_first_layer(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    argv = ["train", *QUICK, "--model", "fc-net", "--hidden-dims", "16", "--dtype", "float64"]
    assert run_cli(*argv, "--dropout", "0.8", "--out", tmp_path) == 0
    model = load_model(tmp_path / "model.npz")
    assert model.params["W1"].shape == (64, 16) and model.params["W1"].dtype == np.float64
    assert is_png(tmp_path / "filters.png")


def test_train_on_cifar10_batches(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    names = [*(f"data_batch_{index}" for index in range(1, 6)), "test_batch"]
    for name in names:
        batch = {b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), b"labels": [1] * 8}
        (batches / name).write_bytes(pickle.dumps(batch))
    options = ["--num-train", "30", "--num-val", "5", "--filter-size", "3", "--num-filters", "2"]
    code = run_cli(
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        tmp_path,
        *options,
        "--hidden-dim",
        "8",
        "--epochs",
        "1",
        "--no-progress",
        "--quiet",
        "--out",
        tmp_path / "out",
    )
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["options"]["data_dir"] == str(tmp_path)
    assert summary["test_accuracy"] == summary["val_accuracy"] == 1.0
    assert load_model(tmp_path / "out" / "model.npz").params["W1"].shape == (2, 3, 3, 3)
    assert is_png(tmp_path / "out" / "filters.png")


def assert_usage_error(capsys: pytest.CaptureFixture, code: int, *fragments: str) -> None:
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("convnet: error:") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "COMMAND"),
        (["fly"], "invalid choice"),
        (["train", "--epochs", "-1"], "--epochs"),
        (["train", "--lr", "abc"], "--lr"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--lr-decay", "1.5"], "--lr-decay"),
        (["train", "--model", "resnet"], "--model"),
        (["train", "--hidden-dims", "10,x"], "--hidden-dims"),
        (["train", "--dataset", "cifar10", "--out", "{tmp}"], "--data-dir"),
        (["train", "--dataset", "cifar10", "--data-dir", "{tmp}/none", "--out", "{tmp}"], "none"),
        (
            ["train", "--dataset", "cifar10", "--data-dir", "{tmp}", "--out", "{tmp}"],
            "data_batch_1",
        ),
        (["train", "--resume", "--out", "{tmp}"], "no checkpoint"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], fragment: str
) -> None:
    code = run_cli(*(arg.replace("{tmp}", str(tmp_path)) for arg in argv))
    assert_usage_error(capsys, code, fragment)


def test_corrupt_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("sklearn")
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"PK\x03\x04 not really a zip")
    code = run_cli("train", *QUICK, "--resume", "--out", tmp_path)
    assert_usage_error(capsys, code, "not a readable convnet checkpoint")


def test_divergence_exits_1_naming_the_epoch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("sklearn")
    argv = ["--num-train", "100", "--epochs", "3", "--no-progress", "--quiet"]
    with np.errstate(all="ignore"):
        code = run_cli("train", *argv, "--optimizer", "sgd", "--lr", "1e6", "--out", tmp_path)
    assert code == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "epoch 1, iteration 2" in err
    assert "times the first loss" in err
    assert "Traceback" not in err


def test_interrupt_exits_130_and_points_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("sklearn")

    def interrupted(self: Solver) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Solver, "train", interrupted)
    assert run_cli("train", *QUICK, "--out", tmp_path) == 130
    assert "--resume" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture) -> None:
    assert run_cli("train", "--help") == 0
    assert "--num-train" in capsys.readouterr().out


def test_bench_passes_every_argument_through(monkeypatch: pytest.MonkeyPatch) -> None:
    received = []

    def fake_main(argv: list[str]) -> int:
        received.append(argv)
        return 3

    fake = types.ModuleType("convnet.bench")
    fake.main = fake_main
    monkeypatch.setitem(sys.modules, "convnet.bench", fake)
    monkeypatch.setattr(convnet, "bench", fake, raising=False)
    assert run_cli("bench", "--help", "--quick") == 3
    assert received == [["--help", "--quick"]]


def test_python_dash_m_convnet_info() -> None:
    root = Path(convnet.__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "convnet", "info"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"convnet {convnet.__version__}" in result.stdout
    assert f"backend:  {convnet.BACKEND}" in result.stdout
