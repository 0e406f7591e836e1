"""Networks composed from layers: gradients of whole nets, shapes, names, modes, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnet import checkpoint, nn
from convnet.bench.torch_reference import torch_network
from convnet.gradient_check import numerical_gradient, numerical_gradient_array
from convnet.layers import layernorm_forward
from convnet.models import load_model, resnet, save_model, vgg
from convnet.optim import UPDATE_RULES, sgd
from convnet.solver import Solver

# A whole network's gradient against centered differences through a dozen layers: the
# differences carry rounding noise of about eps * |loss| / h ~ 1e-10, so entries are
# compared relative to the largest entry of their array (a wrong gradient is off by O(1)).
NET_GRAD_TOL = 1e-7


def scaled_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``max |analytic - numeric|`` relative to ``max(|analytic| + |numeric|)``, or to
    1e-3 for smaller gradients: centered differences of a loss of order 1 carry ~1e-11 of
    rounding noise (a bias before batch norm, whose gradient is exactly 0, reads 4e-11
    with numpy 1.25), so below that scale the check is absolute (1e-10)."""
    assert analytic.shape == numeric.shape
    scale = max(float(np.max(np.abs(analytic) + np.abs(numeric))), 1e-3)
    return float(np.max(np.abs(analytic - numeric))) / scale


def small_net() -> nn.Sequential:
    """Every layer object at least once, on (2, 6, 6) inputs, ending in 3 scores."""
    block = nn.Residual(
        nn.Sequential(
            nn.Conv2d(3, 3, 3, pad=1, bias=False),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.Conv2d(3, 3, (3, 1), pad=(1, 0)),
            names=["conv1", "bn", "relu", "conv2"],
        )
    )
    projected = nn.Residual(
        nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, pad=1), nn.ReLU()),
        shortcut=nn.Conv2d(3, 4, 1, stride=2),
    )
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, pad=1),
        nn.ReLU(),
        block,
        nn.MaxPool2d(2, stride=1),
        projected,
        nn.AvgPool2d(2, stride=1),
        nn.Flatten(),
        nn.Dropout(0.7),
        nn.Linear(4 * 2 * 2, 5),
        nn.BatchNorm1d(5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )


def build_classifier(reg: float = 0.2, seed: int = 0) -> nn.Classifier:
    return nn.Classifier(small_net(), (2, 6, 6), reg=reg, dtype=np.float64, seed=seed)


def check_classifier_gradients(build, X: np.ndarray, y: np.ndarray) -> None:
    """Every analytic gradient of ``build().loss(X, y)`` against centered differences of
    the whole network's loss. ``build`` makes a fresh float64 model (same seed) each time."""
    model = build()
    _, grads = model.loss(X, y)
    assert list(grads) == list(model.params)
    for name, param in model.params.items():

        def loss_at(point: np.ndarray, name: str = name) -> float:
            probe = build()
            probe.params = {**model.params, name: point}
            return probe.loss(X, y)[0]

        numeric = numerical_gradient(loss_at, param.copy())
        assert grads[name].shape == param.shape
        assert grads[name].dtype == param.dtype
        assert scaled_error(grads[name], numeric) < NET_GRAD_TOL, name


def test_every_parameter_gradient_of_a_composed_net():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((4, 2, 6, 6)), np.array([0, 2, 1, 2])
    check_classifier_gradients(build_classifier, X, y)


@pytest.mark.parametrize("training", [True, False])
def test_input_gradient_through_every_layer(training):
    rng = np.random.default_rng(1)
    net = small_net().initialize(rng, dtype=np.float64).train(training)
    for layer in net.layers():
        if isinstance(layer, nn._BatchNorm):
            layer.buffers()["running_mean"] = rng.standard_normal(layer.num_features)
            layer.buffers()["running_var"] = rng.uniform(0.5, 2, layer.num_features)
    dropout = net[7]
    x = rng.standard_normal((3, 2, 6, 6))
    dout = rng.standard_normal((3, 3))

    def forward(point: np.ndarray) -> np.ndarray:
        dropout.rng = np.random.default_rng(7)  # the same mask at every probe
        return net.forward(point)

    forward(x)
    dx = net.backward(dout)
    numeric = numerical_gradient_array(forward, x, dout)
    assert scaled_error(dx, numeric) < NET_GRAD_TOL
    forward(x)
    assert net.backward(dout, compute_dx=False) is None


def test_gradients_through_dilated_grouped_convolutions_and_global_pooling():
    def build() -> nn.Classifier:
        net = nn.Sequential(
            nn.Conv2d(2, 4, 3, pad=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, pad=1, groups=4, bias=False),
            nn.Conv2d(4, 6, (1, 2), groups=2),
            nn.GlobalAvgPool(),
            nn.Linear(6, 3),
        )
        return nn.Classifier(net, (2, 5, 6), reg=0.1, dtype=np.float64, seed=2)

    rng = np.random.default_rng(3)
    check_classifier_gradients(build, rng.standard_normal((3, 2, 5, 6)), np.array([2, 0, 1]))


