"""Tests of the ``convnet`` command and of the plots it writes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from fake_cifar import write_archive, write_batches

import convnet
from convnet import cli, plots
from convnet.cli import errors as cli_errors
from convnet.cli import options as cli_options
from convnet.cli import run_folder
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
    history.update(epoch_loss_history=[1.9, 0.65], val_loss_history=[2.0, 0.9])
    assert is_png(plot_curves(history, tmp_path / "full.png", test_accuracy=0.68))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "full.png"]


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


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run that tests only read."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("shared_run")
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
    assert model.fresh_masks  # trained with fresh (seeded) masks, not CS231n's fixed ones
    assert is_png(tmp_path / "filters.png")


def test_train_on_cifar10_batches(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_batches(tmp_path, label=1)
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
        (["fly"], "invalid choice"),
        (["train", "--data-dir", "{tmp}", "--out", "{tmp}"], "--dataset cifar10"),
        (["train", "--download", "--out", "{tmp}"], "--dataset cifar10"),
        (["evaluate", "{tmp}/none.npz"], "no model file"),
        (["predict", "{tmp}/none.npz", "{tmp}/x.npy"], "no model file"),
        (["train", "--epochs", "-1"], "--epochs"),
        (["train", "--lr", "abc"], "--lr"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--lr-decay", "1.5"], "--lr-decay"),
        (["train", "--model", "resnet50"], "--model"),
        (["train", "--hidden-dims", "10,x"], "--hidden-dims"),
        (["train", "--dataset", "cifar10", "--out", "{tmp}/o"], "--data-dir"),
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


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--normalization", "batchnorm"], ["--normalization", "--model fc-net", "not"]),
        (["--dropout", "0.5"], ["--dropout", "fc-net", "vgg", "three-layer-convnet"]),
        (["--model", "resnet", "--dropout", "0.5"], ["--dropout", "not resnet"]),
        (["--model", "fc-net", "--num-filters", "4"], ["--num-filters", "three-layer-convnet"]),
        (["--model", "vgg", "--hidden-dim", "20"], ["--hidden-dim", "not vgg"]),
        (["--hidden-dims", "10"], ["--hidden-dims", "fc-net"]),
        (["--model", "resnet", "--filter-size", "5"], ["--filter-size"]),
        (["--weight-scale", "0.1"], ["--weight-scale", "--init normal"]),
    ],
)
def test_options_the_model_does_not_take_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], fragments: list[str]
) -> None:
    code = run_cli("train", *QUICK, *argv, "--out", tmp_path / "out")
    assert_usage_error(capsys, code, *fragments)
    assert not (tmp_path / "out").exists()


def test_options_of_the_resumed_model_are_checked(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--resume", "--epochs", "2", "--no-progress", "--out", trained_run]
    code = run_cli("train", *argv, "--normalization", "layernorm")
    assert_usage_error(capsys, code, "--normalization", "not three-layer-convnet")
    code = run_cli("train", *argv, "--weight-scale", "0.05")  # the run's init is "he"
    assert_usage_error(capsys, code, "--weight-scale", "--init he")


def test_user_errors_turns_only_user_errors_into_usage_errors() -> None:
    with (
        pytest.raises(cli.UsageError, match=r"^reading x: bad value$"),
        cli_errors.user_errors("reading x: "),
    ):
        raise ValueError("bad value")
    with pytest.raises(cli.UsageError, match="no such file"), cli_errors.user_errors():
        raise FileNotFoundError("no such file")
    for bug in (TypeError("bug"), KeyError("bug"), AttributeError("bug"), ZeroDivisionError()):
        with pytest.raises(type(bug)), cli_errors.user_errors():
            raise bug
    with pytest.raises(cli.UsageError), cli_errors.user_errors(kinds=(KeyError,)):
        raise KeyError("asked for")


def test_a_bug_is_not_disguised_as_a_user_error(
    shared_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convnet import models, solver

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug in convnet")

    with monkeypatch.context() as patch:
        patch.setattr(models.ThreeLayerConvNet, "__init__", broken)
        with pytest.raises(TypeError, match="a bug in convnet"):
            run_cli("train", *QUICK, "--out", tmp_path)
    monkeypatch.setattr(solver, "evaluate", broken)
    with pytest.raises(TypeError, match="a bug in convnet"):
        run_cli("evaluate", shared_run / "model.npz")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("preprocessing-not-a-zip", "not a readable preprocessing file"),
        ("preprocessing-without-mean", "mean_image"),
        ("images-not-a-zip", "cannot read the images"),
        ("options-bad-value", "--hidden-dim"),
        ("labels-into-a-missing-folder", "absent/labels.npy"),
    ],
)
def test_damaged_files_are_one_line_errors(
    shared_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, damage: str, fragment: str
) -> None:
    for name in ("model.npz", cli.PREPROCESSING_FILE, cli.OPTIONS_FILE):
        (tmp_path / name).write_bytes((shared_run / name).read_bytes())
    images = tmp_path / "images.npy"
    np.save(images, np.zeros((2, 1, 8, 8)))
    argv = ["predict", tmp_path / "model.npz", images]
    if damage == "preprocessing-not-a-zip":
        (tmp_path / cli.PREPROCESSING_FILE).write_bytes(b"PK\x03\x04 not a zip")
    elif damage == "preprocessing-without-mean":
        np.savez(tmp_path / cli.PREPROCESSING_FILE, scale=1.0)
    elif damage == "images-not-a-zip":
        images.write_bytes(b"PK\x03\x04 not a zip")
    elif damage == "options-bad-value":
        options = json.loads((tmp_path / cli.OPTIONS_FILE).read_text())
        (tmp_path / cli.OPTIONS_FILE).write_text(json.dumps({**options, "hidden_dim": "abc"}))
        argv = ["evaluate", tmp_path / "model.npz"]
    else:
        argv += ["--out", tmp_path / "absent" / "labels.npy"]
    capsys.readouterr()
    assert_usage_error(capsys, run_cli(*argv), fragment)  # the user's names, not temporaries


def test_train_help_states_every_default_truthfully(capsys: pytest.CaptureFixture) -> None:
    assert run_cli("train", "--help") == 0
    epilog = capsys.readouterr().out.split("defaults by dataset and model")[1]
    lines = [line.strip() for line in epilog.splitlines()]
    common_line = next(line for line in lines if line.startswith("every dataset and model"))
    assert common_line.startswith("every dataset and model, unless listed above:")

    def flags(text: str) -> dict[str, str]:
        words = text.split(":", 1)[1].split()
        return dict(zip(words[::2], words[1::2], strict=True))

    common = flags(common_line)
    assert (common.pop("--dataset"), common.pop("--model")) == ("digits", "three-layer-convnet")
    assert common["--reg"] == "0"
    for (dataset, model), listed in cli_options.DEFAULTS.items():
        shown = {**common, **flags(":" + lines[lines.index(f"{dataset}, {model}:") + 1])}
        args = cli_options.build_parser().parse_args(
            ["train", "--dataset", dataset, "--model", model]
        )
        options, _ = cli_options.resolve_options(args, {})
        for flag, text in shown.items():
            assert cli_options.format_default(options[flag[2:].replace("-", "_")]) == text, flag
        assert set(listed) <= {flag[2:].replace("-", "_") for flag in shown}


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


def test_an_interrupt_before_the_first_checkpoint_says_nothing_was_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, case 5: it said "checkpoint.npz holds epoch 0: continue with ... --resume"
    and left the folder behind, with runs/latest pointing at it."""
    pytest.importorskip("sklearn")

    def interrupted(self: Solver) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Solver, "train", interrupted)
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", *QUICK) == 130
    err = capsys.readouterr().err
    assert "interrupted in epoch 1; nothing was kept" in err and "--resume" not in err
    assert len(err.strip().splitlines()) == 1
    assert list((tmp_path / "runs").iterdir()) == []  # no run folder, no runs/latest
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("mine\n")
    assert run_cli("train", *QUICK, "--out", empty) == 130
    assert [path.name for path in empty.iterdir()] == ["notes.txt"]


