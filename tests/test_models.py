"""Models: gradients, shapes and dtypes, input checks, overfitting, saving and loading."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from convnet import nn
from convnet.gradient_check import numerical_gradient, relative_error
from convnet.models import FullyConnectedNet, ThreeLayerConvNet, load_model, save_model
from convnet.optim import adam


def check_model_gradients(
    build, X: np.ndarray, y: np.ndarray, tolerance: float = 1e-6, zero: tuple[str, ...] = ()
) -> None:
    """Compare ``build().loss(X, y)``'s gradients with centered differences, parameter by
    parameter. ``build`` makes a fresh float64 model each time, so a seeded model draws the
    same dropout masks at every evaluation. The parameters named in ``zero`` have a gradient
    of exactly 0 (a bias before a batch norm), checked in absolute terms."""
    model = build()
    _, grads = model.loss(X, y)
    assert set(grads) == set(model.params)
    for name, param in model.params.items():

        def loss_at(point: np.ndarray, name: str = name) -> float:
            probe = build()
            probe.params.update(model.params)
            probe.params[name] = point
            return probe.loss(X, y)[0]

        numeric = numerical_gradient(loss_at, param)
        assert grads[name].shape == param.shape
        if name in zero:
            assert np.max(np.abs(numeric)) < 1e-8, name
            np.testing.assert_allclose(grads[name], 0, atol=1e-12, err_msg=name)
        else:
            assert relative_error(grads[name], numeric) < tolerance, name


@pytest.mark.parametrize(
    ("input_dim", "filter_size"), [((2, 9, 7), 3), ((3, 6, 6), 4), ((1, 5, 8), 1)]
)
def test_three_layer_convnet_gradients(input_dim, filter_size):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, *input_dim))
    y = np.array([0, 3, 1])

    def build() -> ThreeLayerConvNet:
        return ThreeLayerConvNet(
            input_dim=input_dim,
            num_filters=3,
            filter_size=filter_size,
            hidden_dim=6,
            num_classes=4,
            reg=0.3,
            dtype=np.float64,
            init="he",
            seed=1,
        )

    check_model_gradients(build, X, y)


@pytest.mark.parametrize(
    ("hidden_dims", "reg", "dropout"),
    [([], 0.0, 1.0), ([7], 0.4, 1.0), ([6, 5], 0.0, 1.0), ([6, 5], 0.2, 0.6)],
)
def test_fully_connected_net_gradients(hidden_dims, reg, dropout):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 2, 2, 3))
    y = np.array([0, 2, 1, 2])

    def build() -> FullyConnectedNet:
        return FullyConnectedNet(
            hidden_dims,
            input_dim=12,
            num_classes=3,
            dropout=dropout,
            reg=reg,
            weight_scale=0.5,
            dtype=np.float64,
            seed=5,
        )

    check_model_gradients(build, X, y)


def test_three_layer_convnet_matches_the_same_net_in_torch():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    model = ThreeLayerConvNet(
        input_dim=(2, 9, 8),
        num_filters=3,
        filter_size=4,
        hidden_dim=5,
        num_classes=4,
        reg=0.2,
        dtype=np.float64,
        init="he",
        seed=0,
    )
    rng = np.random.default_rng(1)
    for name in ("b1", "b2", "b3"):
        model.params[name] = rng.standard_normal(model.params[name].shape)
    X, y = rng.standard_normal((3, 2, 9, 8)), np.array([3, 0, 1])
    loss, grads = model.loss(X, y)

    p = {name: torch.tensor(value, requires_grad=True) for name, value in model.params.items()}
    images = functional.pad(torch.tensor(X), (1, 1, 1, 1))  # pad (4 - 1) // 2 = 1
    pooled = functional.max_pool2d(torch.relu(functional.conv2d(images, p["W1"], p["b1"])), 2)
    hidden = torch.relu(pooled.flatten(1) @ p["W2"] + p["b2"])
    data_loss = functional.cross_entropy(hidden @ p["W3"] + p["b3"], torch.tensor(y))
    penalty = sum((p[name] ** 2).sum() for name in ("W1", "W2", "W3"))
    reference = data_loss + 0.5 * model.reg * penalty
    reference.backward()
    assert loss == pytest.approx(reference.item(), rel=1e-12)
    for name, value in p.items():
        np.testing.assert_allclose(grads[name], value.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_three_layer_convnet_shapes_and_sizes():
    odd = ThreeLayerConvNet(input_dim=(3, 9, 7), num_filters=4, filter_size=5, hidden_dim=8)
    assert odd.params["W1"].shape == (4, 3, 5, 5)
    assert odd.params["W2"].shape == (4 * 4 * 3, 8)  # conv keeps 9x7, pool gives 4x3
    even = ThreeLayerConvNet(input_dim=(3, 16, 16), num_filters=2, filter_size=4)
    assert even.params["W2"].shape == (2 * 7 * 7, 100)  # conv shrinks to 15x15
    default = ThreeLayerConvNet()
    assert {name: p.shape for name, p in default.params.items()} == {
        "W1": (32, 3, 7, 7),
        "b1": (32,),
        "W2": (32 * 16 * 16, 100),
        "b2": (100,),
        "W3": (100, 10),
        "b3": (10,),
    }
    for name, param in default.params.items():
        assert param.dtype == np.float32
        if name.startswith("b"):
            np.testing.assert_array_equal(param, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_scores_and_gradients_keep_the_model_dtype(dtype, kind):
    rng = np.random.default_rng(0)
    if kind == "conv":
        model = ThreeLayerConvNet(
            input_dim=(2, 6, 5), num_filters=3, filter_size=3, hidden_dim=4, dtype=dtype
        )
        X = rng.standard_normal((5, 2, 6, 5))  # float64 input: cast to the model dtype
    else:
        model = FullyConnectedNet([4, 3], input_dim=6, dropout=0.5, dtype=dtype)
        X = rng.integers(0, 255, size=(5, 6), dtype=np.uint8)  # e.g. raw pixels
    y = np.array([0, 1, 2, 3, 9])
    scores = model.loss(X)
    assert scores.shape == (5, 10)
    assert scores.dtype == dtype
    loss, grads = model.loss(X, y)
    assert isinstance(loss, float) and np.isfinite(loss)
    for name, param in model.params.items():
        assert grads[name].dtype == param.dtype == dtype
        assert grads[name].shape == param.shape


def test_initialization_scales_and_seeds():
    he = ThreeLayerConvNet(num_filters=16, init="he", seed=0)
    assert he.params["W1"].std() == pytest.approx(np.sqrt(2 / (3 * 7 * 7)), rel=0.1)
    assert he.params["W2"].std() == pytest.approx(np.sqrt(2 / (16 * 16 * 16)), rel=0.02)
    normal = FullyConnectedNet([50], weight_scale=0.05, seed=0)
    assert normal.params["W1"].std() == pytest.approx(0.05, rel=0.02)
    again = FullyConnectedNet([50], weight_scale=0.05, seed=0)
    other = FullyConnectedNet([50], weight_scale=0.05, seed=1)
    np.testing.assert_array_equal(again.params["W1"], normal.params["W1"])
    assert not np.array_equal(other.params["W1"], normal.params["W1"])


def test_dropout_only_in_training_and_reproducible():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 20)), rng.integers(0, 10, size=8)

    def build(**options) -> FullyConnectedNet:
        return FullyConnectedNet([30, 30], input_dim=20, dropout=0.5, dtype=np.float64, **options)

    model = build(seed=3)
    np.testing.assert_array_equal(model.loss(X), model.loss(X))  # test mode: deterministic
    first = model.loss(X, y)[0]
    assert model.loss(X, y)[0] == first  # seeded: CS231n's fixed masks
    assert build(seed=3).loss(X, y)[0] == first
    unseeded = build()
    assert unseeded.loss(X, y)[0] != unseeded.loss(X, y)[0]  # fresh masks at every call
    streamed = build(seed=3, fresh_masks=True)
    first, second = streamed.loss(X, y)[0], streamed.loss(X, y)[0]
    assert first != second  # fresh masks at each training call, reproducible from the seed
    replay = build(seed=3, fresh_masks=True)
    assert replay.loss(X, y)[0] == first
    assert replay.loss(X, y)[0] == second
    assert load_model_config(streamed)["fresh_masks"] is True
    no_dropout = FullyConnectedNet([30, 30], input_dim=20, dtype=np.float64, seed=3)
    no_dropout.params = streamed.params
    scores = no_dropout.loss(X)
    np.testing.assert_array_equal(scores, streamed.loss(X))
    assert no_dropout.loss(X, y)[0] == no_dropout.loss(X, y)[0]


def load_model_config(model: FullyConnectedNet) -> dict:
    return FullyConnectedNet(**model.config()).config()


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
def test_seeded_dropout_passes_cs231n_gradient_check_on_one_model(normalization):
    """CS231n's check: one seeded model, loss() called again and again by the probes."""
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((5, 12)), np.array([0, 2, 1, 2, 0])
    model = FullyConnectedNet(
        [7, 6],
        input_dim=12,
        num_classes=3,
        dropout_keep_ratio=0.75,
        normalization=normalization,
        reg=0.1,
        weight_scale=0.5,
        dtype=np.float64,
        seed=123,
    )
    loss, grads = model.loss(X, y)
    assert model.loss(X, y)[0] == loss
    for name, param in model.params.items():
        numeric = numerical_gradient(lambda _: model.loss(X, y)[0], param)
        assert relative_error(grads[name], numeric) < 1e-6, name