def test_names_are_stable_unique_and_match_the_gradients():
    model = build_classifier()
    expected = [
        "0.w", "0.b",
        "2.body.conv1.w", "2.body.bn.gamma", "2.body.bn.beta",
        "2.body.conv2.w", "2.body.conv2.b",
        "4.body.0.w", "4.body.0.b", "4.shortcut.w", "4.shortcut.b",
        "8.w", "8.b", "9.gamma", "9.beta", "11.w", "11.b",
    ]  # fmt: skip
    statistics = [f"{layer}.{n}" for layer in ("2.body.bn", "9") for n in nn._BatchNorm.BUFFERS]
    assert list(model.params) == expected
    assert list(model.buffers()) == list(model.net.buffers()) == statistics
    assert list(build_classifier(seed=1).params) == expected
    _, grads = model.loss(np.ones((2, 2, 6, 6)), np.array([0, 1]))
    assert list(grads) == expected
    assert model.net.regularized() == [n for n in expected if n.endswith(".w")]
    assert list(model.net[2].params) == [name[2:] for name in expected if name[0] == "2"]
    assert list(model.net[2].buffers()) == ["body.bn.running_mean", "body.bn.running_var"]
    assert model.net[2].params["body.conv1.w"] is model.params["2.body.conv1.w"]
    batch_norm = model.net[2].body[1]
    assert model.buffers()["2.body.bn.running_var"] is batch_norm.norm_param["running_var"]


def test_params_write_through_and_refuse_bad_values():
    model = build_classifier()
    replacement = np.ones((3, 2, 3, 3))
    model.params["0.w"] = replacement
    assert model.net[0].params["w"] is replacement
    model.params["0.b"] = np.arange(3)  # cast to the model dtype
    assert model.params["0.b"].dtype == np.float64
    with pytest.raises(ValueError, match=r"0.w has shape \(3, 2, 3, 3\)"):
        model.params["0.w"] = np.ones((3, 2, 3, 2))
    with pytest.raises(KeyError, match="no parameter named 'W1'"):
        model.params["W1"] = replacement
    with pytest.raises(TypeError, match="cannot be deleted"):
        del model.params["0.w"]
    with pytest.raises(ValueError, match="exactly the names"):
        model.params = {"0.w": replacement}


def test_shapes_of_containers():
    net = small_net()
    assert net.output_shape((2, 6, 6)) == (3,)
    assert net[2].output_shape((3, 5, 7)) == (3, 5, 7)
    assert net[4].output_shape((3, 5, 5)) == (4, 3, 3)
    net.initialize(np.random.default_rng(0))
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    out = x
    for position in range(len(net)):
        shape = net[position].output_shape(out.shape[1:])
        out = net[position].forward(out)
        assert out.shape == (2, *shape)
        assert out.dtype == np.float32
    assert nn.Conv2d(3, 8, 3, stride=2, pad=2, dilation=2).output_shape((3, 9, 9)) == (8, 5, 5)


def test_scores_loss_and_predict_keep_the_dtype():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        model = nn.Classifier(small_net(), (2, 6, 6), dtype=dtype, seed=0)
        X = rng.standard_normal((5, 2, 6, 6))
        scores = model.loss(X)
        assert scores.shape == (5, 3) and scores.dtype == dtype
        loss, grads = model.loss(X, np.array([0, 1, 2, 0, 1]))
        assert isinstance(loss, float)
        assert all(grads[name].dtype == dtype for name in grads)
        labels = model.predict(X, batch_size=2)
        assert labels.shape == (5,) and labels.dtype.kind == "i"
        np.testing.assert_array_equal(labels, np.argmax(scores, axis=1))


def test_same_seed_same_parameters():
    first, again, other = build_classifier(seed=3), build_classifier(seed=3), build_classifier()
    for name in first.params:
        np.testing.assert_array_equal(first.params[name], again.params[name])
    assert not np.array_equal(first.params["0.w"], other.params["0.w"])


def test_initializations():
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(16, 64, 3, groups=4).initialize(rng, "he")
    assert conv.params["w"].shape == (64, 4, 3, 3)
    assert conv.params["w"].std() == pytest.approx(np.sqrt(2 / 36), rel=0.05)
    np.testing.assert_array_equal(conv.params["b"], 0)
    linear = nn.Linear(50, 400).initialize(rng, "normal", weight_scale=0.05)
    assert linear.params["w"].std() == pytest.approx(0.05, rel=0.02)