def test_help_exits_0_and_shows_every_datasets_defaults(capsys: pytest.CaptureFixture) -> None:
    assert run_cli("train", "--help") == 0
    out = capsys.readouterr().out
    assert "--num-train" in out
    assert "cifar10, three-layer-convnet:" in out and "--filter-size 7" in out
    assert "digits, fc-net:" in out and "--hidden-dims 100,100" in out


def test_bare_convnet_prints_the_help(capsys: pytest.CaptureFixture) -> None:
    assert run_cli() == 0
    out = capsys.readouterr().out
    assert "usage: convnet" in out and "evaluate" in out and "predict" in out


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


def run_module(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m convnet ARGV`` in a fresh interpreter that imports this convnet."""
    root = Path(convnet.__file__).resolve().parents[1]
    child_env = {**os.environ, "PYTHONPATH": str(root), **env}
    return subprocess.run(
        [sys.executable, "-m", "convnet", *argv],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "env", "recorded"),
    [
        ([], {}, "auto"),
        (["--conv-algorithm", "im2col"], {}, "im2col"),
        ([], {"CONVNET_CONV_ALGORITHM": "winograd"}, "winograd"),
    ],
)
def test_the_convolution_algorithm_that_ran_is_recorded(
    tmp_path: Path, argv: list[str], env: dict[str, str], recorded: str
) -> None:
    result = run_module("train", *QUICK, *argv, "--out", "run", cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    options = json.loads((tmp_path / "run" / "options.json").read_text())
    assert options["conv_algorithm"] == recorded


def test_a_bad_conv_algorithm_variable_is_one_line(tmp_path: Path) -> None:
    result = run_module("train", *QUICK, cwd=tmp_path, CONVNET_CONV_ALGORITHM="fast")
    assert result.returncode == 2
    assert result.stderr.startswith("convnet: error: CONVNET_CONV_ALGORITHM must be")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("value", ["bogus", "gpu "])
def test_a_bad_backend_name_is_one_line(tmp_path: Path, value: str) -> None:
    result = run_module("info", cwd=tmp_path, CONVNET_BACKEND=value)
    assert result.returncode == 2
    assert result.stderr.startswith("convnet: error: CONVNET_BACKEND must be")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_info_into_a_closed_pipe_prints_no_error(tmp_path: Path) -> None:
    root = Path(convnet.__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "convnet", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=tmp_path,
    )
    process.stdout.close()  # the reader has gone, as `head -1` after its line
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) in (0, cli.EXIT_BROKEN_PIPE)
    assert stderr == ""


def test_a_finished_run_is_left_alone_by_resume(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    before = {path.name: path.read_bytes() for path in trained_run.iterdir()}
    assert run_cli("train", "--resume", "--no-progress", "--out", trained_run) == 0
    assert "nothing left to train" in capsys.readouterr().out
    assert {path.name: path.read_bytes() for path in trained_run.iterdir()} == before


def _run_folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.iterdir()}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--num-filters", "8"], "--num-filters 8 differs from the resumed run's 4"),
        (["--optimizer", "sgd"], "--optimizer sgd differs from the resumed run's adam"),
        (["--dtype", "float64"], "--dtype float64 differs from the resumed run's float32"),
    ],
)
def test_a_rejected_resume_leaves_the_run_folder_alone(
    trained_run: Path, capsys: pytest.CaptureFixture, argv: list[str], fragment: str
) -> None:
    os.utime(trained_run / cli.OPTIONS_FILE, ns=(0, 0))  # so that any rewrite shows
    os.utime(trained_run / cli.PREPROCESSING_FILE, ns=(0, 0))
    before = _run_folder_state(trained_run)
    code = run_cli(
        "train", "--resume", "--epochs", "2", "--no-progress", "--out", trained_run, *argv
    )
    assert_usage_error(capsys, code, fragment)
    assert _run_folder_state(trained_run) == before


def test_a_corrupt_checkpoint_leaves_the_run_folder_alone(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    (trained_run / CHECKPOINT_NAME).write_bytes(b"PK\x03\x04 damaged")
    before = _run_folder_state(trained_run)
    code = run_cli("train", "--resume", "--epochs", "2", "--no-progress", "--out", trained_run)
    assert_usage_error(capsys, code, "not a readable convnet checkpoint")
    assert _run_folder_state(trained_run) == before


def test_resuming_into_a_new_out_folder_creates_nothing_when_rejected(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere"
    argv = ["--resume", trained_run / CHECKPOINT_NAME, "--out", elsewhere, "--num-filters", "8"]
    assert_usage_error(capsys, run_cli("train", "--epochs", "2", *argv), "differs from the resumed")
    assert not elsewhere.exists()


def test_output_files_take_the_umask(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    previous = os.umask(0o027)
    try:
        assert run_cli("train", *QUICK, "--num-filters", "2", "--out", tmp_path) == 0
    finally:
        os.umask(previous)
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_evaluate_reports_the_test_accuracy_the_summary_recorded(
    shared_run: Path, capsys: pytest.CaptureFixture
) -> None:
    summary = json.loads((shared_run / "summary.json").read_text())
    capsys.readouterr()
    assert run_cli("evaluate", shared_run / "model.npz") == 0
    out = capsys.readouterr().out
    assert f"test accuracy {summary['test_accuracy']:.4f}" in out
    assert f"loss {summary['test_loss']:.4f}" in out
    assert f"the {summary['test_images']} test images of digits" in out


def test_evaluate_without_options_needs_a_dataset(
    shared_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "model.npz").write_bytes((shared_run / "model.npz").read_bytes())
    assert_usage_error(capsys, run_cli("evaluate", tmp_path / "model.npz"), "--dataset")
    assert run_cli("evaluate", tmp_path / "model.npz", "--dataset", "digits") == 0
    assert "test accuracy" in capsys.readouterr().out


def test_predict_writes_labels_and_probabilities(
    shared_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from sklearn.datasets import load_digits

    from convnet.data import load_digits_dataset

    model = load_model(shared_run / "model.npz")
    raw = load_digits().images[:60]  # pixels 0..16, as the dataset has them
    np.save(tmp_path / "raw.npy", raw.reshape(-1, 1, 8, 8))
    capsys.readouterr()
    assert run_cli("predict", shared_run / "model.npz", tmp_path / "raw.npy") == 0
    printed = np.array(capsys.readouterr().out.split(), dtype=np.int64)
    with np.load(shared_run / "preprocessing.npz") as saved:
        scale, mean_image = saved["scale"], saved["mean_image"]
    assert scale == 1 / 16 and mean_image.dtype == model.dtype
    # the run's preprocessing as predict documents it: scale, then subtract the mean image
    dtype = model.dtype.type
    prepared = raw.reshape(-1, 1, 8, 8).astype(dtype) * dtype(scale) - mean_image
    assert printed.shape == (60,)
    np.testing.assert_array_equal(printed, model.predict(prepared))

    dataset = load_digits_dataset()
    np.save(tmp_path / "ready.npy", dataset["X_test"])
    argv = ["predict", shared_run / "model.npz", tmp_path / "ready.npy", "--no-preprocessing"]
    argv += ["--out", tmp_path / "labels.npy", "--probabilities", tmp_path / "p.csv"]
    assert run_cli(*argv) == 0
    labels = np.load(tmp_path / "labels.npy")
    np.testing.assert_array_equal(labels, model.predict(dataset["X_test"]))
    assert labels.dtype == np.int64
    probabilities = np.loadtxt(tmp_path / "p.csv", delimiter=",")
    assert probabilities.shape == (len(labels), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), labels)


@pytest.mark.parametrize(
    ("images", "fragment"),
    [
        (np.zeros((2, 3, 8, 8)), "trained on images (1, 8, 8)"),
        (np.zeros((2, 8, 8)), "(N, C, H, W)"),
        (np.zeros((2, 1, 8, 8), dtype=complex), "real numbers"),
        (np.zeros((2, 1, 8, 8), dtype=bool), "real numbers"),
        (np.array([{"a": 1}], dtype=object), "cannot read the images"),
    ],
)
def test_predict_refuses_images_that_do_not_fit(
    shared_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    images: np.ndarray,
    fragment: str,
) -> None:
    np.save(tmp_path / "bad.npy", images, allow_pickle=True)
    code = run_cli("predict", shared_run / "model.npz", tmp_path / "bad.npy")
    assert_usage_error(capsys, code, fragment)


def test_runs_go_to_new_folders_and_latest_points_at_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_folder, "timestamp", lambda seconds=None: "2026-11-30_22-31-05")
    small = [*QUICK, "--num-filters", "2"]
    assert run_cli("train", *small) == 0
    assert "1 epoch in" in capsys.readouterr().out
    assert run_cli("train", *small, "--seed", "3") == 0  # the same second
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [
        "2026-11-30_22-31-05",
        "2026-11-30_22-31-05_2",
        "latest",
    ]
    assert (runs / "latest").is_symlink()
    assert (runs / "latest").resolve() == (runs / "2026-11-30_22-31-05_2").resolve()
    assert json.loads((runs / "latest/summary.json").read_text())["options"]["seed"] == 3
    assert run_cli("train", "--resume", "--epochs", "2", "--no-progress", "--quiet") == 0
    resumed = json.loads((runs / "2026-11-30_22-31-05_2/summary.json").read_text())
    assert resumed["epochs"] == 2 and resumed["options"]["seed"] == 3


def test_latest_is_a_pointer_file_where_symlinks_are_impossible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)

    def no_symlinks(*args: object, **kwargs: object) -> None:
        raise OSError("symbolic links are not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    old = tmp_path / "runs" / "latest"
    old.mkdir(parents=True)
    (old / "summary.json").write_text("{}")  # a run of an older convnet
    assert run_cli("train", *QUICK, "--num-filters", "2") == 0
    latest = tmp_path / "runs" / "latest"
    assert latest.is_file()
    run = tmp_path / "runs" / latest.read_text().strip()
    assert (run / "model.npz").is_file()
    assert len([p for p in (tmp_path / "runs").iterdir() if p.is_dir()]) == 2  # old one moved
    capsys.readouterr()
    assert run_cli("evaluate", "runs/latest/model.npz") == 0
    assert "test accuracy" in capsys.readouterr().out


def test_cifar10_download_through_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("matplotlib")
    from convnet import data

    archive = tmp_path / "cifar-10-python.tar.gz"
    monkeypatch.setattr(data, "CIFAR10_MD5", write_archive(archive, images_per_batch=10))
    monkeypatch.setenv(data.CIFAR10_URL_VARIABLE, archive.as_uri())
    monkeypatch.setenv(data.DATA_DIR_VARIABLE, str(tmp_path / "cache"))
    small = ["--filter-size", "3", "--num-filters", "2", "--hidden-dim", "4", "--num-val", "5"]
    argv = ["train", "--dataset", "cifar10", *small, "--epochs", "1", "--no-progress", "--quiet"]
    assert_usage_error(capsys, run_cli(*argv, "--out", tmp_path / "o"), "--download")
    assert run_cli(*argv, "--download", "--num-train", "40", "--out", tmp_path / "run") == 0
    assert (tmp_path / "cache/cifar-10-batches-py/test_batch").is_file()
    capsys.readouterr()
    code = run_cli(*argv, "--num-train", "50", "--out", tmp_path / "bad")
    assert_usage_error(capsys, code, "--num-train 50", "--num-val 5", "there are 50")
    archive.unlink()  # from now on the cache serves
    assert run_cli(*argv, "--num-train", "40", "--out", tmp_path / "again") == 0
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    capsys.readouterr()
    assert run_cli("evaluate", tmp_path / "run/model.npz") == 0
    assert f"test accuracy {summary['test_accuracy']:.4f}" in capsys.readouterr().out
