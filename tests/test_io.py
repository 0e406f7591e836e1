"""The one atomic writer: whole files or none, and errors that name the user's file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import convnet
from convnet._io import atomic_open, write_text


def test_a_missing_folder_is_reported_with_the_target_name(tmp_path: Path) -> None:
    target = tmp_path / "absent" / "labels.npy"
    with pytest.raises(FileNotFoundError) as caught:
        write_text(target, "1\n")
    assert caught.value.filename == str(target)
    assert str(target) in str(caught.value) and ".tmp" not in str(caught.value)


def test_a_target_that_is_a_folder_is_reported_with_its_name(tmp_path: Path) -> None:
    target = tmp_path / "labels.npy"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write_text(target, "1\n")
    assert caught.value.filename == str(target) and ".tmp" not in str(caught.value)
    assert [path.name for path in tmp_path.iterdir()] == ["labels.npy"]  # no temporary left


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path: Path) -> None:
    target = write_text(tmp_path / "summary.json", "old\n")
    with pytest.raises(RuntimeError, match="half-way"), atomic_open(target) as handle:
        handle.write(b"new, but not whole")
        raise RuntimeError("half-way")
    assert target.read_text() == "old\n"
    assert [path.name for path in tmp_path.iterdir()] == ["summary.json"]


def test_a_symlink_is_written_through_to_its_target(tmp_path: Path) -> None:
    target = write_text(tmp_path / "real.csv", "old\n")
    link = tmp_path / "link.csv"
    link.symlink_to("real.csv")
    chain = tmp_path / "chain.csv"
    chain.symlink_to(link)
    write_text(chain, "new\n")
    assert link.is_symlink() and chain.is_symlink()
    assert target.read_text() == "new\n"
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "sub" / "made.csv")
    (tmp_path / "sub").mkdir()
    write_text(dangling, "made\n")
    assert dangling.is_symlink() and (tmp_path / "sub" / "made.csv").read_text() == "made\n"


def test_dev_null_stays_a_device() -> None:
    write_text(os.devnull, "discarded\n")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert not any(name.startswith(".null.") for name in os.listdir(os.path.dirname(os.devnull)))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_is_written_to_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_text(fifo, "through the pipe\n")
    reader.join(timeout=30)
    assert received == [b"through the pipe\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


WRITE_TO_STDOUT = (
    "from convnet._io import write_text\n"
    "print('before', flush=False)\n"
    "write_text('/dev/stdout', 'written\\n')\n"
    "print('after')\n"
)


@pytest.mark.skipif(not os.path.exists("/dev/stdout"), reason="needs /dev/stdout")
def test_dev_stdout_is_written_in_order_to_a_pipe_and_to_a_redirected_file(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(convnet.__file__).resolve().parents[1])}
    command = [sys.executable, "-c", WRITE_TO_STDOUT]
    piped = subprocess.run(command, capture_output=True, env=env, timeout=60, check=True)
    assert piped.stdout == b"before\nwritten\nafter\n"
    redirected = tmp_path / "out.txt"
    with redirected.open("wb") as handle:
        subprocess.run(command, stdout=handle, env=env, timeout=60, check=True)
    assert redirected.read_bytes() == b"before\nwritten\nafter\n"
    assert [path.name for path in tmp_path.iterdir()] == ["out.txt"]
