"""Seeded models whose numbers are pinned: the configurations, and the script that wrote them.

``tests/data/model_numbers.npz`` holds, for every configuration below (float64), the initial
parameters, the scores, the loss and gradients of two training calls, the running
statistics after them and the scores after them, as convnet computed them at commit 43e8f9f
(before ThreeLayerConvNet and FullyConnectedNet were rebuilt on :mod:`convnet.nn`).
``tests/data/models_v1/*.npz`` are model files :func:`convnet.models.save_model` wrote then.
``tests/test_model_numbers.py`` checks today's convnet against both.

Run ``python tests/model_fixtures.py`` only when the numbers are meant to change: it
overwrites the pinned values with what the current code computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convnet import nn
from convnet.models import FullyConnectedNet, ThreeLayerConvNet, save_model, vgg

DATA = Path(__file__).with_name("data")
NUMBERS = DATA / "model_numbers.npz"
OLD_MODELS = DATA / "models_v1"


def small_net() -> nn.Sequential:
    """Convolutions, a residual block, batch norms (2-D and 1-D), pools and dropout."""
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, pad=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, pad=1, bias=False), nn.ReLU())),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.7),
        nn.Linear(27, 5),
        nn.BatchNorm1d(5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )


# name -> (builder, sample shape, number of classes)
MODELS: dict[str, tuple[Any, tuple[int, ...], int]] = {
    "conv_he_odd": (
        lambda: ThreeLayerConvNet(
            input_dim=(2, 9, 7),
            num_filters=3,
            filter_size=3,
            hidden_dim=6,
            num_classes=4,
            reg=0.3,
            dtype=np.float64,
            init="he",
            seed=1,
        ),
        (2, 9, 7),
        4,
    ),
    "conv_normal_even": (
        lambda: ThreeLayerConvNet(
            input_dim=(3, 8, 8),
            num_filters=4,
            filter_size=4,
            hidden_dim=5,
            num_classes=3,
            weight_scale=0.1,
            dtype=np.float64,
            seed=7,
        ),
        (3, 8, 8),
        3,
    ),
    "fc_dropout": (
        lambda: FullyConnectedNet(
            [6, 5],
            input_dim=12,
            num_classes=3,
            dropout_keep_ratio=0.6,
            reg=0.2,
            weight_scale=0.5,
            dtype=np.float64,
            seed=5,
        ),
        (12,),
        3,
    ),
    "fc_batchnorm_dropout": (
        lambda: FullyConnectedNet(
            [6, 5],
            input_dim=12,
            num_classes=3,
            dropout_keep_ratio=0.75,
            normalization="batchnorm",
            reg=0.1,
            weight_scale=0.5,
            dtype=np.float64,
            seed=11,
        ),
        (12,),
        3,
    ),
    "fc_layernorm_he": (
        lambda: FullyConnectedNet(
            [7, 4],
            input_dim=12,
            num_classes=3,
            normalization="layernorm",
            dtype=np.float64,
            init="he",
            seed=3,
        ),
        (12,),
        3,
    ),
    "fc_batchnorm_fresh_masks": (
        lambda: FullyConnectedNet(
            [7],
            input_dim=12,
            num_classes=3,
            dropout_keep_ratio=0.5,
            normalization="batchnorm",
            weight_scale=0.3,
            dtype=np.float64,
            seed=2,
            fresh_masks=True,
        ),
        (12,),
        3,
    ),
    "fc_linear": (
        lambda: FullyConnectedNet([], input_dim=12, num_classes=3, dtype=np.float64, seed=0),
        (12,),
        3,
    ),
    "classifier": (
        lambda: nn.Classifier(small_net(), (2, 6, 6), reg=0.2, dtype=np.float64, seed=0),
        (2, 6, 6),
        3,
    ),
    "vgg_fresh_masks": (
        lambda: vgg(
            (1, 8, 8),
            num_classes=3,
            widths=(3, 4),
            hidden_dim=6,
            dropout=0.7,
            dtype=np.float64,
            seed=0,
            fresh_masks=True,
        ),
        (1, 8, 8),
        3,
    ),
}


def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs (6 samples) and labels every configuration is computed on."""
    _, shape, classes = MODELS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    return rng.standard_normal((6, *shape)), rng.integers(0, classes, 6)


def running_statistics(model: Any) -> dict[str, np.ndarray]:
    """Batch norm's running statistics by name, wherever the model keeps them."""
    names = ("running_mean", "running_var")
    found = {k: v for k, v in model.params.items() if k.endswith(names)}
    if hasattr(model, "buffers"):
        found.update(model.buffers())
    return found


def trainable(model: Any) -> dict[str, np.ndarray]:
    """The parameters that gradients train (not running statistics)."""
    names = ("running_mean", "running_var")
    return {k: v for k, v in model.params.items() if not k.endswith(names)}


def numbers(name: str) -> dict[str, np.ndarray]:
    """What the configuration ``name`` computes, keyed ``<part>/<parameter name>``."""
    build = MODELS[name][0]
    model = build()
    X, y = batch(name)
    result = {f"init/{k}": v.copy() for k, v in trainable(model).items()}
    result["scores"] = model.loss(X)
    for call in (1, 2):
        loss, grads = model.loss(X, y)
        result[f"loss{call}"] = np.array(loss)
        result.update({f"grads{call}/{k}": grads[k] for k in trainable(model)})
    result.update({f"buffers/{k}": v.copy() for k, v in running_statistics(model).items()})
    result["scores_after"] = model.loss(X)
    return result


SAVED = ("conv_he_odd", "fc_batchnorm_dropout", "classifier")


def write() -> None:
    """Write ``NUMBERS`` and, for the configurations in ``SAVED``, a model file after one
    training call (its test-mode scores go into ``NUMBERS`` as ``<name>/saved_scores``)."""
    arrays = {}
    for name in MODELS:
        arrays.update({f"{name}/{key}": value for key, value in numbers(name).items()})
    OLD_MODELS.mkdir(parents=True, exist_ok=True)
    for name in SAVED:
        model = MODELS[name][0]()
        X, y = batch(name)
        model.loss(X, y)  # running statistics away from 0 and 1
        save_model(model, OLD_MODELS / f"{name}.npz")
        arrays[f"{name}/saved_scores"] = model.loss(X)
    np.savez_compressed(NUMBERS, **arrays)


if __name__ == "__main__":
    write()
