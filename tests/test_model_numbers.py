"""The models compute what they computed before they were rebuilt on convnet.nn, and read
the model files written then (see tests/model_fixtures.py for how both were recorded)."""

from __future__ import annotations

import numpy as np
import pytest
from model_fixtures import MODELS, NUMBERS, OLD_MODELS, SAVED, batch, numbers
from tolerances import TOLERANCE, assert_matches

from convnet.models import load_model


@pytest.fixture(scope="module")
def pinned() -> dict[str, np.ndarray]:
    with np.load(NUMBERS) as archive:
        return dict(archive)


@pytest.mark.parametrize("name", MODELS)
def test_same_initial_parameters_scores_loss_gradients_and_statistics(pinned, name):
    """Same seed and arguments: the same initial parameters (bit for bit), and the same
    scores, two training calls' losses and gradients (dropout masks included), running
    statistics and scores after training, within float64's 1e-10."""
    expected = {
        key.removeprefix(f"{name}/"): value
        for key, value in pinned.items()
        if key.startswith(f"{name}/") and key != f"{name}/saved_scores"
    }
    actual = numbers(name)
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        if key.startswith("init/"):
            np.testing.assert_array_equal(actual[key], value, err_msg=key)
        elif key.startswith("grads"):
            # relative to the call's largest gradient: a bias in front of a batch norm has a
            # gradient that is zero but for rounding, which summation order changes
            call = key.split("/")[0]
            scale = max(np.max(np.abs(v)) for k, v in expected.items() if k.startswith(call))
            tol = TOLERANCE[value.dtype]
            np.testing.assert_allclose(actual[key], value, rtol=tol, atol=tol * scale)
        else:
            assert_matches(np.asarray(actual[key]), value)


@pytest.mark.parametrize("name", SAVED)
def test_model_files_written_before_still_load(pinned, name):
    model = load_model(OLD_MODELS / f"{name}.npz")
    assert type(model) is type(MODELS[name][0]())
    with np.load(OLD_MODELS / f"{name}.npz") as archive:
        statistics = {k: archive[k] for k in archive.files if "running_" in k}
    assert set(model.buffers()) == set(statistics)
    for key, value in statistics.items():
        np.testing.assert_array_equal(model.buffers()[key], value)
    assert_matches(model.loss(batch(name)[0]), pinned[f"{name}/saved_scores"])
