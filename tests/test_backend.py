"""Backend choice and the naive fallback: forced by the environment, or for want of the kernel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from fresh_interpreter import run_python

import convnet
from convnet import _backend
from convnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from convnet.layers import (
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)

PACKAGE_DIR = Path(convnet.__file__).resolve().parent
CONV_PARAM = {"stride": (2, 1), "pad": (1, 0)}
POOL_PARAM = {"pool_height": 3, "pool_width": 2, "stride": (2, 1)}

# Runs the fast layers three times under warnings recording, compares them with the naive
# layers, calls show_config, and prints one JSON line with what it saw.
CHILD_SCRIPT = """
import contextlib, io, json, warnings
import numpy as np
import convnet
from convnet import fast_layers, layers

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 6, 5))
w = rng.standard_normal((4, 3, 3, 2))
b = rng.standard_normal(4)
conv_param = {"stride": (2, 1), "pad": (1, 0)}
pool_param = {"pool_height": 3, "pool_width": 2, "stride": (2, 1)}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):
        out, cache = fast_layers.conv_forward_fast(x, w, b, conv_param)
        dout = rng.standard_normal(out.shape)
        grads = fast_layers.conv_backward_fast(dout, cache)
        dx_skipped, dw_only, db_only = fast_layers.conv_backward_fast(
            dout, cache, compute_dx=False
        )
        pooled, pool_cache = fast_layers.max_pool_forward_fast(x, pool_param)
        dpooled = rng.standard_normal(pooled.shape)
        dx_pool = fast_layers.max_pool_backward_fast(dpooled, pool_cache)
out_ref, cache_ref = layers.conv_forward_naive(x, w, b, conv_param)
grads_ref = layers.conv_backward_naive(dout, cache_ref)
pooled_ref, pool_cache_ref = layers.max_pool_forward_naive(x, pool_param)
same = (
    np.array_equal(out, out_ref)
    and all(np.array_equal(g, r) for g, r in zip(grads, grads_ref))
    and np.array_equal(dw_only, grads_ref[1])
    and np.array_equal(db_only, grads_ref[2])
    and np.array_equal(pooled, pooled_ref)
    and np.array_equal(dx_pool, layers.max_pool_backward_naive(dpooled, pool_cache_ref))
)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    convnet.show_config()
print(json.dumps({
    "backend": convnet.BACKEND,
    "file": convnet.__file__,
    "runtime_warnings": [
        str(item.message) for item in caught if issubclass(item.category, RuntimeWarning)
    ],
    "other_warnings": [
        str(item.message) for item in caught if not issubclass(item.category, RuntimeWarning)
    ],
    "same_as_naive": bool(same),
    "dx_skipped": dx_skipped is None,
    "show_config": printed.getvalue(),
}))
"""


def run_child_script(*, pythonpath: Path, cwd: Path, **env: str) -> dict:
    result = run_python(CHILD_SCRIPT, pythonpath=pythonpath, cwd=cwd, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def package_without_extension(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the convnet package without its compiled kernel (nor its C source)."""
    root = tmp_path_factory.mktemp("no_extension")
    shutil.copytree(
        PACKAGE_DIR,
        root / "convnet",
        ignore=shutil.ignore_patterns("_im2col*.so", "_im2col*.pyd", "_im2col.c", "__pycache__"),
    )
    assert not list((root / "convnet").glob("_im2col*.so"))
    assert not list((root / "convnet").glob("_im2col*.pyd"))
    return root


def test_forced_naive_backend_matches_naive_and_warns_once(tmp_path):
    report = run_child_script(pythonpath=PACKAGE_DIR.parent, cwd=tmp_path, CONVNET_BACKEND="naive")
    assert report["backend"] == "naive"
    assert Path(report["file"]).resolve().parent == PACKAGE_DIR
    assert report["same_as_naive"]
    assert report["dx_skipped"]
    assert len(report["runtime_warnings"]) == 1, report["runtime_warnings"]
    assert "CONVNET_BACKEND=naive" in report["runtime_warnings"][0]
    assert report["other_warnings"] == []
    assert "naive" in report["show_config"]


