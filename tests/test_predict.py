"""Predictions from raw images, by ``convnet predict`` and by :func:`convnet.runs.load_run`:
the same preprocessing path, no made-up label for non-finite images, and outputs that go
where they are named (devices, stdout, through symlinks)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convnet
from convnet import cli
from convnet.runs import PREPROCESSING_FILE, Preprocessing, load_run

ROOT = Path(convnet.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--num-train", "400", "--epochs", "3", "--no-progress", "--quiet"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits as scikit-learn has them (pixels 0..16), with their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.reshape(-1, 1, 8, 8), digits.target


def run_cli(*argv: str | Path) -> int:
    return cli.main([str(arg) for arg in argv])


def test_load_run_predicts_raw_images_as_convnet_predict_does(
    run: Path, tmp_path: Path, raw_digits: tuple, capsys: pytest.CaptureFixture
) -> None:
    """Issue 16, case 15: `load_model(...).predict(X)` needs X prepared as in training, and
    raw digits gave 0.78 accuracy; load_run applies the run's preprocessing.npz."""
    images, labels = raw_digits
    np.save(tmp_path / "raw.npy", images)
    capsys.readouterr()
    assert run_cli("predict", run / "model.npz", tmp_path / "raw.npy") == 0
    printed = np.array(capsys.readouterr().out.split(), dtype=np.int64)
    trained = load_run(run)
    predicted = trained.predict(images)
    assert predicted.dtype == np.int64
    np.testing.assert_array_equal(predicted, printed)
    np.testing.assert_array_equal(load_run(run / "model.npz").predict(images), printed)
    accuracy = np.mean(predicted == labels)
    unprepared = np.mean(trained.model.predict(images.astype(trained.model.dtype)) == labels)
    assert accuracy > 0.8 and accuracy > unprepared + 0.1, (accuracy, unprepared)
    probabilities = trained.predict_proba(images[:5])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-10)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), predicted[:5])
    prepared = trained.prepare(images[:5])
    np.testing.assert_array_equal(trained.predict(prepared, preprocessed=True), predicted[:5])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_images_get_no_made_up_label(
    run: Path, tmp_path: Path, raw_digits: tuple, capsys: pytest.CaptureFixture, bad: float
) -> None:
    """Issue 16, case 9: NaN or infinite images were all predicted class 0, exit 0."""
    images = raw_digits[0][:6].astype(np.float64)
    images[1, 0, 3, 3] = bad
    images[4] = bad
    np.save(tmp_path / "bad.npy", images)
    capsys.readouterr()
    assert run_cli("predict", run / "model.npz", tmp_path / "bad.npy") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("convnet: error: ")
    assert "images 1, 4 (2 of 6) hold NaN or infinite values" in captured.err
    assert len(captured.err.splitlines()) == 1
    with pytest.raises(ValueError, match=r"images 1, 4 \(2 of 6\) hold NaN"):
        load_run(run).predict(images)


def test_images_too_large_for_the_models_dtype_get_no_label(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = np.zeros((3, 1, 8, 8))
    images[2] = 1e300  # finite in float64, infinite once in the float32 model
    np.save(tmp_path / "huge.npy", images)
    assert run_cli("predict", run / "model.npz", tmp_path / "huge.npy") == 2
    assert "scores for image 2 (1 of 3) are not finite" in capsys.readouterr().err


def test_a_damaged_preprocessing_file_is_refused(run: Path, tmp_path: Path) -> None:
    for name in ("model.npz", PREPROCESSING_FILE):
        (tmp_path / name).write_bytes((run / name).read_bytes())
    np.savez(tmp_path / PREPROCESSING_FILE, scale=np.array(-1.0), mean_image=np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="scale must be positive"):
        load_run(tmp_path)
    np.savez(
        tmp_path / PREPROCESSING_FILE, scale=np.array(1.0), mean_image=np.full((1, 8, 8), np.nan)
    )
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_run(tmp_path)
    (tmp_path / PREPROCESSING_FILE).unlink()
    trained = load_run(tmp_path)
    assert trained.preprocessing is None
    with pytest.raises(ValueError, match="preprocessed=True"):
        trained.predict(np.zeros((1, 1, 8, 8)))


def test_preprocessing_round_trips(tmp_path: Path) -> None:
    mean = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    saved = Preprocessing(0.5, mean).save(tmp_path / "p.npz")
    loaded = Preprocessing.load(saved)
    assert loaded.scale == 0.5
    np.testing.assert_array_equal(loaded.mean_image, mean)
    images = np.ones((2, 3, 2, 2), dtype=np.uint8)
    expected = np.broadcast_to(0.5 - mean, images.shape)
    np.testing.assert_array_equal(loaded.apply(images, np.float32), expected)


def test_predict_writes_devices_and_symlinks_in_place(run: Path, tmp_path: Path) -> None:
    """Issue 16, case 7: `--out /dev/null` (as root) replaced the device with a file, and a
    symlinked target was replaced by a file."""
    np.save(tmp_path / "images.npy", np.zeros((3, 1, 8, 8)))
    assert run_cli("predict", run / "model.npz", tmp_path / "images.npy", "--out", os.devnull) == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    (tmp_path / "kept").mkdir()
    (tmp_path / "labels.txt").symlink_to(tmp_path / "kept" / "labels.txt")
    argv = ["predict", run / "model.npz", tmp_path / "images.npy"]
    assert run_cli(*argv, "--out", tmp_path / "labels.txt") == 0
    assert (tmp_path / "labels.txt").is_symlink()
    assert len((tmp_path / "kept" / "labels.txt").read_text().split()) == 3


@pytest.mark.skipif(not os.path.exists("/dev/stdout"), reason="needs /dev/stdout")
def test_probabilities_to_dev_stdout_are_seen(run: Path, tmp_path: Path) -> None:
    """`--probabilities /dev/stdout` wrote nothing visible."""
    np.save(tmp_path / "images.npy", np.zeros((2, 1, 8, 8)))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "convnet",
            "predict",
            str(run / "model.npz"),
            str(tmp_path / "images.npy"),
            "--probabilities",
            "/dev/stdout",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # two rows of probabilities, then two labels
    assert all(len(line.split(",")) == 10 for line in lines[:2])
