"""The nn layers that importing ONNX graphs needs: padded MaxPool2d / AvgPool2d,
ConvTranspose2d and Pad2d; gradients, configurations, saving, and PyTorch's outputs."""

from __future__ import annotations

import numpy as np
import pytest
from test_nn import check_classifier_gradients
from tolerances import TOLERANCE

from convnet import nn
from convnet.serialization import load_model, save_model


def padded_net() -> nn.Sequential:
    """Every new layer and argument, on (2, 5, 4) inputs, ending in 3 scores."""
    return nn.Sequential(
        nn.Pad2d((0, 1, 2, 1)),
        nn.ConvTranspose2d(2, 4, 3, stride=2, pad=1, output_pad=(1, 0), groups=2),
        nn.Pad2d((-1, 0, 1, -2)),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, pad=1),
        nn.Pad2d(1, value=-np.inf),
        nn.MaxPool2d((3, 2), stride=1, pad=(1, 0)),
        nn.AvgPool2d(3, stride=1, pad=1, count_include_pad=False),
        nn.AvgPool2d(2, stride=(1, 2), pad=1),
        nn.Flatten(),
        nn.Linear(160, 3),
    )


def build(seed: int = 0) -> nn.Classifier:
    """The classifier with biases away from 0: the zero padding in front of the transposed
    convolution would otherwise leave outputs at the ReLU's kink."""
    model = nn.Classifier(padded_net(), (2, 5, 4), dtype=np.float64, seed=seed)
    model.params["1.b"] = np.random.default_rng(seed).uniform(0.5, 1.0, 4)
    return model


def test_gradients() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 2, 5, 4))
    check_classifier_gradients(build, X, np.array([0, 2]))


def test_save_and_load_keep_every_argument(tmp_path) -> None:
    model = build()
    X = np.random.default_rng(1).standard_normal((3, 2, 5, 4))
    loaded = load_model(save_model(model, tmp_path / "padded.npz"))
    assert loaded.net.config() == model.net.config()
    np.testing.assert_array_equal(loaded.loss(X), model.loss(X))


def test_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    from convnet.bench.torch_reference import torch_network

    model = build(seed=3)
    X = np.random.default_rng(2).standard_normal((3, 2, 5, 4))
    net = torch_network(model.net, torch).eval()
    expected = net(torch.from_numpy(X)).detach().numpy()
    tol = TOLERANCE[np.dtype(np.float64)]
    np.testing.assert_allclose(model.loss(X), expected, rtol=tol, atol=tol * np.abs(expected).max())


def test_configs_leave_out_default_padding() -> None:
    assert nn.MaxPool2d(2).config() == {"type": "MaxPool2d", "kernel_size": 2, "stride": 2}
    assert nn.AvgPool2d(3, 1, (1, 0)).config() == {
        "type": "AvgPool2d",
        "kernel_size": 3,
        "stride": 1,
        "pad": [1, 0],
    }
    assert nn.Pad2d(2).pad == (2, 2, 2, 2)
    assert nn.Pad2d((1, 3)).pad == (1, 3, 1, 3)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: nn.MaxPool2d(2, pad=2), ValueError, "smaller than the window"),
        (lambda: nn.AvgPool2d(3, pad=(0, 3)), ValueError, "smaller than the window"),
        (lambda: nn.AvgPool2d(2, count_include_pad=1), TypeError, "count_include_pad"),
        (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, output_pad=2), ValueError, "output_pad"),
        (lambda: nn.ConvTranspose2d(3, 2, 3, groups=2), ValueError, "groups=2"),
        (lambda: nn.Pad2d((1, 2, 3)), ValueError, "pad"),
        (lambda: nn.Pad2d(1.0), TypeError, "integers"),
        (lambda: nn.Pad2d(1, value=np.nan), ValueError, "-inf"),
        (lambda: nn.Pad2d(1, value=np.inf), ValueError, "-inf"),
        (lambda: nn.Pad2d(1, value="0"), TypeError, "real number"),
    ],
)
def test_bad_arguments(make, error, message) -> None:
    with pytest.raises(error, match=message):
        make()


def test_negative_padding_crops() -> None:
    layer = nn.Pad2d((-1, 2, 0, -1), value=7.0)
    x = np.arange(12.0).reshape(1, 1, 3, 4)
    out = layer.forward(x)
    np.testing.assert_array_equal(out[0, 0], [[7, 7, 4, 5, 6], [7, 7, 8, 9, 10]])
    dx = layer.backward(np.ones_like(out))
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]])
    with pytest.raises(ValueError, match="crops all of an input 3x4"):
        nn.Pad2d((-2, 0, -1, 0)).output_shape((1, 3, 4))


def test_shapes_that_do_not_fit_are_refused_when_the_classifier_is_built() -> None:
    with pytest.raises(ValueError, match="padded to 3x3"):
        nn.Classifier(nn.Sequential(nn.MaxPool2d(4, pad=1), nn.Flatten()), (1, 1, 1))
    with pytest.raises(ValueError, match="output of input 1x1 would be"):
        nn.Classifier(
            nn.Sequential(nn.ConvTranspose2d(1, 1, 1, pad=1), nn.Flatten(), nn.Linear(1, 2)),
            (1, 1, 1),
        )


def test_padding_that_would_exhaust_memory_is_refused_before_any_allocation() -> None:
    layer = nn.Pad2d((2**31 - 1, 0, 2**31 - 1, 0))
    with pytest.raises(ValueError, match=r"padded output .* would need"):
        layer.forward(np.zeros((1, 1, 1, 1)))
