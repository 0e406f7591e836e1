"""The models compute what they computed before they were rebuilt on convnet.nn (see
tests/model_fixtures.py for how the numbers were recorded)."""

from __future__ import annotations

import numpy as np
import pytest
from model_fixtures import MODELS, NUMBERS, numbers
from tolerances import assert_matches


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
        else:
            assert_matches(np.asarray(actual[key]), value)