def test_regularization_adds_to_weights_only():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3, 2, 6, 6)), np.array([0, 1, 2])
    plain, regularized = build_classifier(reg=0.0), build_classifier(reg=0.5)
    loss0, grads0 = plain.loss(X, y)
    loss1, grads1 = regularized.loss(X, y)
    weights = [name for name in plain.params if name.endswith(".w")]
    penalty = sum(float(np.sum(plain.params[name] ** 2)) for name in weights)
    assert loss1 == pytest.approx(loss0 + 0.25 * penalty, rel=1e-12)
    for name in plain.params:
        extra = 0.5 * plain.params[name] if name in weights else 0.0
        np.testing.assert_allclose(grads1[name], grads0[name] + extra, rtol=1e-12, atol=1e-14)


def test_layers_never_modify_their_inputs():
    model = build_classifier()
    X = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    before = X.copy()
    params_before = {name: value.copy() for name, value in model.params.items()}
    buffers_before = {name: value.copy() for name, value in model.buffers().items()}
    model.loss(X)
    model.loss(X, np.array([0, 1, 2]))
    np.testing.assert_array_equal(X, before)
    for name, value in params_before.items():
        np.testing.assert_array_equal(model.params[name], value)
    for name, value in buffers_before.items():  # training mode updates the statistics
        assert not np.array_equal(model.buffers()[name], value)


def test_solver_trains_a_composed_net():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 1, 6, 6))
    y = rng.integers(0, 3, size=120)
    X = (centers[y] + 0.3 * rng.standard_normal((120, 1, 6, 6))).astype(np.float32)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, pad=1),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, pad=1), nn.ReLU())),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 3),
    )
    model = nn.Classifier(net, (1, 6, 6), seed=0)
    data = {"X_train": X[:90], "y_train": y[:90], "X_val": X[90:], "y_val": y[90:]}
    solver = Solver(
        model, data, optim_config={"learning_rate": 1e-2}, batch_size=30, num_epochs=4,
        progress=False,
    )  # fmt: skip
    solver.train()
    assert solver.loss_history[-1] < solver.loss_history[0]
    assert solver.best_val_acc >= 0.9
    np.testing.assert_array_equal(model.predict(data["X_val"]), solver.predict(data["X_val"]))


def test_a_hand_written_training_loop_with_an_update_rule():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).initialize(np.random.default_rng(0))
    x = np.ones((1, 2, 2), dtype=np.float32)
    for _ in range(3):
        net.forward(x)
        net.backward(np.ones((1, 2), dtype=np.float32))
        for name, grad in net.grads.items():
            net.params[name], _ = sgd(net.params[name], grad, {"learning_rate": 0.5})
    np.testing.assert_allclose(net.params["1.b"], -1.5)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: nn.Sequential(), ValueError, "at least one module"),
        (lambda: nn.Sequential(nn.ReLU(), np.ones(3)), TypeError, "convnet.nn modules"),
        (lambda: nn.Sequential(nn.ReLU(), nn.ReLU(), names=["a", "a"]), ValueError, "unique"),
        (lambda: nn.Sequential(nn.ReLU(), names=["a.b"]), ValueError, "letters, digits"),
        (lambda: nn.Sequential(nn.ReLU(), names=["a", "b"]), ValueError, "1 modules but 2"),
        (lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError, "groups=4 must divide"),
        (lambda: nn.Conv2d(0, 6, 3), ValueError, "in_channels"),
        (lambda: nn.Conv2d(3, 6, 3, stride=0), ValueError, "stride"),
        (lambda: nn.Conv2d(3, 6, 3, dilation=0), ValueError, "dilation"),
        (lambda: nn.Conv2d(3, 6, 3, bias=1), TypeError, "bias"),
        (lambda: nn.Linear(3, 2.5), TypeError, "out_features"),
        (lambda: nn.MaxPool2d(0), ValueError, "kernel_size"),
    ],
)
def test_bad_constructions_are_refused(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_a_module_is_used_once():
    relu = nn.ReLU()
    nn.Sequential(relu)
    with pytest.raises(ValueError, match="already belongs to a container"):
        nn.Sequential(relu)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    nn.Classifier(net, (4,))
    with pytest.raises(ValueError, match="already belongs to a container or a Classifier"):
        nn.Classifier(net, (4,))
    with pytest.raises(ValueError, match="already belongs"):
        nn.Sequential(net)


@pytest.mark.parametrize(
    ("net", "message"),
    [
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2)), "3 input channels"),
        (
            nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(17, 2)),
            "module '2': .*expects 17 features per sample, got 16",
        ),
        (nn.Sequential(nn.Conv2d(2, 4, 5)), "spans 5 pixels"),
        (nn.Sequential(nn.Conv2d(2, 4, 3)), "must end in class scores"),
        (
            nn.Sequential(nn.Residual(nn.Conv2d(2, 4, 3, pad=1)), nn.Flatten(), nn.Linear(64, 2)),
            "body maps .* but the identity gives",
        ),
        (
            nn.Sequential(
                nn.Residual(nn.Conv2d(2, 4, 3, pad=1), nn.Conv2d(2, 4, 1, stride=2)),
                nn.Flatten(),
                nn.Linear(64, 2),
            ),
            "but the shortcut gives",
        ),
        (nn.Sequential(nn.MaxPool2d(5)), "window exceeds"),
    ],
)
def test_networks_that_do_not_fit_the_input_are_refused(net, message):
    with pytest.raises(ValueError, match=message):
        nn.Classifier(net, (2, 4, 4))


