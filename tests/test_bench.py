"""The benchmark runs and prints its pooling table in both regimes (no timing asserted)."""

from __future__ import annotations

import pytest

from convnet import bench

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
