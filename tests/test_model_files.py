"""Model files as untrusted input (issue 16, cases 2, 9, 10 and 11): loading costs at most
about the file's size, checked from the headers and the architecture before any data is
read; damaged or forged files are a ValueError (one line from the command); models with
NaN or infinite weights or negative running variances are refused; nothing suggests
``allow_pickle``."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from forged_npz import add_deflated_zeros, claim_huge_shape, peak_bytes

from convnet import cli, nn
from convnet.models import FullyConnectedNet, ThreeLayerConvNet
from convnet.serialization import load_model, save_model

META = "__convnet_meta__"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A batch-norm net (it has running statistics), saved."""
    model = FullyConnectedNet([5], input_dim=6, normalization="batchnorm", seed=0)
    return save_model(model, tmp_path / "model.npz")


def _rewrite(path: Path, change: Callable[[dict, dict], None]) -> Path:
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop(META)[()]))
    change(meta, arrays)
    np.savez(path, **{META: np.array(json.dumps(meta))}, **arrays)
    return path


def _refused_cheaply(path: Path, match: str) -> None:
    def load() -> None:
        with pytest.raises(ValueError, match=match):
            load_model(path)

    assert peak_bytes(load) < 2**20


# --- case 2: the cost of loading is bounded by the file's size -------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"hidden_dims": [4_000_000], "input_dim": 64},  # the reported 7.6 KB file: 1 GB of W1
        {"hidden_dims": [10**12], "input_dim": 10**6},  # beyond memory: once a MemoryError
    ],
)
def test_an_architecture_larger_than_its_arrays_is_refused_before_it_is_built(
    saved: Path, config: dict
) -> None:
    _rewrite(saved, lambda meta, arrays: meta["config"].update(config))
    _refused_cheaply(saved, r"does not match its FullyConnectedNet config|needs shape")


def test_a_composed_network_larger_than_its_arrays_is_refused_before_it_is_built(
    tmp_path: Path,
) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    path = save_model(nn.Classifier(net, input_dim=(4,), seed=0), tmp_path / "model.npz")

    def widen(meta: dict, arrays: dict) -> None:
        meta["config"]["net"]["modules"][1]["out_features"] = 40_000_000

    _rewrite(path, widen)
    _refused_cheaply(path, r"needs shape \(4, 40000000\)")


def test_an_extra_deflated_entry_is_refused_before_it_is_inflated(saved: Path) -> None:
    """A 4 MB file with 4 GiB of deflated zeros was read whole before "unexpected entries";
    here 256 MiB of them."""
    add_deflated_zeros(saved)
    assert saved.stat().st_size < 2**20
    _refused_cheaply(saved, r"inflate to .* more than the file")


def test_an_entry_whose_header_claims_a_huge_array_is_refused_before_allocation(
    saved: Path,
) -> None:
    claim_huge_shape(saved, "W1", itemsize=4)
    _refused_cheaply(saved, r"claims shape \(1000000000000,\)")


# --- case 9: models that would predict nonsense -----------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("W1", np.nan, "W1 holds NaN or infinite values"),
        ("b2", np.inf, "b2 holds NaN or infinite values"),
        ("gamma1", -np.inf, "gamma1 holds NaN or infinite values"),
        ("running_mean1", np.nan, "running_mean1 holds NaN"),
        ("running_var1", -0.5, "running variance running_var1 has negative values"),
    ],
)
def test_a_model_with_non_finite_weights_or_negative_variances_is_refused(
    saved: Path, name: str, value: float, match: str
) -> None:
    """They loaded, and predicted class 0 for every image with exit 0."""
    _rewrite(saved, lambda meta, arrays: arrays[name].flat.__setitem__(0, value))
    with pytest.raises(ValueError, match=match):
        load_model(saved)


# --- case 10: damaged or forged files are a ValueError ---------------------------------------


def test_a_sequential_nested_500_deep_is_a_value_error(saved: Path) -> None:
    """It raised RecursionError (written by hand: json.dumps itself refuses the depth)."""
    linear = '{"type": "Linear", "in_features": 6, "out_features": 10}'
    net = '{"type": "Sequential", "modules": [' * 500 + linear + "]}" * 500
    config = f'{{"net": {net}, "input_dim": [6]}}'
    text = f'{{"architecture": "Classifier", "format_version": 1, "config": {config}}}'
    with np.load(saved) as archive:
        arrays = {name: archive[name] for name in archive.files if name != META}
    np.savez(saved, **{META: np.array(text)}, **arrays)
    with pytest.raises(ValueError, match=r"invalid Classifier config|unreadable model metadata"):
        load_model(saved)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda meta: meta.update(architecture=["Classifier"]), "unknown architecture"),
        (lambda meta: meta.update(architecture={"a": 1}), "unknown architecture"),
        (
            lambda meta: meta.update(
                architecture="Classifier", config={"net": [1, 2], "input_dim": [6]}
            ),
            "invalid Classifier config",
        ),
        (lambda meta: meta["config"].update(input_dim=10**40), r"needs shape \(1000"),
        (lambda meta: meta["config"].update(hidden_dims="five"), "invalid FullyConnectedNet"),
        (lambda meta: meta.update(config=[1]), "malformed model metadata"),
    ],
)
def test_forged_metadata_is_a_value_error(saved: Path, change: Callable, match: str) -> None:
    """ "architecture": ["Classifier"] raised TypeError."""
    _rewrite(saved, lambda meta, arrays: change(meta))
    with pytest.raises(ValueError, match=match):
        load_model(saved)


def test_every_single_byte_flip_of_a_model_file_is_refused_or_loads(
    saved: Path, tmp_path: Path
) -> None:
    """36 of 7,630 flips raised NotImplementedError (an unknown compression method)."""
    content = saved.read_bytes()
    path = tmp_path / "flipped.npz"
    rng = np.random.default_rng(1)
    for position in rng.choice(len(content), size=400, replace=False):
        damaged = bytearray(content)
        damaged[position] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(damaged))
        try:
            load_model(path)
        except ValueError:
            pass


# --- case 11: never suggest allow_pickle ----------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"just some text, not a model\n" * 10,
        pickle.dumps({"W1": [1, 2, 3]}),
        b"\x93NUMPY" + bytes(120),
    ],
)
def test_a_file_that_is_not_a_model_says_so_without_pickle_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes
) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"not a readable \.npz model file") as caught:
        load_model(path)
    assert "pickle" not in str(caught.value)
    assert cli.main(["evaluate", str(path), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "pickle" not in err and "Traceback" not in err


def test_a_damaged_model_is_one_line_from_every_command(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("sklearn")
    _rewrite(saved, lambda meta, arrays: arrays["W1"].fill(np.nan))
    np.save(tmp_path / "images.npy", np.zeros((2, 6)).reshape(2, 1, 2, 3))
    for argv in (
        ["evaluate", saved, "--dataset", "digits"],
        ["predict", saved, tmp_path / "images.npy", "--no-preprocessing"],
    ):
        assert cli.main([str(arg) for arg in argv]) == 2
        err = capsys.readouterr().err
        assert "W1 holds NaN or infinite values" in err and len(err.splitlines()) == 1


def test_models_still_load_and_build_without_arrays_alike(tmp_path: Path) -> None:
    model = ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=2, hidden_dim=4, seed=3)
    loaded = load_model(save_model(model, tmp_path / "m.npz"))
    for name, value in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)
    with nn.without_arrays():
        skeleton = ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=2, hidden_dim=4)
    shapes = {name: value.shape for name, value in model.params.items()}
    assert skeleton.array_shapes() == shapes == model.array_shapes()
