"""``convnet export``, and ``convnet predict`` / ``evaluate`` of an ``.onnx`` graph: the
same labels and accuracy as the run's model.npz, with the preprocessing in the graph
(``--with-preprocessing``) or beside it."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest

from convnet import cli
from convnet.runs import load_run

onnx = pytest.importorskip("onnx")
QUICK = ["--num-train", "100", "--epochs", "1", "--no-progress", "--quiet"]


def run_cli(*argv: str | Path) -> int:
    return cli.main([str(arg) for arg in argv])


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained ThreeLayerConvNet run on the digits, and 40 raw digit images beside it."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from sklearn.datasets import load_digits

    out = tmp_path_factory.mktemp("onnx_run")
    assert run_cli("train", *QUICK, "--num-filters", "4", "--hidden-dim", "20", "--out", out) == 0
    np.save(out / "raw.npy", load_digits().images[:40].reshape(-1, 1, 8, 8))
    return out


def printed_labels(capsys: pytest.CaptureFixture, *argv: str | Path) -> np.ndarray:
    capsys.readouterr()
    assert run_cli("predict", *argv) == 0
    return np.array(capsys.readouterr().out.split(), dtype=np.int64)


def test_export_and_predict_from_the_graph(run_folder: Path, capsys: pytest.CaptureFixture) -> None:
    expected = printed_labels(capsys, run_folder / "model.npz", run_folder / "raw.npy")
    graph = run_folder / "model.onnx"
    assert run_cli("export", run_folder / "model.npz", graph) == 0
    assert f"wrote {graph} (opset 17, float32" in capsys.readouterr().out
    # the graph takes prepared images: predict applies the preprocessing.npz beside it
    np.testing.assert_array_equal(printed_labels(capsys, graph, run_folder / "raw.npy"), expected)
    proto = onnx.load(graph)
    assert [node.op_type for node in proto.graph.node][:2] == ["Conv", "MaxPool"]


def test_with_preprocessing_the_graph_takes_raw_images(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = printed_labels(capsys, run_folder / "model.npz", run_folder / "raw.npy")
    graph = tmp_path / "raw.onnx"  # no preprocessing.npz beside it: the graph holds it
    assert run_cli("export", run_folder / "model.npz", graph, "--with-preprocessing") == 0
    assert "takes raw images" in capsys.readouterr().out
    np.testing.assert_array_equal(printed_labels(capsys, graph, run_folder / "raw.npy"), expected)
    run = load_run(graph)
    saved = load_run(run_folder)
    assert run.preprocessing.scale == saved.preprocessing.scale
    np.testing.assert_array_equal(run.preprocessing.mean_image, saved.preprocessing.mean_image)
    onnxruntime = pytest.importorskip("onnxruntime")
    raw = np.load(run_folder / "raw.npy").astype(np.float32)
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    scores = session.run(None, {"input": raw})[0]
    np.testing.assert_array_equal(np.argmax(scores, axis=1), expected)


def test_evaluate_a_graph_reports_the_run_s_accuracy(
    run_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    summary = json.loads((run_folder / "summary.json").read_text())
    for name, options in (("plain.onnx", []), ("raw.onnx", ["--with-preprocessing"])):
        assert run_cli("export", run_folder / "model.npz", run_folder / name, *options) == 0
        capsys.readouterr()
        assert run_cli("evaluate", run_folder / name) == 0
        assert f"test accuracy {summary['test_accuracy']:.4f}" in capsys.readouterr().out


def assert_usage_error(capsys: pytest.CaptureFixture, code: int, *fragments: str) -> None:
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("convnet: error:") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_export_errors_are_one_line(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = run_folder / "model.npz"
    (tmp_path / "model.npz").write_bytes(model.read_bytes())  # no preprocessing.npz beside
    code = run_cli("export", tmp_path / "model.npz", tmp_path / "x.onnx", "--with-preprocessing")
    assert_usage_error(capsys, code, "no preprocessing.npz")
    assert_usage_error(capsys, run_cli("export", tmp_path / "x.onnx", tmp_path / "y.onnx"), "ONNX")
    code = run_cli("export", model, tmp_path / "none" / "x.onnx")
    assert_usage_error(capsys, code, "cannot export")
    assert_usage_error(
        capsys, run_cli("export", model, tmp_path / "x.onnx", "--opset", "3"), "opset"
    )
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    code = run_cli("predict", tmp_path / "bad.onnx", run_folder / "raw.npy")
    assert_usage_error(capsys, code, "not an ONNX model")

    assert run_cli("export", model, tmp_path / "plain.onnx") == 0
    real_import = builtins.__import__

    def without_onnx(name: str, *args: object, **kwargs: object) -> object:
        if name == "onnx":
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnx)
    code = run_cli("export", model, tmp_path / "x.onnx")
    assert_usage_error(capsys, code, "pip install")
    code = run_cli("predict", tmp_path / "plain.onnx", run_folder / "raw.npy")
    assert_usage_error(capsys, code, "needs the onnx package")