def test_bad_classifier_arguments_and_inputs():
    net = lambda: nn.Sequential(nn.Flatten(), nn.Linear(8, 2))  # noqa: E731
    with pytest.raises(TypeError, match="Module"):
        nn.Classifier("net", (2, 2, 2))
    with pytest.raises(ValueError, match="reg"):
        nn.Classifier(net(), (2, 2, 2), reg=-1)
    with pytest.raises(ValueError, match="init"):
        nn.Classifier(net(), (2, 2, 2), init="xavier")
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Classifier(net(), (2, 2, 2), dtype=np.int8)
    model = nn.Classifier(net(), (2, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, 2, 2, 2\)"):
        model.loss(np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        model.loss(np.zeros((2, 2, 2, 2)), np.array([0, 2]))
    with pytest.raises(RuntimeError, match="forward pass first"):
        nn.ReLU().backward(np.ones(3))
    with pytest.raises(RuntimeError, match="no gradient"):
        _ = nn.Linear(2, 2).grads


def test_config_round_trip_rebuilds_the_same_structure():
    net = small_net()
    rebuilt = nn.from_config(net.config())
    assert rebuilt.config() == net.config()
    assert list(rebuilt.params) == list(net.params)
    with pytest.raises(ValueError, match="unknown module type 'Conv3d'"):
        nn.from_config({"type": "Conv3d"})
    with pytest.raises(ValueError, match="invalid Linear config"):
        nn.from_config({"type": "Linear", "in_features": 3})


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    model = build_classifier()
    X, y = np.random.default_rng(0).standard_normal((4, 2, 6, 6)), np.array([0, 1, 2, 0])
    model.loss(X, y)  # running statistics move away from their initial 0 and 1
    assert not np.any(model.buffers()["9.running_mean"] == 0)
    path = save_model(model, tmp_path / "model.npz")
    loaded = load_model(path, expected="Classifier")
    assert isinstance(loaded, nn.Classifier)
    assert loaded.config() == model.config()
    assert list(loaded.params) == list(model.params)
    assert list(loaded.buffers()) == list(model.buffers())
    for name, value in [*model.params.items(), *model.buffers().items()]:
        loaded_value = {**loaded.params, **loaded.buffers()}[name]
        assert loaded_value.dtype == value.dtype
        np.testing.assert_array_equal(loaded_value, value)
    np.testing.assert_array_equal(loaded.loss(X), model.loss(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_load_refuses_a_classifier_file_that_does_not_fit(tmp_path):
    path = save_model(build_classifier(), tmp_path / "model.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["0.w"] = np.zeros((3, 2, 5, 5))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"0.w has shape \(3, 2, 5, 5\)"):
        load_model(path)
    meta = json.loads(str(arrays["__convnet_meta__"]))
    meta["config"]["net"]["modules"][0]["type"] = "Conv3d"
    arrays["__convnet_meta__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"invalid Classifier config.*Conv3d"):
        load_model(path)


def test_train_and_eval_modes_of_dropout():
    x = np.ones((200, 50))
    drop = nn.Dropout(0.6, seed=0)
    out = drop.forward(x)
    kept = out != 0
    assert 0.55 < kept.mean() < 0.65
    np.testing.assert_allclose(out[kept], 1 / 0.6)
    np.testing.assert_array_equal(drop.backward(x), out)
    np.testing.assert_array_equal(drop.forward(x), out)  # seeded: the same mask every call
    assert nn.from_config(drop.config()).seed == 0
    unseeded = nn.Dropout(0.6)
    assert not np.array_equal(unseeded.forward(x), unseeded.forward(x))  # fresh masks
    drop.eval()
    np.testing.assert_array_equal(drop.forward(x), x)
    np.testing.assert_array_equal(drop.backward(2 * x), 2 * x)
    assert nn.Dropout(1.0).forward(x) is not x


def test_train_and_eval_modes_of_batch_norm():
    rng = np.random.default_rng(0)
    x = 3 + 2 * rng.standard_normal((8, 4, 5, 5))
    bn = nn.BatchNorm2d(4, momentum=0.75).initialize(rng, dtype=np.float64)
    out = bn.forward(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.buffers()["running_mean"], 0.25 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.buffers()["running_var"], 0.75 + 0.25 * var, rtol=1e-12)
    assert bn.norm_param["mode"] == "train"
    bn.eval()
    before = dict(bn.buffers())
    expected = (x - before["running_mean"][:, None, None]) / np.sqrt(
        before["running_var"][:, None, None] + 1e-5
    )
    np.testing.assert_allclose(bn.forward(x), expected, rtol=1e-12)
    assert bn.norm_param["mode"] == "test"
    for name, value in before.items():
        assert bn.buffers()[name] is value  # test mode leaves the statistics alone


def test_classifier_selects_the_mode_from_the_labels():
    model = build_classifier()
    X = np.random.default_rng(0).standard_normal((6, 2, 6, 6))
    scores = model.loss(X)
    assert not model.net.training and not model.net[7].training
    np.testing.assert_array_equal(model.loss(X), scores)  # test mode: deterministic
    statistics = model.buffers()["9.running_var"]
    first = model.loss(X, np.zeros(6, dtype=int))[0]
    assert model.net.training and model.net[2].body[1].training
    assert model.buffers()["9.running_var"] is not statistics
    assert model.loss(X, np.zeros(6, dtype=int))[0] == first  # seeded: fixed dropout masks
    assert build_classifier().loss(X, np.zeros(6, dtype=int))[0] == first


def test_classifier_dropout_masks_fixed_by_a_seed_or_fresh():
    X, y = np.random.default_rng(0).standard_normal((6, 2, 6, 6)), np.zeros(6, dtype=int)

    def build(**options) -> nn.Classifier:
        net = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(72, 72), nn.Dropout(0.5), nn.Linear(72, 3)
        )
        return nn.Classifier(net, (2, 6, 6), dtype=np.float64, **options)

    seeded = build(seed=3)
    drops = [layer for layer in seeded.net.layers() if isinstance(layer, nn.Dropout)]
    assert drops[0].mask_seed != drops[1].mask_seed  # each layer its own fixed mask
    assert seeded.loss(X, y)[0] == seeded.loss(X, y)[0]
    fresh = build(seed=3, fresh_masks=True)
    first, second = fresh.loss(X, y)[0], fresh.loss(X, y)[0]
    assert first != second
    replay = build(seed=3, fresh_masks=True)
    assert [replay.loss(X, y)[0], replay.loss(X, y)[0]] == [first, second]
    unseeded = build()
    assert unseeded.loss(X, y)[0] != unseeded.loss(X, y)[0]
    assert nn.Classifier(**fresh.config()).fresh_masks


def test_seeded_classifier_with_dropout_passes_a_gradient_check_on_one_model():
    """CS231n's way: the probes call loss() of one seeded model again and again."""
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((4, 2, 6, 6)), np.array([0, 2, 1, 2])
    model = build_classifier(seed=5)
    _, grads = model.loss(X, y)
    for name in list(model.params):
        numeric = numerical_gradient(lambda _: model.loss(X, y)[0], model.params[name])
        assert scaled_error(grads[name], numeric) < NET_GRAD_TOL, name


def test_every_update_rule_leaves_a_zero_gradient_parameter_unchanged():
    statistic = np.random.default_rng(0).uniform(0.5, 2, 7).astype(np.float32)
    for rule in UPDATE_RULES.values():
        config = None
        for _ in range(3):
            statistic_next, config = rule(statistic, np.zeros_like(statistic), config)
            np.testing.assert_array_equal(statistic_next, statistic)


def small_net_solver(epochs: int, **options) -> Solver:
    """A Solver of a seeded small_net (batch norm and fresh dropout masks) on fixed data."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2, 6, 6)).astype(np.float32)
    data = {"X_train": X[:30], "y_train": rng.integers(0, 3, 30), "X_val": X[30:]}
    data["y_val"] = rng.integers(0, 3, 10)
    model = nn.Classifier(small_net(), (2, 6, 6), seed=4, fresh_masks=True)
    return Solver(model, data, batch_size=10, num_epochs=epochs, progress=False, seed=1, **options)


def test_solver_resumes_a_batch_norm_and_dropout_net_exactly(tmp_path):
    solver = small_net_solver
    straight = solver(2)
    straight.train()
    first = solver(1, checkpoint_dir=tmp_path)
    first.train()
    resumed = solver(2, resume_from=tmp_path / "checkpoint.npz")
    resumed.train()
    assert resumed.loss_history == straight.loss_history
    for name, value in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value)


def test_layer_norm_layer():
    rng = np.random.default_rng(4)
    x = 2 + 3 * rng.standard_normal((5, 6))
    norm = nn.LayerNorm(6, eps=1e-3).initialize(rng, dtype=np.float64)
    norm.params["gamma"] = rng.standard_normal(6)
    norm.params["beta"] = rng.standard_normal(6)
    expected, _ = layernorm_forward(x, norm.params["gamma"], norm.params["beta"], {"eps": 1e-3})
    np.testing.assert_array_equal(norm.forward(x), expected)
    assert norm.norm_param == {"mode": "train", "eps": 1e-3}
    np.testing.assert_array_equal(norm.eval().forward(x), expected)  # the same in test mode
    assert norm.norm_param["mode"] == "test" and norm.buffers() == {}
    assert norm.output_shape((6,)) == (6,)
    assert nn.from_config(norm.config()).config() == norm.config() == {
        "type": "LayerNorm", "num_features": 6, "eps": 1e-3,
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"expects 6 features"):
        norm.output_shape((5,))

    def build() -> nn.Classifier:
        net = nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 3))
        return nn.Classifier(net, (6,), reg=0.1, dtype=np.float64, seed=1)

    check_classifier_gradients(build, x, np.array([0, 2, 1, 1, 0]))


def test_public_names_rename_parameters_gradients_and_buffers(tmp_path):
    def build(**options) -> nn.Classifier:
        net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
        return nn.Classifier(net, (4,), dtype=np.float64, seed=0, **options)

    names = {"0.w": "W1", "1.gamma": "gamma1", "1.running_mean": "mean1", "3.w": "W2"}
    model = build(names=names, reg=0.5)
    assert list(model.params) == ["W1", "0.b", "gamma1", "1.beta", "W2", "3.b"]
    assert list(model.buffers()) == ["mean1", "1.running_var"]
    assert model.params["W1"] is model.net[0].params["w"]
    plain = build(reg=0.5)
    X, y = np.random.default_rng(0).standard_normal((4, 4)), np.array([0, 1, 1, 0])
    loss, grads = model.loss(X, y)
    plain_loss, plain_grads = plain.loss(X, y)
    assert loss == plain_loss and list(grads) == list(model.params)
    for (name, grad), plain_grad in zip(grads.items(), plain_grads.values(), strict=True):
        np.testing.assert_array_equal(grad, plain_grad, err_msg=name)
    loaded = load_model(save_model(model, tmp_path / "renamed.npz"))
    assert loaded.config() == model.config() and loaded.config()["names"] == names
    np.testing.assert_array_equal(loaded.buffers()["mean1"], model.buffers()["mean1"])
    with pytest.raises(ValueError, match=r"renames \['9.w'\]"):
        build(names={"9.w": "W9"})
    with pytest.raises(ValueError, match=r"the name \['0.b'\]"):
        build(names={"0.w": "0.b"})
    with pytest.raises(ValueError, match="non-empty strings"):
        build(names={"0.w": ""})
    with pytest.raises(TypeError, match="names must be a dict"):
        build(names=["W1"])


def test_buffers_write_through_and_set_buffers_refuses_bad_arrays():
    model = build_classifier()
    buffers = model.buffers()
    buffers["9.running_mean"] = np.arange(5)
    assert model.net[9].norm_param["running_mean"].dtype == np.float64
    np.testing.assert_array_equal(model.net[9].norm_param["running_mean"], np.arange(5))
    replacement = np.full(5, 2.0)
    model.set_buffers({"9.running_var": replacement})
    assert buffers["9.running_var"] is not replacement  # a copy
    np.testing.assert_array_equal(buffers["9.running_var"], 2.0)
    with pytest.raises(ValueError, match=r"has no buffer '9\.gamma'"):
        model.set_buffers({"9.gamma": np.ones(5)})
    with pytest.raises(ValueError, match=r"needs shape \(5,\) of floats"):
        model.set_buffers({"9.running_mean": np.ones(5, dtype=int), "9.running_var": np.ones(5)})
    np.testing.assert_array_equal(buffers["9.running_var"], 2.0)  # nothing was replaced
    with pytest.raises(KeyError, match="no buffer named 'mean'"):
        buffers["mean"] = np.ones(5)
    with pytest.raises(TypeError, match="buffers belong to the network"):
        del buffers["9.running_var"]


def test_vector_classifiers_take_any_layout_and_predict_int64_labels():
    net = nn.Sequential(nn.Linear(12, 3))
    model = nn.Classifier(net, (12,), dtype=np.float64, seed=0)
    X = np.random.default_rng(0).integers(0, 5, size=(7, 3, 2, 2))
    scores = model.loss(X)
    np.testing.assert_array_equal(scores, model.loss(X.reshape(7, 12).astype(np.float64)))
    labels = model.predict(X, batch_size=3)
    assert labels.dtype == np.int64 and labels.shape == (7,)
    np.testing.assert_array_equal(labels, np.argmax(scores, axis=1))
    assert model.predict(X[:0]).dtype == np.int64
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        model.loss(np.zeros((2, 13)))
    with pytest.raises(TypeError, match="real numbers"):
        model.predict(X.astype(bool))
    assert nn.predict_labels(model, X[:0].reshape(0, 12)).dtype == np.int64
    with pytest.raises(ValueError, match="no images"):
        nn.class_scores(model, X[:0].reshape(0, 12))


def test_a_dropout_generator_only_where_there_are_dropout_layers():
    plain = nn.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (4,), seed=0)
    assert not any(isinstance(v, np.random.Generator) for v in vars(plain).values())
    dropping = nn.Classifier(
        nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 2)), (4,), seed=0, fresh_masks=True
    )
    assert dropping.net[0].rng is dropping._dropout_rng


def test_solver_resumes_a_checkpoint_that_kept_running_statistics_in_params(tmp_path):
    """Checkpoints written while convnet.nn kept batch norm's running statistics among the
    parameters (with optimizer state) resume on the same trajectory."""
    solver = small_net_solver
    straight = solver(2)
    straight.train()
    solver(1, checkpoint_dir=tmp_path).train()
    path = tmp_path / "checkpoint.npz"
    state = checkpoint.load_checkpoint(path)
    assert set(state["buffers"]) == set(straight.model.buffers())
    for params, buffers in (("params", "buffers"), ("best_params", "best_buffers")):
        state[params].update(state[buffers])
        state[buffers] = {}
    for name in straight.model.buffers():
        state["optim"][name] = {"learning_rate": 1e-3, "t": 3}
    checkpoint.save_checkpoint(path, state)
    resumed = solver(2, resume_from=path)
    resumed.train()
    assert resumed.loss_history == straight.loss_history
    for name, value in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value)
    for name, value in straight.model.buffers().items():
        np.testing.assert_array_equal(resumed.model.buffers()[name], value)


def test_checkpoints_need_every_generator_of_the_model_and_may_hold_more(tmp_path):
    """A model without dropout layers keeps no dropout generator (older ones did: a
    checkpoint's state for it is left alone); one the model has must be in the checkpoint."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4)).astype(np.float32)
    data = {"X_train": X[:10], "y_train": rng.integers(0, 2, 10), "X_val": X[10:]}
    data["y_val"] = rng.integers(0, 2, 10)

    def solver(dropout: bool, **options) -> Solver:
        layers, names = ([nn.Dropout(0.5)], ["drop"]) if dropout else ([], [])
        net = nn.Sequential(*layers, nn.Linear(4, 2), names=[*names, "fc"])
        model = nn.Classifier(net, (4,), fresh_masks=True)
        return Solver(model, data, batch_size=5, num_epochs=1, progress=False, **options)

    solver(True, checkpoint_dir=tmp_path / "dropout").train()
    solver(False, checkpoint_dir=tmp_path / "plain").train()
    assert solver(False, resume_from=tmp_path / "dropout" / "checkpoint.npz").epoch == 1
    with pytest.raises(ValueError, match="the model's random generators"):
        solver(True, resume_from=tmp_path / "plain" / "checkpoint.npz")


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: nn.Dropout(0.0), ValueError, "keep probability"),
        (lambda: nn.Dropout(1.5), ValueError, "keep probability"),
        (lambda: nn.Dropout("0.5"), TypeError, "real number"),
        (lambda: nn.BatchNorm2d(0), ValueError, "num_features"),
        (lambda: nn.BatchNorm2d(3, momentum=1.0), ValueError, "momentum"),
        (lambda: nn.BatchNorm1d(3, eps=0), ValueError, "eps"),
        (
            lambda: nn.Classifier(
                nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(32, 2)), (2, 4, 4)
            ),
            ValueError,
            "expects 3 channels",
        ),
        (
            lambda: nn.Classifier(nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2)), (2, 4, 4)),
            ValueError,
            r"samples of shape \(D,\)",
        ),
    ],
)
def test_bad_normalization_and_dropout_layers_are_refused(build, error, message):
    with pytest.raises(error, match=message):
        build()


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("preset", [resnet, vgg])
@pytest.mark.parametrize("input_dim", [(1, 8, 8), (3, 32, 32), (2, 5, 3), (1, 1, 1)])
def test_presets_take_any_input_size(preset, input_dim):
    model = preset(input_dim, num_classes=7, widths=(4, 6), seed=0)
    X = np.random.default_rng(0).standard_normal((3, *input_dim))
    assert model.loss(X).shape == (3, 7)
    loss, grads = model.loss(X, np.array([0, 6, 3]))
    assert np.isfinite(loss) and list(grads) == list(model.params)


