"""The training steps ``convnet bench`` times: one SGD step of a network in convnet and in
PyTorch with the same weights."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from convnet.bench.torch_reference import torch_network
from convnet.models import ThreeLayerConvNet, resnet
from convnet.optim import sgd

TRAIN_STEPS = {"3layer": 50, "resnet": 64}


def train_step_candidates(
    network: str, batch: int, dtype: np.dtype, torch, rng: np.random.Generator
) -> dict[str, Callable[[], object]]:
    """One SGD training step (forward, softmax loss, backward, update) of ``network`` on
    CIFAR-10 sized images, in convnet and (when installed) in PyTorch with the same
    weights: ThreeLayerConvNet's defaults (``3layer``) or ``convnet.models.resnet()``."""
    if network == "3layer":
        model = ThreeLayerConvNet(dtype=dtype, seed=0)
    else:
        model = resnet((3, 32, 32), dtype=dtype, seed=0)
    X = rng.standard_normal((batch, 3, 32, 32)).astype(dtype)
    y = rng.integers(0, 10, size=batch)
    config = {"learning_rate": 1e-3}

    def convnet_step() -> None:
        _, grads = model.loss(X, y)
        for name, value in model.params.items():
            model.params[name], _ = sgd(value, grads[name], config)

    candidates: dict[str, Callable[[], object]] = {"fast f+b": convnet_step}
    if torch is not None:
        net = torch_network(model.net, torch).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
        images, labels = torch.from_numpy(X), torch.from_numpy(y)

        def torch_step() -> None:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(images), labels).backward()
            optimizer.step()

        candidates["torch f+b"] = torch_step
    return candidates