def test_seeded_dropout_layers_draw_their_own_fixed_masks(monkeypatch):
    from convnet import nn

    original, seen = nn.dropout_forward, []

    def recording(x, dropout_param):
        seen.append(dropout_param["seed"])
        return original(x, dropout_param)

    monkeypatch.setattr(nn, "dropout_forward", recording)
    X, y = np.ones((4, 6)), np.array([0, 1, 2, 0])

    def seeds_of_two_calls(seed: int) -> list:
        seen.clear()
        model = FullyConnectedNet([5, 5, 5], input_dim=6, num_classes=3, dropout=0.5, seed=seed)
        model.loss(X, y)
        model.loss(X, y)
        return list(seen)

    seeds = seeds_of_two_calls(7)
    assert all(isinstance(seed, int) for seed in seeds)
    assert seeds[:3] == seeds[3:] and len(set(seeds[:3])) == 3  # per layer, fixed
    assert set(seeds_of_two_calls(8)).isdisjoint(seeds)


def test_bad_inputs_and_labels_are_refused():
    conv = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=2, filter_size=3, hidden_dim=4)
    X = np.zeros((2, 3, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 8\)"):
        conv.loss(np.zeros((2, 3, 8, 9)))
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 8\)"):
        conv.loss(np.zeros((3, 8, 8)))
    with pytest.raises(TypeError, match="real numbers"):
        conv.loss(X.astype(np.complex64))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        conv.loss(X, np.array([0, 10]))
    with pytest.raises(ValueError, match="shape"):
        conv.loss(X, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integers"):
        conv.loss(X, np.array([0.0, 1.0]))

    fc = FullyConnectedNet([5], input_dim=12)
    fc.loss(np.zeros((2, 3, 2, 2)))  # any layout with 12 features per sample
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        fc.loss(np.zeros((2, 13)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        fc.loss(np.zeros((2, 12)), np.array([-1, 0]))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ThreeLayerConvNet(input_dim=(3, 1, 8)), "too small"),
        (lambda: ThreeLayerConvNet(input_dim=(3, 8)), "input_dim"),
        (lambda: ThreeLayerConvNet(filter_size=0), "filter_size"),
        (lambda: ThreeLayerConvNet(reg=-1.0), "reg"),
        (lambda: ThreeLayerConvNet(init="xavier"), "init"),
        (lambda: FullyConnectedNet([10], dropout=0.0), "keep probability"),
        (lambda: FullyConnectedNet([10], dropout=1.5), "keep probability"),
        (lambda: FullyConnectedNet([10, 0]), "hidden_dims"),
        (lambda: FullyConnectedNet(10), "hidden_dims"),
        (lambda: FullyConnectedNet([10], fresh_masks="yes"), "fresh_masks"),
    ],
)
def test_bad_hyperparameters_are_refused(build, message):
    with pytest.raises((TypeError, ValueError), match=message):
        build()


