"""FullyConnectedNet with batch or layer norm and dropout: gradients, train and test mode,
running statistics saved and loaded, CS231n's arguments and the former ``dropout`` name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_models import check_model_gradients

from convnet.models import FullyConnectedNet, load_model, save_model
from convnet.solver import Solver

HIDDEN = [6, 5]


def hidden_biases(normalization: str | None) -> tuple[str, ...]:
    """A bias right before a batch norm has gradient 0: the norm subtracts it again."""
    return ("b1", "b2") if normalization == "batchnorm" else ()


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("keep", [1.0, 0.6])
def test_gradients_with_each_normalization(normalization, keep):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 2, 2, 3))
    y = np.array([0, 2, 1, 2, 1])

    def build() -> FullyConnectedNet:
        model = FullyConnectedNet(
            HIDDEN,
            input_dim=12,
            num_classes=3,
            dropout_keep_ratio=keep,
            normalization=normalization,
            reg=0.1,
            weight_scale=0.5,
            dtype=np.float64,
            seed=5,
        )
        # Nonzero biases: a sample whose hidden units are all dropped would otherwise sit
        # exactly on the next ReLU's kink at 0.
        biases = np.random.default_rng(1)
        for name in ("b1", "b2", "b3"):
            model.params[name] = biases.uniform(0.2, 0.5, model.params[name].shape)
        return model

    check_model_gradients(build, X, y, zero=hidden_biases(normalization))


@pytest.mark.parametrize("normalization", ["batchnorm", "layernorm"])
def test_parameters_are_cs231n_s(normalization):
    model = FullyConnectedNet([4, 3], input_dim=6, normalization=normalization)
    shapes = {name: p.shape for name, p in model.params.items()}
    assert shapes == {
        "W1": (6, 4),
        "b1": (4,),
        "gamma1": (4,),
        "beta1": (4,),
        "W2": (4, 3),
        "b2": (3,),
        "gamma2": (3,),
        "beta2": (3,),
        "W3": (3, 10),
        "b3": (10,),
    }
    np.testing.assert_array_equal(model.params["gamma1"], 1)
    np.testing.assert_array_equal(model.params["beta2"], 0)
    assert len(model.bn_params) == 2
    expected = {"running_mean1", "running_var1", "running_mean2", "running_var2"}
    assert set(model.buffers()) == (expected if normalization == "batchnorm" else set())


def test_train_mode_updates_the_running_statistics_and_test_mode_uses_them():
    rng = np.random.default_rng(1)
    X, y = 3 * rng.standard_normal((20, 6)) + 1, rng.integers(0, 4, size=20)
    model = FullyConnectedNet(
        [5], input_dim=6, num_classes=4, normalization="batchnorm", dtype=np.float64, seed=0
    )
    model.loss(X)  # test mode: statistics untouched
    np.testing.assert_array_equal(model.bn_params[0]["running_mean"], 0)
    model.loss(X, y)
    hidden = X @ model.params["W1"] + model.params["b1"]
    np.testing.assert_allclose(
        model.bn_params[0]["running_mean"], 0.1 * hidden.mean(axis=0), rtol=1e-12
    )
    np.testing.assert_allclose(
        model.bn_params[0]["running_var"], 0.9 + 0.1 * hidden.var(axis=0, ddof=1), rtol=1e-12
    )
    before = {name: value.copy() for name, value in model.buffers().items()}
    scores = model.loss(X)
    for name, value in model.buffers().items():
        np.testing.assert_array_equal(value, before[name])
    stats = model.bn_params[0]
    normalized = (hidden - stats["running_mean"]) / np.sqrt(stats["running_var"] + 1e-5)
    expected = np.maximum(normalized, 0) @ model.params["W2"] + model.params["b2"]
    np.testing.assert_allclose(scores, expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalization", ["batchnorm", "layernorm"])
def test_dtype_is_kept(dtype, normalization):
    model = FullyConnectedNet(
        [4, 3], input_dim=6, dropout_keep_ratio=0.5, normalization=normalization, dtype=dtype
    )
    X = np.random.default_rng(0).standard_normal((5, 6))
    loss, grads = model.loss(X, np.arange(5))
    assert np.isfinite(loss)
    for name, param in model.params.items():
        assert grads[name].dtype == param.dtype == dtype
    assert model.loss(X).dtype == dtype
    assert all(value.dtype == dtype for value in model.buffers().values())


@pytest.mark.parametrize("normalization", ["batchnorm", "layernorm"])
def test_save_load_round_trip_with_running_statistics(tmp_path, normalization):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((16, 6)), rng.integers(0, 3, size=16)
    model = FullyConnectedNet(
        [5, 4], input_dim=6, num_classes=3, dropout_keep_ratio=0.8, normalization=normalization
    )
    for _ in range(3):
        model.loss(X, y)
    path = save_model(model, tmp_path / "bn.npz")
    loaded = load_model(path, expected=FullyConnectedNet)
    assert loaded.config() == model.config()
    assert loaded.config()["normalization"] == normalization
    assert set(loaded.buffers()) == set(model.buffers())
    for name, value in model.buffers().items():
        assert loaded.buffers()[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded.buffers()[name], value)
    np.testing.assert_array_equal(loaded.loss(X), model.loss(X))


def test_load_refuses_missing_or_misshapen_running_statistics(tmp_path):
    model = FullyConnectedNet([5], input_dim=6, normalization="batchnorm")
    path = save_model(model, tmp_path / "bn.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays.pop("running_var1")
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing parameters \['running_var1'\]"):
        load_model(tmp_path / "missing.npz")
    arrays["running_var1"] = np.ones(4, dtype=np.float32)
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(ValueError, match=r"running_var1 has shape \(4,\)"):
        load_model(tmp_path / "shape.npz")
    with pytest.raises(ValueError, match="no buffer 'running_mean7'"):
        model.set_buffers({"running_mean7": np.zeros(5)})


def test_former_dropout_name_still_builds_and_loads(tmp_path):
    model = FullyConnectedNet([5], input_dim=6, dropout=0.7, seed=1)
    assert model.dropout_keep_ratio == 0.7
    assert model.config()["dropout_keep_ratio"] == 0.7
    # A file written before dropout_keep_ratio and normalization existed.
    path = save_model(FullyConnectedNet([5], input_dim=6, seed=1), tmp_path / "old.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    meta = json.loads(str(arrays["__convnet_meta__"]))
    config = meta["config"]
    del config["dropout_keep_ratio"], config["normalization"]
    config["dropout"] = 0.7
    arrays["__convnet_meta__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    old = load_model(path)
    assert old.dropout_keep_ratio == 0.7 and old.normalization is None
    with pytest.raises(ValueError, match="not both"):
        FullyConnectedNet([5], dropout=0.5, dropout_keep_ratio=0.5)


def test_cs231n_positional_order_and_bad_normalization():
    model = FullyConnectedNet([5], 6, 3, 0.5, "layernorm", 0.1)
    assert (model.dropout_keep_ratio, model.normalization, model.reg) == (0.5, "layernorm", 0.1)
    for bad in ("groupnorm", "BatchNorm", 1):
        with pytest.raises(ValueError, match="normalization must be"):
            FullyConnectedNet([5], normalization=bad)
    for keep in (0.0, 1.5):
        with pytest.raises(ValueError, match="keep probability"):
            FullyConnectedNet([5], dropout_keep_ratio=keep)


def test_batchnorm_net_trains_with_the_solver():
    rng = np.random.default_rng(0)
    centers = 3 * rng.standard_normal((3, 10))
    y = rng.integers(0, 3, size=300)
    X = (centers[y] + rng.standard_normal((300, 10))).astype(np.float32)
    data = {"X_train": X[:240], "y_train": y[:240], "X_val": X[240:], "y_val": y[240:]}
    model = FullyConnectedNet(
        [20, 20],
        input_dim=10,
        num_classes=3,
        dropout_keep_ratio=0.9,
        normalization="batchnorm",
        init="he",
        seed=0,
    )
    solver = Solver(
        model,
        data,
        optim_config={"learning_rate": 1e-2},
        batch_size=40,
        num_epochs=4,
        progress=False,
        num_train_samples=None,
    )
    solver.train()
    assert solver.best_val_acc >= 0.9
    assert solver.check_accuracy(data["X_val"], data["y_val"]) >= 0.9


def test_convnet_train_fc_net_with_batchnorm(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from convnet import cli

    argv = ["train", "--model", "fc-net", "--hidden-dims", "16", "--normalization", "batchnorm"]
    quick = ["--num-train", "100", "--epochs", "1", "--no-progress", "--quiet"]
    assert cli.main([*argv, *quick, "--dropout", "0.9", "--out", str(tmp_path)]) == 0
    model = load_model(tmp_path / "model.npz")
    assert model.normalization == "batchnorm" and model.dropout_keep_ratio == 0.9
    assert model.params["gamma1"].shape == (16,)
    assert np.any(model.buffers()["running_var1"] != 1)  # trained statistics were saved


def test_bn_params_are_the_layers_own_state():
    """CS231n's notebooks read ``model.bn_params[i]['running_mean']`` after training: it is
    the dict the batch-norm layer computes with, so it shows the current statistics, and
    ``buffers()`` reads and writes the same arrays."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    model = FullyConnectedNet(  # seeded: some unseeded draws give all-zero scores
        [5, 4], input_dim=6, num_classes=3, normalization="batchnorm", dtype=np.float64, seed=3
    )
    states = list(model.bn_params)
    for _ in range(2):
        model.loss(X, y)
    assert [state["mode"] for state in model.bn_params] == ["train", "train"]
    for layer, state in enumerate(states, start=1):
        assert state is model.bn_params[layer - 1] is model.net[f"norm{layer}"].norm_param
        assert state["running_mean"] is model.buffers()[f"running_mean{layer}"]
        assert np.all(state["running_var"] != 1)
    scores = model.loss(X)
    assert [state["mode"] for state in model.bn_params] == ["test", "test"]
    states[0]["running_mean"] = states[0]["running_mean"] + 1  # CS231n code may assign
    assert not np.allclose(model.loss(X), scores)
    np.testing.assert_array_equal(model.buffers()["running_mean1"], states[0]["running_mean"])
    model.set_buffers({"running_var2": np.full(4, 2.0)})
    np.testing.assert_array_equal(states[1]["running_var"], 2.0)


