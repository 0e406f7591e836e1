"""The predict table of ``convnet bench``: convnet beside ONNX Runtime on the exported graph
(no timing asserted)."""

from __future__ import annotations

import pytest

from convnet import bench

QUICK = ["--only", "predict", "--repeats", "1", "--steady-calls", "1", "--no-torch"]
QUICK += ["--pause", "0", "--cold-pause", "0"]


def test_predict_table_has_a_row_per_network_and_batch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    argv = [*QUICK, "--predict", "3layer,resnet", "--predict-batches", "1,2"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| 3layer", "| resnet"))]
    assert [row.split("|")[1:3] for row in rows] == [
        [" 3layer ", " 1 "],
        [" 3layer ", " 2 "],
        [" resnet ", " 1 "],
        [" resnet ", " 2 "],
    ]
    header = next(line for line in out.splitlines() if line.startswith("| predict"))
    assert all(len(row.split("|")) == len(header.split("|")) for row in rows)


def test_predict_table_is_skipped_without_onnxruntime(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("convnet.bench.predict.load_onnxruntime", lambda: None)
    assert bench.main([*QUICK, "--predict", "3layer"]) == 0
    assert "skipped: needs onnx and onnxruntime" in capsys.readouterr().out


def test_unknown_networks_are_refused() -> None:
    with pytest.raises(SystemExit):
        bench.main([*QUICK, "--predict", "alexnet"])
