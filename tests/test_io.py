"""The one atomic writer: whole files or none, and errors that name the user's file."""

from __future__ import annotations

from pathlib import Path

import pytest

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
