"""Update rules: first steps from the formulas, descent on a quadratic, state, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from convnet import optim
from convnet.optim import UPDATE_RULES

STATE_KEYS = {
    "sgd": set(),
    "sgd_momentum": {"velocity"},
    "nesterov": {"velocity"},
    "rmsprop": {"cache"},
    "adam": {"m", "v", "t"},
}
DEFAULTS = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "nesterov": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-3, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}
# Step sizes that converge on the quadratic below (its Hessian's largest eigenvalue is ~25).
LEARNING_RATES = {
    "sgd": 2e-2,
    "sgd_momentum": 1e-2,
    "nesterov": 1e-2,
    "rmsprop": 1e-2,
    "adam": 5e-2,
}


def quadratic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((12, 6)), rng.standard_normal(12)


def test_registry_names_every_rule():
    assert UPDATE_RULES == {
        "sgd": optim.sgd,
        "sgd_momentum": optim.sgd_momentum,
        "nesterov": optim.nesterov,
        "rmsprop": optim.rmsprop,
        "adam": optim.adam,
    }


@pytest.mark.parametrize("name", sorted(UPDATE_RULES))
def test_defaults_and_state_are_filled_in(name):
    w, dw = np.ones(3), np.full(3, 0.5)
    _, config = UPDATE_RULES[name](w, dw)
    assert set(config) == set(DEFAULTS[name]) | STATE_KEYS[name]
    for key, value in DEFAULTS[name].items():
        assert config[key] == value
    _, explicit = UPDATE_RULES[name](w, dw, {"learning_rate": 0.25})
    assert explicit["learning_rate"] == 0.25


@pytest.mark.parametrize("name", sorted(UPDATE_RULES))
def test_minimizes_a_quadratic_and_keeps_state(name):
    a, b = quadratic()
    w = np.zeros(6)
    initial = 0.5 * np.sum((a @ w - b) ** 2)
    optimum = 0.5 * np.sum((a @ np.linalg.lstsq(a, b, rcond=None)[0] - b) ** 2)
    config = {"learning_rate": LEARNING_RATES[name]}
    for step in range(1, 301):
        w, config = UPDATE_RULES[name](w, a.T @ (a @ w - b), config)
        assert STATE_KEYS[name] <= set(config)
        if name == "adam":
            assert config["t"] == step
    final = 0.5 * np.sum((a @ w - b) ** 2)
    assert final - optimum < 1e-2 * (initial - optimum)


@pytest.mark.parametrize("name", sorted(UPDATE_RULES))
def test_arrays_are_not_modified_and_the_state_goes_into_the_given_config(name):
    rng = np.random.default_rng(0)
    w, dw = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    w_copy, dw_copy = w.copy(), dw.copy()
    _, config = UPDATE_RULES[name](w, dw)
    old_state = {key: config[key] for key in STATE_KEYS[name]}
    old_values = {key: np.copy(value) for key, value in old_state.items()}
    next_w, next_config = UPDATE_RULES[name](w, dw, config)
    np.testing.assert_array_equal(w, w_copy)
    np.testing.assert_array_equal(dw, dw_copy)
    assert next_w is not w
    assert next_config is config
    for key, value in old_values.items():
        np.testing.assert_array_equal(old_state[key], value)  # the old arrays are untouched
        if key != "t":
            assert config[key] is not old_state[key]  # the new state is a new array


def rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """The course's relative error: max |a - e| / max(1e-8, |a| + |e|)."""
    return float(
        np.max(np.abs(actual - expected) / np.maximum(1e-8, np.abs(actual) + np.abs(expected)))
    )


def course_arrays() -> tuple[np.ndarray, ...]:
    """w, dw and two state arrays built as the CS231n notebooks build theirs (N, D = 4, 5)."""
    shape = (4, 5)
    return tuple(
        np.linspace(low, high, num=20).reshape(shape)
        for low, high in ((-0.4, 0.6), (-0.6, 0.4), (0.6, 0.9), (0.7, 0.5))
    )


