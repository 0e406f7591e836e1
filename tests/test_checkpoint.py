"""Checkpoints as untrusted files: a damaged, tampered or forged checkpoint is a ValueError
at load, never accepted to fail mid-epoch, and reading one costs at most its own size."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from forged_npz import add_deflated_zeros, claim_huge_shape, peak_bytes

from convnet import checkpoint as checkpoint_module
from convnet.models import FullyConnectedNet
from convnet.solver import CHECKPOINT_NAME, Solver

NOT_READABLE = "not a readable convnet checkpoint"


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "X_train": rng.standard_normal((40, 5)),
        "y_train": rng.integers(0, 3, 40),
        "X_val": rng.standard_normal((10, 5)),
        "y_val": rng.integers(0, 3, 10),
    }


def _model() -> FullyConnectedNet:
    return FullyConnectedNet(
        [4], input_dim=5, num_classes=3, normalization="batchnorm", dtype=np.float64, seed=0
    )


def _solver(**options: Any) -> Solver:
    settings = {"optim_config": {"learning_rate": 1e-2}, "batch_size": 10, "progress": False}
    return Solver(_model(), _data(), **{**settings, **options})


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of two epochs of adam on a batch-norm net (it has running statistics)."""
    folder = tmp_path_factory.mktemp("checkpoint")
    _solver(num_epochs=2, checkpoint_dir=folder).train()
    return folder / CHECKPOINT_NAME


