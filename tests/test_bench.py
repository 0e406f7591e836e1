"""The benchmark runs and prints its pooling table in both regimes (no timing asserted)."""

from __future__ import annotations

import pytest

from convnet import bench
from convnet.bench.torch_reference import torch_network

QUICK = ["--conv", "", "--memory", "", "--repeats", "1", "--naive", "none", "--no-torch"]


def test_pool_table_prints_steady_and_cold_for_each_dtype(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*QUICK, "--pool", "p1,p3", "--steady-calls", "2", "--cold-pause", "0"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "steady: fast" in out and "cold: fast" in out
    rows = [line for line in out.splitlines() if line.startswith("| p")]
    assert len(rows) == 4
    assert {row.split("|")[2].strip() for row in rows} == {"float32", "float64"}
    assert "OpenBLAS core" in out


def test_every_table_prints_both_regimes_and_the_algorithm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        *QUICK[:-1],
        "--conv",
        "a,c,dw",
        "--pool",
        "",
        "--transpose",
        "t1",
        "--avg-pool",
        "ap1",
        "--train-step",
        "3layer:4",
        "--dtypes",
        "float32",
        "--steady-calls",
        "1",
        "--cold-pause",
        "0",
        "--pause",
        "0",
    ]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "| im2col |" in rows["a"]
    assert "| winograd F(" in rows["c"]
    assert "| direct |" in rows["dw"]
    for name in ("a", "c", "dw", "t1", "ap1 (100, 3, 32, 32)", "3layer (4,3,32,32)"):
        cells = [cell.strip() for cell in rows[name].split("|")[1:-1]]
        assert len(cells) == len(rows_header(out, name).split("|")) - 2
    headers = [line for line in out.splitlines() if line.startswith("| ") and "cold:" in line]
    assert len(headers) == 4


def rows_header(out: str, name: str) -> str:
    """The header line of the table holding the row named ``name``."""
    header = ""
    for line in out.splitlines():
        if line.startswith("| case") or line.startswith("| training step"):
            header = line
        if line.startswith(f"| {name} |"):
            return header
    raise AssertionError(f"no row {name}")


def test_the_three_layer_net_translates_to_the_same_torch_network() -> None:
    torch = pytest.importorskip("torch")
    import numpy as np

    from convnet.models import ThreeLayerConvNet

    model = ThreeLayerConvNet(input_dim=(3, 8, 8), dtype=np.float64, seed=3, weight_scale=0.1)
    X = np.random.default_rng(0).standard_normal((4, 3, 8, 8))
    net = torch_network(model.net, torch)
    expected = net(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(model.loss(X), expected, rtol=1e-10, atol=1e-12)