def test_notebook_style_checks_read_the_state_back_from_the_config():
    """The course's check: call the rule, then read the state from the dict it was given."""
    w, dw, a, b = course_arrays()
    lr = 1e-2

    config = {"learning_rate": lr, "velocity": a}
    next_w, _ = optim.sgd_momentum(w, dw, config)
    velocity = 0.9 * a - lr * dw
    assert rel_error(config["velocity"], velocity) < 1e-8
    assert rel_error(next_w, w + velocity) < 1e-8

    config = {"learning_rate": lr, "cache": a}
    next_w, _ = optim.rmsprop(w, dw, config)
    cache = 0.99 * a + 0.01 * dw**2
    assert rel_error(config["cache"], cache) < 1e-8
    assert rel_error(next_w, w - lr * dw / (np.sqrt(cache) + 1e-8)) < 1e-8

    config = {"learning_rate": lr, "m": a, "v": b, "t": 5}
    next_w, _ = optim.adam(w, dw, config)
    m = 0.9 * a + 0.1 * dw
    v = 0.999 * b + 0.001 * dw**2
    m_hat, v_hat = m / (1 - 0.9**6), v / (1 - 0.999**6)
    assert config["t"] == 6
    assert rel_error(config["m"], m) < 1e-8 and rel_error(config["v"], v) < 1e-8
    assert rel_error(next_w, w - lr * m_hat / (np.sqrt(v_hat) + 1e-8)) < 1e-8
    np.testing.assert_array_equal(a, course_arrays()[2])  # the state given is not modified


@pytest.mark.parametrize("name", sorted(UPDATE_RULES))
def test_dtype_of_w_is_kept(name):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(5).astype(np.float32)
    dw = rng.standard_normal(5)  # float64 gradient, float64 numpy-scalar hyperparameter
    config = {"learning_rate": np.float64(1e-2)}
    for _ in range(2):
        w, config = UPDATE_RULES[name](w, dw, config)
        assert w.dtype == np.float32
        for key in STATE_KEYS[name] - {"t"}:
            assert config[key].dtype == np.float32


def test_first_steps_follow_the_formulas():
    w, dw = np.array([1.0, -2.0, 3.0]), np.array([0.5, -4.0, 2.0])
    lr, mu = 0.1, 0.9
    np.testing.assert_allclose(optim.sgd(w, dw, {"learning_rate": lr})[0], w - lr * dw)
    np.testing.assert_allclose(
        optim.sgd_momentum(w, dw, {"learning_rate": lr, "momentum": mu})[0], w - lr * dw
    )
    np.testing.assert_allclose(
        optim.nesterov(w, dw, {"learning_rate": lr, "momentum": mu})[0], w - (1 + mu) * lr * dw
    )
    # rmsprop: cache = 0.01 dw^2, so the step is lr * dw / (0.1 |dw|) = 10 lr sign(dw).
    np.testing.assert_allclose(
        optim.rmsprop(w, dw, {"learning_rate": lr, "epsilon": 0.0})[0],
        w - 10 * lr * np.sign(dw),
        atol=1e-12,
    )
    # adam: the bias-corrected moments are dw and dw^2 after one step.
    np.testing.assert_allclose(
        optim.adam(w, dw, {"learning_rate": lr, "epsilon": 0.0})[0][:2],
        w[:2] - lr * np.sign(dw[:2]),
    )


@pytest.mark.parametrize("name", ["sgd_momentum", "nesterov", "rmsprop", "adam"])
def test_matches_torch_optimizers_over_several_steps(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w = rng.standard_normal(7)
    grads = rng.standard_normal((5, 7))
    lr = 0.05
    weight = torch.tensor(w.copy(), requires_grad=True)
    factories = {
        "sgd_momentum": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9),
        "nesterov": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True),
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=lr, alpha=0.99, eps=1e-8),
        "adam": lambda p: torch.optim.Adam(p, lr=lr, betas=(0.9, 0.999), eps=1e-8),
    }
    reference = factories[name]([weight])
    config = {"learning_rate": lr}
    for grad in grads:
        w, config = UPDATE_RULES[name](w, grad, config)
        weight.grad = torch.tensor(grad)
        reference.step()
        np.testing.assert_allclose(w, weight.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_bad_arguments_are_refused():
    w = np.zeros(3)
    with pytest.raises(ValueError, match="shape"):
        optim.sgd(w, np.zeros(4))
    with pytest.raises(TypeError, match="float32 or float64"):
        optim.sgd(np.zeros(3, dtype=int), np.zeros(3))
    with pytest.raises(TypeError, match="config"):
        optim.adam(w, w, config=[("learning_rate", 1.0)])
    with pytest.raises(ValueError, match="velocity"):
        optim.sgd_momentum(w, w, {"velocity": np.zeros(4)})