def _contents(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return json.loads(str(arrays.pop("meta")[()])), arrays


def _rewrite(source: Path, target: Path, change: Callable[[dict, dict], None]) -> Path:
    meta, arrays = _contents(source)
    change(meta, arrays)
    np.savez(target, meta=np.array(json.dumps(meta)), **arrays)
    return target


def _optimizer_key(meta: dict, name: str) -> str:
    return meta["optim"]["W1"][name]["array"]


TAMPERINGS: dict[str, Callable[[dict, dict], None]] = {
    "optimizer moment of shape (1,)": lambda meta, arrays: arrays.update(
        {_optimizer_key(meta, "m"): np.zeros(1)}
    ),
    "optimizer moment of float32": lambda meta, arrays: arrays.update(
        {_optimizer_key(meta, "v"): arrays[_optimizer_key(meta, "v")].astype(np.float32)}
    ),
    "negative second moment": lambda meta, arrays: arrays.update(
        {_optimizer_key(meta, "v"): -1 - arrays[_optimizer_key(meta, "v")]}
    ),
    "NaN first moment": lambda meta, arrays: arrays[_optimizer_key(meta, "m")].fill(np.nan),
    "beta2 = 1e300": lambda meta, arrays: meta["optim"]["W1"].update(beta2={"value": 1e300}),
    "beta1 = 1": lambda meta, arrays: meta["optim"]["b1"].update(beta1={"value": 1.0}),
    "learning rate -1": lambda meta, arrays: meta["optim"]["W2"].update(
        learning_rate={"value": -1.0}
    ),
    "learning rate as text": lambda meta, arrays: meta["optim"]["W2"].update(
        learning_rate={"value": "fast"}
    ),
    "step count -1": lambda meta, arrays: meta["optim"]["W1"].update(t={"value": -1}),
    "RNG state -1": lambda meta, arrays: meta["rng_state"]["state"].update(state=-1),
    "RNG state 1.5": lambda meta, arrays: meta["rng_state"]["state"].update(state=1.5),
    "RNG has_uint32 5": lambda meta, arrays: meta["rng_state"].update(has_uint32=5),
    "RNG state not a dict": lambda meta, arrays: meta.update(rng_state=[1, 2]),
    "NaN parameter": lambda meta, arrays: arrays[meta["params"]["W1"]].fill(np.nan),
    "infinite best parameter": lambda meta, arrays: arrays[meta["best_params"]["b2"]].fill(np.inf),
    "best parameter of another shape": lambda meta, arrays: arrays.update(
        {meta["best_params"]["W1"]: np.zeros((2, 2))}
    ),
    "negative running variance": lambda meta, arrays: arrays[
        meta["buffers"][next(name for name in meta["buffers"] if "var" in name)]
    ].fill(-1.0),
    "integer parameter": lambda meta, arrays: arrays.update(
        {meta["params"]["b1"]: np.zeros(4, dtype=np.int64)}
    ),
    "epoch -1": lambda meta, arrays: meta.update(epoch=-1),
    "epoch true": lambda meta, arrays: meta.update(epoch=True),
    "epoch beyond its histories": lambda meta, arrays: meta.update(epoch=3),
    "iteration beyond its losses": lambda meta, arrays: meta.update(iteration=9),
    "accuracy 1.5": lambda meta, arrays: meta["val_acc_history"].__setitem__(0, 1.5),
    "NaN loss in the history": lambda meta, arrays: meta["loss_history"].__setitem__(0, "NaN"),
    "best accuracy not the best": lambda meta, arrays: meta.update(best_val_acc=0.0001),
    "optimizer state of an unknown parameter": lambda meta, arrays: meta["optim"].update(
        W9=meta["optim"]["W1"]
    ),
    "update rule as a number": lambda meta, arrays: meta.update(update_rule=3),
    "metadata a list": lambda meta, arrays: meta["optim"].update(W1=[1, 2]),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_a_tampered_checkpoint_is_refused_at_load(
    saved: Path, tmp_path: Path, tampering: str
) -> None:
    path = _rewrite(saved, tmp_path / CHECKPOINT_NAME, TAMPERINGS[tampering])
    with pytest.raises(ValueError, match=NOT_READABLE):
        checkpoint_module.load_checkpoint(path)
    with pytest.raises(ValueError):
        _solver(num_epochs=3, resume_from=path)


def test_the_untampered_rewrite_still_loads_and_resumes(saved: Path, tmp_path: Path) -> None:
    path = _rewrite(saved, tmp_path / CHECKPOINT_NAME, lambda meta, arrays: None)
    solver = _solver(num_epochs=3, resume_from=path)
    assert solver.epoch == 2
    solver.train()
    assert solver.epoch == 3


def _raw_meta(path: Path, text: str) -> Path:
    _, arrays = _contents(path)
    target = path.with_name("forged.npz")
    np.savez(target, meta=np.array(text), **arrays)
    return target


@pytest.mark.parametrize(
    "text",
    ["not json", "[1, 2]", "[" * 100_000 + "]" * 100_000, json.dumps({"format": "other"})],
)
def test_forged_metadata_is_refused(saved: Path, text: str) -> None:
    with pytest.raises(ValueError, match=NOT_READABLE):
        checkpoint_module.load_checkpoint(_raw_meta(saved, text))


def test_an_extra_deflated_entry_is_refused_before_it_is_inflated(
    saved: Path, tmp_path: Path
) -> None:
    """Issue 16, case 2: 4 GiB of deflated zeros were read (twice) and accepted by
    --resume; here 256 MiB of them, a few hundred KiB on disk."""
    bomb = tmp_path / CHECKPOINT_NAME
    bomb.write_bytes(saved.read_bytes())
    add_deflated_zeros(bomb)
    assert bomb.stat().st_size < 2**20

    def load() -> None:
        with pytest.raises(ValueError, match=r"inflate to .* more than the file"):
            checkpoint_module.load_checkpoint(bomb)

    assert peak_bytes(load) < 2**20


def test_an_entry_whose_header_claims_a_huge_array_is_refused_before_allocation(
    saved: Path, tmp_path: Path
) -> None:
    meta, arrays = _contents(saved)
    forged = tmp_path / CHECKPOINT_NAME
    np.savez(forged, meta=np.array(json.dumps(meta)), **arrays)
    claim_huge_shape(forged, meta["params"]["W1"])

    def load() -> None:
        with pytest.raises(ValueError, match=r"claims shape \(1000000000000,\)"):
            checkpoint_module.load_checkpoint(forged)

    assert peak_bytes(load) < 2**20


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"plain text, not an archive\n",
        b"PK\x03\x04" + bytes(40),
    ],
)
def test_files_that_are_not_archives_are_value_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(content)
    with pytest.raises(ValueError, match=NOT_READABLE):
        checkpoint_module.load_checkpoint(path)


def test_every_single_byte_flip_of_a_checkpoint_is_refused_or_loads(
    saved: Path, tmp_path: Path
) -> None:
    """The damage a disk or a transfer does: every result is a ValueError or a checkpoint
    that passes every check (a flip inside a float can give another valid number)."""
    content = saved.read_bytes()
    path = tmp_path / CHECKPOINT_NAME
    rng = np.random.default_rng(0)
    for position in rng.choice(len(content), size=300, replace=False):
        damaged = bytearray(content)
        damaged[position] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(damaged))
        try:
            checkpoint_module.load_checkpoint(path)
        except ValueError:
            pass


def test_the_epoch_is_read_from_the_metadata_alone(saved: Path) -> None:
    assert checkpoint_module.checkpoint_epoch(saved) == 2
