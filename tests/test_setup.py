"""The build script: a failed build leaves no stale kernel behind, in build/ or in place."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files setup.py needs, with the generated C source so Cython has nothing to do."""
    pytest.importorskip("Cython")
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:  # pyproject.toml's build requirement
        pytest.skip(f"setup.py needs setuptools >= 77, this is {setuptools.__version__}")
    built = all((ROOT / "convnet" / f"{name}.c").is_file() for name in ("_im2col", "_winograd"))
    if not (ROOT / "setup.py").is_file() or not built:
        pytest.skip("needs a source checkout whose kernel was built")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "convnet").mkdir()
    sources = [
        ROOT / "convnet" / name for name in ("_version.py", "__init__.py", "_environment.py")
    ]
    for pattern in ("_*.pyx", "_*.c", "_*.h"):
        sources += (ROOT / "convnet").glob(pattern)
    for source in sources:
        shutil.copy2(source, tmp_path / "convnet" / source.name)
    return tmp_path


def failing_build(checkout: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``setup.py build_ext ARGS`` with a C compiler that always fails."""
    child_env = {**os.environ, "CC": "false", "LDSHARED": "false", **env}
    child_env.pop("CONVNET_REQUIRE_EXTENSION", None)
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", *args],
        cwd=checkout,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def plant_stale_kernels(checkout: Path) -> list[Path]:
    build_lib = f"lib.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
    stale = [
        checkout / "build" / build_lib / "convnet" / f"_im2col{SUFFIX}",
        checkout / "convnet" / f"_im2col{SUFFIX}",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"an old kernel")
    return stale


def test_a_failed_build_removes_the_stale_kernels(checkout: Path) -> None:
    stale = plant_stale_kernels(checkout)
    result = failing_build(checkout, "--inplace")
    assert result.returncode == 0, result.stderr  # the fallback: install without the kernel
    assert "could not be built" in result.stderr
    assert [path for path in stale if path.exists()] == []
    assert list(checkout.glob(f"**/_im2col{SUFFIX}")) == []


@pytest.mark.parametrize(("value", "fatal"), [("1", True), ("false", False), ("0", False)])
def test_require_extension_makes_a_failed_build_fatal(
    checkout: Path, value: str, fatal: bool
) -> None:
    stale = plant_stale_kernels(checkout)
    result = failing_build(checkout, CONVNET_REQUIRE_EXTENSION=value)
    assert (result.returncode != 0) == fatal, result.stderr
    assert not stale[0].exists()  # under build/: gone even when the build is fatal
    assert stale[1].exists()  # not an in-place build: the checkout's kernel is not touched


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_a_bad_require_extension_value_stops_the_build(checkout: Path, value: str) -> None:
    result = failing_build(checkout, CONVNET_REQUIRE_EXTENSION=value)
    assert result.returncode != 0
    assert "CONVNET_REQUIRE_EXTENSION must be a flag" in result.stderr
    assert f"got {value!r}" in result.stderr


def test_the_readme_and_the_description_name_every_extension() -> None:
    if not all((ROOT / name).is_file() for name in ("setup.py", "README.md", "pyproject.toml")):
        pytest.skip("needs a source checkout")
    extensions = list(_extensions())
    assert extensions == ["_im2col", "_winograd", "_batchnorm", "_relu", "_channels_last"]
    readme = " ".join((ROOT / "README.md").read_text().split())  # lines joined
    for name in extensions:
        assert f"convnet/{name}.pyx" in readme, name
        assert f"`{name}`" in readme, name
    assert "one compiled Cython kernel" not in readme
    (description,) = re.findall(
        r'^description = "(.*)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
    )
    assert "Winograd" in description and "a compiled im2col/col2im kernel" not in description


def _extensions() -> dict[str, list[str]]:
    """setup.py's EXTENSIONS: each extension's name and the headers its build depends on."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    assigned = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(
            isinstance(target, ast.Name) and target.id == "EXTENSIONS" for target in node.targets
        )
    )
    return ast.literal_eval(assigned)


def _included(source: Path) -> set[str]:
    """The convnet headers ``source`` includes, directly or through other headers."""
    text = source.read_text()
    names = set(re.findall(r'cdef extern from "(\w+\.h)"', text))
    names |= set(re.findall(r'^\s*#include "(\w+\.h)"', text, re.MULTILINE))
    for name in set(names):
        names |= _included(source.parent / name)
    return names


def test_every_extension_depends_on_every_header_it_includes() -> None:
    """A changed header rebuilds each extension that includes it (setup.py's depends)."""
    if not (ROOT / "setup.py").is_file():
        pytest.skip("needs a source checkout")
    for name, headers in _extensions().items():
        included = _included(ROOT / "convnet" / f"{name}.pyx")
        assert sorted(headers) == sorted(f"convnet/{header}" for header in included), name


def test_one_platform_guard_decides_the_multiversioned_loops() -> None:
    """target_clones appears in _simd.h alone, and no kernel embeds C in its .pyx."""
    if not (ROOT / "setup.py").is_file():
        pytest.skip("needs a source checkout")
    sources = sorted((ROOT / "convnet").glob("_*.h")) + sorted((ROOT / "convnet").glob("_*.pyx"))
    guarded = [path.name for path in sources if "target_clones" in path.read_text()]
    assert guarded == ["_simd.h"]
    embedding = [path.name for path in sources if "cdef extern from *" in path.read_text()]
    assert embedding == []
