"""Tests of the GEMM-kernel decision: which OPENBLAS_CORETYPE convnet's own processes set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convnet._blas_core import (
    AVX512_FLAGS,
    blas_core_advice,
    core_to_set,
    cpu_flags,
    cpu_name,
    has_avx512,
    runs_avx2_core,
)

ROOT = Path(__file__).resolve().parents[1]
AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512 = AVX2_ONLY | set(AVX512_FLAGS)


@pytest.mark.parametrize("missing", AVX512_FLAGS)
def test_avx512_needs_all_four_flags(missing: str) -> None:
    assert has_avx512(AVX512)
    assert not has_avx512(AVX512 - {missing})
    assert core_to_set(AVX512 - {missing}, {}, ["Haswell"]) is None


def test_unknown_flags_select_nothing() -> None:
    assert has_avx512(None) is None
    assert core_to_set(None, {}, ["Haswell"]) is None
    assert blas_core_advice(None, {}, ["Haswell"]) is None


@pytest.mark.parametrize("core", ["Haswell", "haswell", "Zen", "ZEN"])
def test_avx2_core_on_avx512_cpu_gets_skylakex(core: str) -> None:
    assert runs_avx2_core(AVX512, [core])
    assert core_to_set(AVX512, {"PATH": "/bin"}, [core]) == "SkylakeX"


@pytest.mark.parametrize("core", ["SkylakeX", "Cooperlake", "SapphireRapids", "Zen7", ""])
def test_other_cores_are_never_second_guessed(core: str) -> None:
    assert core_to_set(AVX512, {}, [core]) is None
    assert blas_core_advice(AVX512, {}, [core]) is None


def test_avx2_cpu_keeps_its_avx2_core() -> None:
    assert core_to_set(AVX2_ONLY, {}, ["Haswell"]) is None
    assert blas_core_advice(AVX2_ONLY, {}, ["Haswell"]) is None


def test_no_openblas_selects_nothing() -> None:
    assert core_to_set(AVX512, {}, []) is None


@pytest.mark.parametrize("value", ["Haswell", "SkylakeX", "", "bogus"])
def test_the_users_setting_always_wins(value: str) -> None:
    assert core_to_set(AVX512, {"OPENBLAS_CORETYPE": value}, ["Haswell"]) is None


def test_advice_names_the_variable_and_the_users_setting() -> None:
    unset = blas_core_advice(AVX512, {}, ["Haswell"])
    assert unset is not None and "OPENBLAS_CORETYPE=SkylakeX" in unset
    chosen = blas_core_advice(AVX512, {"OPENBLAS_CORETYPE": "Haswell"}, ["Haswell"])
    assert chosen is not None and "OPENBLAS_CORETYPE=Haswell makes" in chosen


def test_cpu_flags_reads_the_flags_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512vl\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512vl"}
    assert cpu_flags(tmp_path / "absent") is None
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cpu_flags(cpuinfo) is None


def test_cpu_name_reads_the_model_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu\n")
    name, _, cpus = cpu_name(cpuinfo).rpartition(", ")
    assert name == "AMD EPYC"
    assert cpus.endswith(" CPUs") and int(cpus.split()[0]) >= 1
    assert cpu_name(tmp_path / "absent").endswith(cpus)


def test_importing_convnet_leaves_the_environment_alone() -> None:
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_CORETYPE"}
    code = "import os, convnet; print(os.environ.get('OPENBLAS_CORETYPE'))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "None"


# The console entry, with OpenBLAS's choice faked as Haswell where the test asks: it
# re-executes the same command line, so the child is faked alike and prints its setting.
ENTRY = """
import os, sys
import convnet._blas_core as core
if {fake_haswell}:
    core.openblas_cores = lambda: ["Haswell"]
import convnet.__main__ as entry
sys.argv = ["convnet", "--version"]
print("OPENBLAS_CORETYPE", repr(os.environ.get("OPENBLAS_CORETYPE")), flush=True)
entry.main()
"""


def run_python(code: str, coretype: str | None) -> str:
    """stdout of ``python -c code`` with OPENBLAS_CORETYPE set to ``coretype`` or unset."""
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_CORETYPE"}
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_entry(fake_haswell: bool, coretype: str | None) -> list[str]:
    stdout = run_python(ENTRY.format(fake_haswell=fake_haswell), coretype)
    return [line for line in stdout.splitlines() if line.startswith("OPENBLAS")]


@pytest.mark.skipif(not has_avx512(cpu_flags()), reason="needs a Linux CPU with AVX-512")
def test_console_entry_sets_skylakex_only_when_appropriate_and_never_overrides() -> None:
    # Faked AVX2 core, nothing set: the entry re-executes once with SkylakeX.
    assert run_entry(True, None) == ["OPENBLAS_CORETYPE None", "OPENBLAS_CORETYPE 'SkylakeX'"]
    # The user's value, empty included, is never replaced.
    assert run_entry(True, "Haswell") == ["OPENBLAS_CORETYPE 'Haswell'"]
    assert run_entry(True, "") == ["OPENBLAS_CORETYPE ''"]
    # OpenBLAS's own choice, whatever it is on this machine, unless it is an AVX2 core.
    probe = "import json, numpy, convnet._blas_core as c; print(json.dumps(c.openblas_cores()))"
    expected = ["OPENBLAS_CORETYPE None"]
    if runs_avx2_core(cpu_flags(), json.loads(run_python(probe, None))):
        expected.append("OPENBLAS_CORETYPE 'SkylakeX'")
    assert run_entry(False, None) == expected


def test_python_m_convnet_info_names_the_core_type() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "convnet", "info"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "OpenBLAS core type" in result.stdout
    assert "AVX-512:" in result.stdout
