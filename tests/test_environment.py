"""One rule for every CONVNET_* environment variable: unset or empty takes the default, a
value the variable accepts is used, anything else is an error naming the variable and the
values it accepts (one line from the ``convnet`` command, ``ValueError`` in the library)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import run_module

import convnet
from convnet import _environment, _parallel

ROOT = Path(convnet.__file__).resolve().parents[1]
CHECKOUT = Path(__file__).resolve().parents[1]

FLAG = "a flag: 1, true, yes or on, or 0, false, no or off"
URL = "a URL starting with http://, https://, ftp:// or file://"
BAD_VALUES = [
    ("CONVNET_BACKEND", "bogus", "'naive', 'cython' or 'auto'"),
    ("CONVNET_NUM_THREADS", "abc", "a positive integer"),
    ("CONVNET_NUM_THREADS", "0", "a positive integer"),
    ("CONVNET_NUM_THREADS", "-3", "a positive integer"),
    ("CONVNET_NUM_THREADS", "2.5", "a positive integer"),
    ("CONVNET_NUM_THREADS", "4,2", "a positive integer"),
    ("CONVNET_PLACE_WORKERS", "sometimes", FLAG),
    ("CONVNET_PLACE_WORKERS", "2", FLAG),
    ("CONVNET_CIFAR10_URL", "not a url", URL),
    ("CONVNET_CIFAR10_URL", "gopher://mirror/cifar.tgz", URL),
    ("CONVNET_REQUIRE_EXTENSION", "perhaps", FLAG),
]


@pytest.mark.parametrize(("name", "value", "accepted"), BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_variable_and_the_accepted_values(
    tmp_path: Path, name: str, value: str, accepted: str
) -> None:
    result = run_module("info", cwd=tmp_path, **{name: value})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"convnet: error: {name} must be {accepted}, got {value!r}\n"


@pytest.mark.parametrize(("name", "value", "accepted"), BAD_VALUES)
def test_the_library_raises_value_error_when_it_reads_a_bad_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, accepted: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"^{name} must be "):
        _environment.READERS[name]()


def test_import_convnet_succeeds_and_the_first_use_refuses_bad_threads(tmp_path: Path) -> None:
    code = (
        "import convnet\n"
        "try:\n"
        "    convnet.get_num_threads()\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVNET_")}
    env.update(CONVNET_NUM_THREADS="0", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "CONVNET_NUM_THREADS must be a positive integer, got '0'\n"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CONVNET_BACKEND", " Naive ", "naive"),
        ("CONVNET_BACKEND", "", "auto"),
        ("CONVNET_NUM_THREADS", " 3 ", 3),
        ("CONVNET_NUM_THREADS", "", None),
        ("CONVNET_PLACE_WORKERS", "OFF", False),
        ("CONVNET_PLACE_WORKERS", "yes", True),
        ("CONVNET_PLACE_WORKERS", "", True),
        ("CONVNET_REQUIRE_EXTENSION", "0", False),
        ("CONVNET_REQUIRE_EXTENSION", "True", True),
        ("CONVNET_CIFAR10_URL", "file:///srv/cifar-10-python.tar.gz", None),
        ("CONVNET_DATA_DIR", "~/data", os.path.expanduser("~/data")),
    ],
)
def test_accepted_values_and_defaults(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: object
) -> None:
    monkeypatch.setenv(name, value)
    if name == "CONVNET_CIFAR10_URL":
        expected = value
    assert _environment.READERS[name]() == expected


def test_threads_come_from_the_variable_when_first_needed(
    monkeypatch: pytest.MonkeyPatch, restore_num_threads: None
) -> None:
    monkeypatch.setattr(_parallel, "_num_threads", None)
    monkeypatch.setenv("CONVNET_NUM_THREADS", "3")
    assert convnet.get_num_threads() == 3
    monkeypatch.setattr(_parallel, "_num_threads", None)
    monkeypatch.setenv("CONVNET_NUM_THREADS", "-3")
    with pytest.raises(ValueError, match="CONVNET_NUM_THREADS must be a positive integer"):
        convnet.get_num_threads()
    monkeypatch.setattr(_parallel, "_num_threads", None)
    monkeypatch.delenv("CONVNET_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "5,2")  # OpenMP's own syntax: the first count
    assert convnet.get_num_threads() == 5


def test_every_convnet_variable_the_package_reads_has_a_reader() -> None:
    """A grep of the sources: a CONVNET_ name read anywhere but through _environment would
    escape the rule."""
    names = set()
    for path in [*(ROOT / "convnet").rglob("*.py"), CHECKOUT / "setup.py"]:
        names |= set(re.findall(r"CONVNET_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    assert names and names <= set(_environment.READERS)


@pytest.mark.parametrize(
    ("threads", "shown"), [("1", "1 worker thread,"), ("3", "3 worker threads,")]
)
def test_info_counts_the_threads_in_words_that_agree(
    tmp_path: Path, threads: str, shown: str
) -> None:
    result = run_module("info", cwd=tmp_path, CONVNET_NUM_THREADS=threads)
    assert result.returncode == 0, result.stderr
    assert f"threads:  {shown}" in result.stdout