def test_the_models_are_classifiers_of_nn_layers_with_the_course_names():
    conv = ThreeLayerConvNet(input_dim=(2, 7, 6), num_filters=3, filter_size=3, hidden_dim=5)
    fc = FullyConnectedNet([5, 4], input_dim=6, dropout_keep_ratio=0.5, normalization="batchnorm")
    assert isinstance(conv, nn.Classifier) and isinstance(fc, nn.Classifier)
    assert [type(layer).__name__ for layer in conv.net.layers()] == [
        "Conv2d", "MaxPool2d", "ReLU", "Flatten", "Linear", "ReLU", "Linear",
    ]  # fmt: skip
    assert conv.params["W1"] is conv.net["conv"].params["w"]
    assert conv.params["W2"] is conv.net["hidden"].params["w"]
    assert [name for name, _ in fc.net.children()] == [
        "fc1", "norm1", "relu1", "drop1", "fc2", "norm2", "relu2", "drop2", "fc3",
    ]  # fmt: skip
    assert fc.params["gamma2"] is fc.net["norm2"].params["gamma"]
    assert list(fc.buffers()) == ["running_mean1", "running_var1", "running_mean2", "running_var2"]
    assert not any(name.startswith("running") for name in fc.params)


def test_params_write_through_as_cs231n_code_uses_them():
    """Assigning ``model.params[name]`` or a whole ``model.params`` changes what the next
    loss computes; arrays of another shape or unknown names are refused."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((4, 1, 6, 6)), np.array([0, 1, 2, 3])
    model = ThreeLayerConvNet((1, 6, 6), num_filters=2, filter_size=3, hidden_dim=5, seed=0)
    scores = model.loss(X)
    model.params["b3"] = np.arange(10.0)  # cast to the model's float32
    assert model.params["b3"].dtype == np.float32
    np.testing.assert_allclose(model.loss(X), scores + np.arange(10.0), rtol=1e-5, atol=1e-6)
    model.params = {name: np.zeros_like(value) for name, value in model.params.items()}
    np.testing.assert_array_equal(model.loss(X), 0)
    assert model.loss(X, y)[0] == pytest.approx(np.log(10))
    with pytest.raises(ValueError, match=r"W1 has shape \(2, 1, 3, 3\)"):
        model.params["W1"] = np.zeros((2, 1, 5, 5))
    with pytest.raises(KeyError, match="no parameter named 'W4'"):
        model.params["W4"] = np.zeros(3)
    with pytest.raises(ValueError, match="exactly the names"):
        model.params = {"W1": np.zeros((2, 1, 3, 3))}


@pytest.mark.parametrize("seed", [0, 7, np.int64(3), np.uint8(5)])
def test_seeds_are_non_negative_integers(seed):
    assert ThreeLayerConvNet(input_dim=(1, 4, 4), filter_size=3, seed=seed).seed == seed
    assert FullyConnectedNet([3], input_dim=4, seed=seed).config()["seed"] == seed


@pytest.mark.parametrize(
    ("seed", "error"), [(-1, ValueError), (True, TypeError), (1.5, TypeError), ("3", TypeError)]
)
def test_bad_seeds_are_refused_alike_by_every_model(seed, error):
    builders = [
        lambda: ThreeLayerConvNet(input_dim=(1, 4, 4), filter_size=3, seed=seed),
        lambda: FullyConnectedNet([3], input_dim=4, seed=seed),
        lambda: nn.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (4,), seed=seed),
        lambda: nn.Dropout(0.5, seed=seed),
    ]
    for build in builders:
        with pytest.raises(error, match="seed must be"):
            build()


def test_bad_dtype_is_refused():
    with pytest.raises(TypeError, match="float32 or float64"):
        FullyConnectedNet([3], dtype=np.int32)


def test_three_layer_convnet_overfits_fifty_samples():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, size=50)  # random labels: only memorization fits them
    model = ThreeLayerConvNet(
        input_dim=(1, 8, 8), num_filters=8, filter_size=3, hidden_dim=50, init="he", seed=0
    )
    configs = {name: {"learning_rate": 1e-2} for name in model.params}
    for _ in range(60):
        _, grads = model.loss(X, y)
        for name, param in model.params.items():
            model.params[name], configs[name] = adam(param, grads[name], configs[name])
    assert np.mean(np.argmax(model.loss(X), axis=1) == y) == 1.0


# ---------------------------------------------------------------- saving and loading


def small_models() -> list:
    return [
        ThreeLayerConvNet(
            input_dim=(2, 7, 6), num_filters=3, filter_size=4, hidden_dim=5, reg=0.1, seed=0
        ),
        ThreeLayerConvNet(
            input_dim=(1, 8, 8), num_filters=2, hidden_dim=4, dtype=np.float64, init="he"
        ),
        FullyConnectedNet([5, 4], input_dim=6, num_classes=3, dropout=0.7, seed=2),
        FullyConnectedNet([], input_dim=6, dtype="float64"),
    ]


@pytest.mark.parametrize("model", small_models(), ids=lambda m: type(m).__name__)
def test_save_load_round_trip(tmp_path, model):
    path = tmp_path / "model.bin"  # no .npz suffix: the path is used as given
    assert save_model(model, path) == path
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]
    loaded = load_model(path, expected=type(model).__name__)
    assert type(loaded) is type(model)
    assert loaded.config() == model.config()
    sample_shape = model.input_dim if isinstance(model, ThreeLayerConvNet) else (model.input_dim,)
    X = np.random.default_rng(0).standard_normal((4, *sample_shape))
    np.testing.assert_array_equal(loaded.loss(X), model.loss(X))
    for name, param in model.params.items():
        assert loaded.params[name].dtype == param.dtype
        np.testing.assert_array_equal(loaded.params[name], param)


def test_config_is_json_and_rebuilds_the_model():
    model = small_models()[0]
    config = json.loads(json.dumps(model.config()))
    rebuilt = ThreeLayerConvNet(**config)
    np.testing.assert_array_equal(rebuilt.params["W1"], model.params["W1"])


def rewrite(path, change) -> None:
    """Load the arrays of an .npz file, let ``change`` edit the dict, and write it back."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = dict(archive)
    change(arrays)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def edit_meta(arrays: dict, **fields) -> None:
    meta = json.loads(str(arrays["__convnet_meta__"]))
    meta.update(fields)
    arrays["__convnet_meta__"] = np.array(json.dumps(meta))