def test_resnet_structure_and_names():
    model = resnet((3, 32, 32), seed=0)
    names = list(model.params)
    assert names[:3] == ["stem.conv.w", "stem.bn.gamma", "stem.bn.beta"]
    assert list(model.buffers())[:2] == ["stem.bn.running_mean", "stem.bn.running_var"]
    assert "stage1.0.residual.body.conv1.w" in names
    assert not any(name.startswith("stage1.0.residual.shortcut") for name in names)
    assert model.params["stage2.0.residual.shortcut.conv.w"].shape == (32, 16, 1, 1)
    assert model.params["fc.w"].shape == (64, 10)
    assert model.net["stage3"].output_shape((32, 16, 16)) == (64, 8, 8)
    deeper = resnet((1, 8, 8), widths=(8,), blocks=3, seed=0)
    assert "stage1.2.residual.body.bn2.beta" in deeper.params


def test_vgg_structure():
    model = vgg((1, 8, 8), widths=(8, 16, 32, 32), hidden_dim=20, dropout=0.8, seed=0)
    assert model.params["fc1.w"].shape == (32, 20)  # 8 -> 4 -> 2 -> 1, then no more pooling
    assert [layer.p for layer in model.net.layers() if isinstance(layer, nn.Dropout)] == [0.8] * 2
    with pytest.raises(ValueError, match="keep probability"):
        vgg((1, 8, 8), dropout=0)
    with pytest.raises(TypeError, match="widths"):
        resnet((1, 8, 8), widths=8)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        resnet((8, 8))