def test_layer_norm_bn_params_and_dropout_param():
    model = FullyConnectedNet([5, 4], input_dim=6, normalization="layernorm", seed=4)
    assert [set(state) for state in model.bn_params] == [{"mode", "eps"}] * 2
    assert model.buffers() == {} and not model.use_dropout and model.dropout_param == {}
    X, y = np.ones((3, 6)), np.array([0, 1, 2])
    model.loss(X, y)
    assert model.dropout_param == {}
    dropping = FullyConnectedNet([5], input_dim=6, dropout_keep_ratio=0.6, seed=4)
    assert dropping.use_dropout
    assert dropping.dropout_param == {"mode": "train", "p": 0.6, "seed": 4}
    dropping.loss(X)
    assert dropping.dropout_param["mode"] == "test"
    dropping.loss(X, y)
    assert dropping.dropout_param["mode"] == "train"
    unseeded = FullyConnectedNet([5], input_dim=6, dropout_keep_ratio=0.6)
    assert unseeded.dropout_param == {"mode": "train", "p": 0.6}


def test_layer_norm_net_matches_the_same_net_in_torch():
    """FullyConnectedNet's network translates to PyTorch (layer norm and batch norm
    included), with the same scores, loss and gradients."""
    torch = pytest.importorskip("torch")
    from convnet.bench.torch_reference import torch_network

    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((6, 7)), rng.integers(0, 3, 6)
    for normalization in ("layernorm", "batchnorm"):
        model = FullyConnectedNet(
            [5, 4], input_dim=7, num_classes=3, normalization=normalization, reg=0.1,
            weight_scale=0.5, dtype=np.float64, seed=0,
        )  # fmt: skip
        for name, value in model.params.items():
            if name.startswith(("gamma", "beta", "b")):
                model.params[name] = rng.standard_normal(value.shape)
        net = torch_network(model.net, torch)
        np.testing.assert_allclose(
            model.loss(X), net.eval()(torch.from_numpy(X)).detach().numpy(), rtol=1e-10
        )
        loss, grads = model.loss(X, y)
        reference = torch.nn.functional.cross_entropy(
            net.train()(torch.from_numpy(X)), torch.tensor(y)
        )
        reference.backward()
        penalty = sum(float(np.sum(model.params[f"W{i}"] ** 2)) for i in (1, 2, 3))
        assert loss == pytest.approx(reference.item() + 0.05 * penalty, rel=1e-10)
        for name, converted in zip(model.params, net.parameters(), strict=True):
            grad = converted.grad.numpy()
            grad = grad.T if grad.ndim == 2 else grad
            extra = 0.1 * model.params[name] if name.startswith("W") else 0
            np.testing.assert_allclose(grads[name], grad + extra, rtol=1e-8, atol=1e-12)