def test_missing_extension_falls_back_with_a_warning_naming_the_cause(
    package_without_extension,
):
    report = run_child_script(pythonpath=package_without_extension, cwd=package_without_extension)
    assert Path(report["file"]).resolve().parent == package_without_extension.resolve() / "convnet"
    assert report["backend"] == "naive"
    assert report["same_as_naive"]
    assert report["dx_skipped"]
    assert len(report["runtime_warnings"]) == 1, report["runtime_warnings"]
    message = report["runtime_warnings"][0]
    assert "convnet._im2col is not installed" in message
    assert "pip install" in message
    config_lines = report["show_config"].splitlines()
    assert any("backend:" in line and "naive" in line for line in config_lines)
    assert any(
        "threads:" in line and "unused by the naive backend" in line for line in config_lines
    )


def test_demanding_cython_without_the_extension_fails_loudly(package_without_extension):
    result = run_python(
        "import convnet.fast_layers",
        pythonpath=package_without_extension,
        cwd=package_without_extension,
        CONVNET_BACKEND="cython",
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "CONVNET_BACKEND=cython but the compiled kernel convnet._im2col" in result.stderr


def test_unknown_backend_name_is_refused(tmp_path):
    for code in ("import convnet.fast_layers", "import convnet; convnet.BACKEND"):
        result = run_python(
            code, pythonpath=PACKAGE_DIR.parent, cwd=tmp_path, CONVNET_BACKEND="gpu"
        )
        assert result.returncode != 0
        assert "CONVNET_BACKEND must be 'naive', 'cython' or 'auto', got 'gpu'" in result.stderr


def test_fallback_in_process_matches_naive_and_warns_once(monkeypatch, rng):
    monkeypatch.setattr(_backend, "kernel", None)
    monkeypatch.setattr(_backend, "naive_reason", "a reason given by the test")
    monkeypatch.setattr(_backend, "_warned", False)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    with pytest.warns(RuntimeWarning, match="a reason given by the test") as record:
        out, cache = conv_forward_fast(x, w, b, CONV_PARAM)
    assert len(record) == 1
    dout = rng.standard_normal(out.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grads = conv_backward_fast(dout, cache)
        dx_skipped, dw_only, db_only = conv_backward_fast(dout, cache, compute_dx=False)
        pooled, pool_cache = max_pool_forward_fast(x, POOL_PARAM)
        dpooled = rng.standard_normal(pooled.shape)
        dx_pool = max_pool_backward_fast(dpooled, pool_cache)
    out_ref, cache_ref = conv_forward_naive(x, w, b, CONV_PARAM)
    np.testing.assert_array_equal(out, out_ref)
    grads_ref = conv_backward_naive(dout, cache_ref)
    for grad, ref in zip(grads, grads_ref, strict=True):
        np.testing.assert_array_equal(grad, ref)
    assert dx_skipped is None
    np.testing.assert_array_equal(dw_only, grads_ref[1])
    np.testing.assert_array_equal(db_only, grads_ref[2])
    pooled_ref, pool_cache_ref = max_pool_forward_naive(x, POOL_PARAM)
    np.testing.assert_array_equal(pooled, pooled_ref)
    np.testing.assert_array_equal(dx_pool, max_pool_backward_naive(dpooled, pool_cache_ref))


def test_show_config_prints_backend_and_threads(capsys):
    convnet.show_config()
    lines = capsys.readouterr().out.splitlines()
    backend_lines = [line for line in lines if "backend:" in line]
    assert len(backend_lines) == 1 and convnet.BACKEND in backend_lines[0]
    thread_lines = [line for line in lines if "threads:" in line]
    assert len(thread_lines) == 1
    info = convnet.config_info()
    assert info["backend"] == convnet.BACKEND
    assert info["threads"] == convnet._parallel.get_num_threads() >= 1
    assert f"{info['threads']} worker threads" in thread_lines[0]


@pytest.mark.skipif(
    os.environ.get("CONVNET_REQUIRE_EXTENSION", "").strip().lower()
    in ("", "0", "false", "no", "off"),
    reason="CONVNET_REQUIRE_EXTENSION is not set: the naive fallback is allowed",
)
def test_extension_is_loaded_when_required():
    assert convnet.BACKEND == "cython", _backend.naive_reason
    assert _backend.kernel is not None


@pytest.fixture(scope="module")
def unbuilt_checkout(package_without_extension: Path, tmp_path_factory) -> Path:
    """A source checkout (setup.py beside the package) whose kernel was never built."""
    setup_script = Path(__file__).resolve().parents[1] / "setup.py"
    if not setup_script.is_file():
        pytest.skip("needs the source checkout's setup.py")
    root = tmp_path_factory.mktemp("unbuilt_checkout")
    shutil.copytree(package_without_extension / "convnet", root / "convnet")
    shutil.copy2(setup_script, root / "setup.py")
    (root / "tests").mkdir()
    shutil.copy2(Path(__file__).with_name("conftest.py"), root / "tests" / "conftest.py")
    (root / "tests" / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    return root


def run_in(root: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if k not in ("CONVNET_BACKEND", "PYTHONPATH")}
    child_env.update(env)
    return subprocess.run(
        [sys.executable, *argv],
        cwd=root,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_python_m_pytest_in_an_unbuilt_checkout_fails_with_the_fix(unbuilt_checkout: Path):
    result = run_in(unbuilt_checkout, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
    assert result.returncode == 4, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "compiled kernel is not in use" in output
    assert "python setup.py build_ext --inplace" in output
    forced = run_in(
        unbuilt_checkout,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests",
        CONVNET_BACKEND="naive",
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr


def test_python_m_convnet_in_an_unbuilt_checkout_fails_with_the_fix(unbuilt_checkout: Path):
    result = run_in(unbuilt_checkout, "-m", "convnet", "train", "--epochs", "0")
    assert result.returncode == 2
    assert result.stderr.startswith("convnet: error: the compiled kernel is not in use")
    assert "build_ext --inplace" in result.stderr and len(result.stderr.splitlines()) == 1
    info = run_in(unbuilt_checkout, "-m", "convnet", "info")
    assert info.returncode == 0
    assert "backend:  naive (the compiled kernel convnet._im2col is not installed" in info.stdout


def test_info_names_every_compiled_kernel_and_warns_about_a_missing_one(monkeypatch, capsys):
    import convnet
    from convnet import _backend

    if _backend.BACKEND != "cython":
        pytest.skip("needs the compiled kernels")
    convnet.show_config()
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "kernels:" in line]
    assert all(name in line for name in _backend.KERNELS)
    monkeypatch.setattr(_backend, "relu_kernel", None)
    convnet.show_config()
    out = capsys.readouterr().out
    assert "_relu (ReLU) did not load: ReLU runs in numpy" in out


PRIVATE_MODULES = sorted(
    path.stem for path in PACKAGE_DIR.glob("_*.py") if path.stem not in ("__init__", "__main__")
)


@pytest.mark.parametrize("module", PRIVATE_MODULES)
def test_private_modules_import_no_public_module(module, tmp_path):
    """Imports flow one way: public modules build on private ones, never the reverse
    (``import convnet`` loads ``convnet._parallel``, which must not load ``distributed``)."""
    code = (
        "import importlib, sys\n"
        f"importlib.import_module('convnet.{module}')\n"
        "loaded = [name for name in sys.modules if name.startswith('convnet.')]\n"
        "print(sorted(name for name in loaded if not name.split('.')[1].startswith('_')))\n"
    )
    result = run_python(code, pythonpath=PACKAGE_DIR.parent, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