def dilated_grouped_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, pad=2, dilation=(2, 1)),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Residual(nn.Conv2d(4, 4, 3, pad=1, groups=4)),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 1, groups=2),
        nn.GlobalAvgPool(),
        nn.Dropout(),
        nn.Linear(6, 4),
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda **kw: resnet((2, 8, 8), num_classes=4, widths=(3, 5), **kw),
        lambda **kw: vgg((2, 8, 8), num_classes=4, widths=(3, 5), **kw),
        lambda **kw: nn.Classifier(dilated_grouped_net(), (2, 8, 8), **kw),
    ],
    ids=["resnet", "vgg", "dilated-grouped"],
)
def test_networks_match_the_same_network_in_torch(build):
    torch = pytest.importorskip("torch")
    model = build(reg=0.1, dtype=np.float64, seed=0)
    rng = np.random.default_rng(1)
    for name, value in [*model.params.items(), *model.buffers().items()]:
        if name.endswith(("gamma", "beta", ".b")):
            model.params[name] = rng.standard_normal(value.shape)
        elif name.endswith("running_mean"):
            model.buffers()[name] = rng.standard_normal(value.shape)
        elif name.endswith("running_var"):
            model.buffers()[name] = rng.uniform(0.5, 2, value.shape)
    X, y = rng.standard_normal((6, 2, 8, 8)), np.array([3, 0, 1, 2, 2, 1])
    for layer in model.net.layers():
        if isinstance(layer, nn.Dropout):
            layer.p = 1.0  # no masks, so both libraries compute the same training loss
    net = torch_network(model.net, torch)
    scores = model.loss(X)
    np.testing.assert_allclose(
        scores, net.eval()(torch.from_numpy(X)).detach().numpy(), rtol=1e-10, atol=1e-12
    )
    loss, grads = model.loss(X, y)
    reference = torch.nn.functional.cross_entropy(net.train()(torch.from_numpy(X)), torch.tensor(y))
    reference.backward()
    torch_grads = {}
    for name, converted in zip(model.params, net.parameters(), strict=True):
        grad = converted.grad.numpy()
        torch_grads[name] = grad.T if grad.ndim == 2 else grad  # Linear: (out, in) in torch
    weights = model.net.regularized()
    penalty = sum(float(np.sum(model.params[name] ** 2)) for name in weights)
    assert loss == pytest.approx(reference.item() + 0.05 * penalty, rel=1e-10)
    for name, grad in torch_grads.items():
        extra = 0.1 * model.params[name] if name in weights else 0
        np.testing.assert_allclose(grads[name], grad + extra, rtol=1e-8, atol=1e-10, err_msg=name)
    buffers = [b for b in net.buffers() if b.dtype != torch.int64]
    for (name, value), buffer in zip(model.buffers().items(), buffers, strict=True):
        np.testing.assert_allclose(value, buffer.numpy(), rtol=1e-10, err_msg=name)


def test_convnet_train_builds_the_presets(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from convnet.cli import main
    from convnet.cli.options import COMMON_DEFAULTS, DEFAULTS, build_model

    options = {**COMMON_DEFAULTS, **DEFAULTS[("cifar10", "vgg")], "model": "vgg"}
    built = build_model(options, {"X_train": np.zeros((1, 3, 32, 32), dtype=np.float32)})
    assert built.input_dim == (3, 32, 32)
    assert [layer.p for layer in built.net.layers() if isinstance(layer, nn.Dropout)] == [0.5] * 2
    model = "resnet"
    out = tmp_path / "run"
    arguments = ["train", "--model", model, "--epochs", "1", "--num-train", "60"]
    assert main([*arguments, "--out", str(out), "--no-progress", "--quiet"]) == 0
    loaded = load_model(out / "model.npz", expected="Classifier")
    assert loaded.input_dim == (1, 8, 8)
    assert json.loads((out / "summary.json").read_text())["options"]["model"] == model
    resumed = [*arguments[:4], "2", "--out", str(out), "--resume", "--no-progress", "--quiet"]
    assert main(resumed) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