@pytest.fixture
def saved_fc(tmp_path):
    path = tmp_path / "fc.npz"
    save_model(FullyConnectedNet([5], input_dim=6, seed=0), path)
    return path


def test_load_refuses_another_architecture(saved_fc):
    with pytest.raises(ValueError, match="holds a FullyConnectedNet, not the expected"):
        load_model(saved_fc, expected="ThreeLayerConvNet")
    with pytest.raises(ValueError, match="not the expected ThreeLayerConvNet"):
        load_model(saved_fc, expected=ThreeLayerConvNet)
    assert isinstance(load_model(saved_fc, expected=FullyConnectedNet), FullyConnectedNet)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(W1=np.zeros((6, 4), dtype=np.float32)), r"W1 has shape \(6, 4\)"),
        (lambda a: a.update(W1=np.zeros((6, 5), dtype=np.int64)), "of floats"),
        (lambda a: a.pop("b2"), r"missing parameters \['b2'\]"),
        (lambda a: a.update(W9=np.zeros(3)), r"unexpected entries \['W9'\]"),
        (lambda a: a.pop("__convnet_meta__"), "not written by save_model"),
        (lambda a: a.update(__convnet_meta__=np.array("{not json")), "unreadable"),
        (lambda a: edit_meta(a, format_version=2), "format_version 2"),
        (lambda a: edit_meta(a, architecture="ResNet"), "unknown architecture 'ResNet'"),
        (lambda a: edit_meta(a, config={"hidden_dims": [5], "dropout": 0}), "invalid"),
        (lambda a: edit_meta(a, config={"hidden_dims": [5], "depth": 3}), "invalid"),
    ],
)
def test_load_refuses_inconsistent_files(saved_fc, change, message):
    rewrite(saved_fc, change)
    with pytest.raises(ValueError, match=message):
        load_model(saved_fc)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is not a model", b"PK\x03\x04 truncated zip", b"\x93NUMPY\x01\x00"],
)
def test_load_refuses_files_that_are_not_npz(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"not a readable \.npz model file"):
        load_model(path)


