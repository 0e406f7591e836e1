"""Tests of the dataset loaders (the bundled digits, CIFAR-10 batches written here) and of
the CIFAR-10 download, from a small archive served by a file:// URL (no network)."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from fake_cifar import NAMES, write_archive

from convnet.data import (
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    CIFAR10_URL_VARIABLE,
    DATA_DIR_VARIABLE,
    DownloadError,
    cifar10_is_cached,
    default_data_dir,
    download_cifar10,
    load_cifar10,
    load_cifar10_dataset,
    load_digits_dataset,
    preprocess_cifar10,
)


def test_digits_shapes_split_and_centring() -> None:
    pytest.importorskip("sklearn")
    data = load_digits_dataset()
    sizes = {split: len(data[f"y_{split}"]) for split in ("train", "val", "test")}
    assert sizes == {"train": 1257, "val": 270, "test": 270}
    for split, size in sizes.items():
        assert data[f"X_{split}"].shape == (size, 1, 8, 8)
        assert data[f"X_{split}"].dtype == np.float32
        assert data[f"y_{split}"].dtype == np.int64
        assert set(np.unique(data[f"y_{split}"])) == set(range(10))
    assert data["mean_image"].shape == (1, 8, 8)
    np.testing.assert_allclose(data["X_train"].mean(axis=0), 0, atol=1e-6)
    raw = data["X_train"] + data["mean_image"]
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6


def test_digits_split_is_fixed_by_seed_and_disjoint() -> None:
    pytest.importorskip("sklearn")
    first, again = load_digits_dataset(), load_digits_dataset(dtype=np.float64)
    other = load_digits_dataset(seed=1)
    np.testing.assert_array_equal(first["y_val"], again["y_val"])
    np.testing.assert_allclose(first["X_train"], again["X_train"], atol=1e-6)
    assert again["X_train"].dtype == np.float64
    assert not np.array_equal(first["y_train"], other["y_train"])
    rows = {
        split: {row.tobytes() for row in first[f"X_{split}"] + first["mean_image"]}
        for split in ("train", "val", "test")
    }
    # digits holds a few duplicate images; the splits must not share many
    assert len(rows["train"] & rows["val"]) < 5 and len(rows["val"] & rows["test"]) < 5


def test_digits_refuses_bad_sizes() -> None:
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="num_validation"):
        load_digits_dataset(num_validation=1000, num_test=797)


def write_batch(path: Path, data: np.ndarray, labels: list[int], protocol: int = 2) -> None:
    batch = {b"batch_label": b"fake", b"data": data, b"labels": labels}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    """A CIFAR-10 directory with 4 images per training batch and 3 test images."""
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    rng = np.random.default_rng(0)
    for index, name in enumerate(CIFAR10_TRAIN_BATCHES):
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        write_batch(directory / name, data, [index, index + 1, 9, 0], protocol=2 + index % 4)
    write_batch(directory / CIFAR10_TEST_BATCH, np.full((3, 3072), 7, np.uint8), [3, 4, 5])
    return directory


def test_cifar_reads_fake_batches_channel_first(cifar_dir: Path) -> None:
    X_train, y_train, X_test, y_test = load_cifar10(cifar_dir)
    assert X_train.shape == (20, 3, 32, 32) and X_train.dtype == np.float32
    assert X_test.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(y_train[:4], [0, 1, 9, 0])
    np.testing.assert_array_equal(y_test, [3, 4, 5])
    assert y_train.dtype == np.int64
    first = pickle.loads((cifar_dir / "data_batch_1").read_bytes())[b"data"][0]
    # 1024 red values row by row, then green, then blue
    assert X_train[0, 0, 0, 1] == first[1]
    assert X_train[0, 0, 1, 0] == first[32]
    assert X_train[0, 1, 0, 0] == first[1024]
    assert X_train[0, 2, 31, 31] == first[3071]
    np.testing.assert_array_equal(load_cifar10(cifar_dir.parent, np.float64)[1], y_train)


def test_cifar_preprocessing_splits_and_subtracts_the_train_mean(cifar_dir: Path) -> None:
    data = load_cifar10_dataset(cifar_dir, num_training=12, num_validation=5, num_test=2)
    raw_train, raw_labels, _, _ = load_cifar10(cifar_dir)
    assert data["X_train"].shape == (12, 3, 32, 32) and data["X_val"].shape == (5, 3, 32, 32)
    assert data["X_test"].shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(data["y_val"], raw_labels[12:17])
    np.testing.assert_allclose(data["mean_image"], raw_train[:12].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(data["X_val"], raw_train[12:17] - data["mean_image"], rtol=1e-6)
    np.testing.assert_allclose(
        data["X_test"], np.broadcast_to(7 - data["mean_image"], (2, 3, 32, 32)), rtol=1e-6
    )
    assert data["X_train"].dtype == np.float32
    plain = preprocess_cifar10(
        *load_cifar10(cifar_dir), num_training=3, subtract_mean=False, num_validation=1, num_test=1
    )
    np.testing.assert_array_equal(plain["X_train"], raw_train[:3])
    with pytest.raises(ValueError, match="exceeds"):
        load_cifar10_dataset(cifar_dir, num_training=20, num_validation=1, num_test=1)
    with pytest.raises(ValueError, match="num_test"):
        load_cifar10_dataset(cifar_dir, num_training=2, num_validation=1, num_test=0)


def test_cifar_missing_directory_or_batch(cifar_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(cifar_dir)


class Evil:
    def __reduce__(self) -> tuple:
        return (print, ("arbitrary code ran",))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a pickle at all",
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}),
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
        pickle.dumps([1, 2, 3]),
        pickle.dumps({b"data": Evil(), b"labels": [0]}),
    ],
)
def test_cifar_corrupt_batch_is_a_value_error(
    cifar_dir: Path, content: bytes, capsys: pytest.CaptureFixture
) -> None:
    (cifar_dir / CIFAR10_TEST_BATCH).write_bytes(content)
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(cifar_dir)
    assert "arbitrary code ran" not in capsys.readouterr().out


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "served" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    return path, write_archive(path)


def test_download_verifies_extracts_and_reuses_the_cache(
    archive: tuple[Path, str], tmp_path: Path
) -> None:
    path, md5 = archive
    cache = tmp_path / "cache"
    batches = download_cifar10(cache, url=path.as_uri(), md5=md5, progress=False)
    assert batches == cache / "cifar-10-batches-py"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]  # no leftovers
    X_train, _, X_test, _ = load_cifar10(batches)
    assert X_train.shape == (40, 3, 32, 32) and X_test.shape == (8, 3, 32, 32)
    path.unlink()  # the next call must not fetch anything
    assert download_cifar10(cache, url=path.as_uri(), md5=md5) == batches


def test_extracted_batches_go_through_the_atomic_writer(
    archive: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is written by convnet._io.atomic_open (fsynced before its rename), and
    the cache folder is fsynced after the batches folder is renamed into it."""
    import contextlib

    from convnet import _io
    from convnet import data as data_module

    written, synced = [], []

    @contextlib.contextmanager
    def recording_writer(path):
        with _io.atomic_open(path) as handle:
            yield handle
        written.append(Path(path).name)

    def recording_sync(directory):
        synced.append(Path(directory))
        _io.fsync_directory(directory)

    monkeypatch.setattr(data_module, "atomic_open", recording_writer)
    monkeypatch.setattr(data_module, "fsync_directory", recording_sync)
    path, md5 = archive
    cache = tmp_path / "cache"
    batches = download_cifar10(cache, url=path.as_uri(), md5=md5, progress=False)
    assert sorted(written) == sorted(NAMES)
    assert synced[-1] == cache
    with tarfile.open(path) as tar:
        for name in NAMES:
            member = tar.extractfile(f"cifar-10-batches-py/{name}")
            assert (batches / name).read_bytes() == member.read()
    assert not any(p.name.endswith(".tmp") for p in batches.iterdir())