def test_load_refuses_truncated_and_single_array_files(tmp_path, saved_fc):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(saved_fc.read_bytes()[:-200])
    with pytest.raises(ValueError, match=r"\.npz model file"):
        load_model(truncated)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match=r"single \.npy array"):
        load_model(single)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"corrupt|not a readable"):
        load_model(pickled)


def test_load_corrupt_member_raises_value_error(tmp_path, saved_fc):
    corrupt = tmp_path / "corrupt.npz"
    data = bytearray(saved_fc.read_bytes())
    with zipfile.ZipFile(saved_fc) as archive:
        member = archive.getinfo("W1.npy")
    # Flip a byte in the middle of W1's stored data: the zip CRC check catches it.
    middle = member.header_offset + 30 + len(member.filename) + member.file_size // 2
    data[middle] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_model(corrupt)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model(tmp_path / "absent.npz")


def test_save_and_load_live_in_serialization_and_models_still_exports_them():
    from convnet import models, serialization

    for name in ("save_model", "load_model", "ARCHITECTURES", "FORMAT_VERSION"):
        assert getattr(models, name) is getattr(serialization, name)
    with pytest.raises(AttributeError, match="no attribute 'saved_model'"):
        _ = models.saved_model


def test_save_refuses_unknown_models(tmp_path):
    with pytest.raises(TypeError, match="ThreeLayerConvNet"):
        save_model(object(), tmp_path / "x.npz")


@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_predict_gives_the_argmax_labels_in_batches_and_converts_integers(kind):
    rng = np.random.default_rng(3)
    if kind == "conv":
        model = ThreeLayerConvNet((1, 6, 6), num_filters=2, filter_size=3, hidden_dim=5, seed=1)
    else:
        model = FullyConnectedNet([7], input_dim=36, seed=1)
    pixels = rng.integers(0, 17, size=(23, 1, 6, 6), dtype=np.uint8)
    labels = model.predict(pixels, batch_size=5)
    assert labels.dtype == np.int64 and labels.shape == (23,)
    np.testing.assert_array_equal(labels, np.argmax(model.loss(pixels.astype(np.float32)), axis=1))
    np.testing.assert_array_equal(model.predict(pixels.astype(np.float32)), labels)
    assert model.predict(pixels[:0]).shape == (0,)
    with pytest.raises(TypeError, match="real numbers"):
        model.predict(pixels.astype(bool))
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((2, 1, 5, 6)))
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(pixels, batch_size=0)