@pytest.mark.parametrize("damage", ["checksum", "missing", "truncated", "not-cifar"])
def test_a_failed_or_corrupt_download_is_an_error_and_leaves_nothing(
    archive: tuple[Path, str], tmp_path: Path, damage: str
) -> None:
    path, md5 = archive
    if damage == "checksum":
        md5 = "0" * 32
    elif damage == "missing":
        path = path.with_name("absent.tar.gz")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
    else:
        with tarfile.open(path, "w:gz") as tar:
            tar.add(__file__, arcname="../escape.py")
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"CIFAR-10|MD5") as caught:
        download_cifar10(cache, url=path.as_uri(), md5=md5, progress=False)
    assert str(path.as_uri()) in str(caught.value) or damage == "not-cifar"
    assert not cache.exists()  # the folder it made for the cache went too
    assert not (tmp_path / "escape.py").exists()


def test_download_takes_the_mirror_and_cache_from_the_environment(
    archive: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, md5 = archive
    monkeypatch.setenv(CIFAR10_URL_VARIABLE, path.as_uri())
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(tmp_path / "env-cache"))
    assert default_data_dir() == tmp_path / "env-cache"
    assert not cifar10_is_cached()
    assert download_cifar10(md5=md5, progress=False) == tmp_path / "env-cache/cifar-10-batches-py"
    assert cifar10_is_cached()
    monkeypatch.delenv(DATA_DIR_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "convnet"
