"""The training steps ``convnet bench`` times: one SGD step (forward, softmax loss,
backward, update) of a network in convnet and of the same network in PyTorch with the same
weights, PyTorch in both memory layouts (NCHW and channels_last, oneDNN's own)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from convnet.bench.layer_times import LayerClock, NamedLayers, convnet_timers, torch_timers
from convnet.bench.torch_reference import torch_network
from convnet.models import ThreeLayerConvNet, resnet, vgg
from convnet.nn import Classifier, Module
from convnet.optim import sgd

IMAGE_SHAPE = (3, 32, 32)
LEARNING_RATE = 1e-3
CONVNET = "convnet"
LAYOUTS = ("NCHW", "channels_last")
TORCH_STEPS = tuple(f"torch {layout}" for layout in LAYOUTS)


@dataclass(frozen=True)
class Network:
    """A network ``convnet bench`` trains on 3x32x32 images.

    Attributes
    ----------
    build : callable
        dtype -> the model (seeded: the same weights every time).
    batch : int
        The default batch.
    label : str
        How the tables name it.
    float64 : bool
        Whether the training-step table times it in float64 too (PyTorch's float64 steps of
        the wide resnet and vgg take seconds: only float32 for them).
    dropout : bool
        Whether it has dropout layers (random masks: no precision comparison).
    """

    build: Callable[[np.dtype], Classifier]
    batch: int
    label: str
    float64: bool = True
    dropout: bool = False


TRAIN_STEPS = {
    "3layer": Network(
        lambda dtype: ThreeLayerConvNet(dtype=dtype, seed=0), 50, "ThreeLayerConvNet"
    ),
    "resnet": Network(lambda dtype: resnet(dtype=dtype, seed=0), 64, "resnet() (16,32,64)x1"),
    "resnet-wide": Network(
        lambda dtype: resnet(widths=(32, 64, 128), blocks=2, dtype=dtype, seed=0),
        64,
        "resnet (32,64,128)x2",
        float64=False,
    ),
    "vgg": Network(
        lambda dtype: vgg(dtype=dtype, seed=0), 64, "vgg()", float64=False, dropout=True
    ),
}


class ConvnetStep:
    """One SGD step of a convnet model on a fixed batch, when called.

    Parameters
    ----------
    model : Classifier
    X : ndarray, shape (N, C, H, W)
    y : ndarray of int, shape (N,)
    """

    def __init__(self, model: Classifier, X: np.ndarray, y: np.ndarray) -> None:
        self.model, self.X, self.y = model, X, y
        self.config = {"learning_rate": LEARNING_RATE}

    def __call__(self) -> None:
        _, grads = self.model.loss(self.X, self.y)
        for name, value in self.model.params.items():
            self.model.params[name], _ = sgd(value, grads[name], self.config)

    def instrument(self, layers: NamedLayers, clock: LayerClock) -> AbstractContextManager:
        """Inside the block the model's layers report to ``clock``
        (:func:`convnet.bench.layer_times.convnet_timers`)."""
        return convnet_timers(self.model.net, layers, clock)


class TorchStep:
    """One SGD step of the same network in PyTorch, with a copy of the model's weights, in
    one memory layout, when called.

    Parameters
    ----------
    model : Classifier
        Its ``net`` is translated by :func:`convnet.bench.torch_reference.torch_network`.
    X : ndarray, shape (N, C, H, W)
    y : ndarray of int, shape (N,)
    torch : module
    layout : {"NCHW", "channels_last"}
        channels_last converts the network and the images
        (``net.to(memory_format=torch.channels_last)``).

    Attributes
    ----------
    net : torch.nn.Module
    counterparts : dict
        Every module of ``model.net`` -> its PyTorch module in ``net``.
    """

    def __init__(
        self, model: Classifier, X: np.ndarray, y: np.ndarray, torch: Any, layout: str
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.counterparts: dict[Module, Any] = {}
        net = torch_network(model.net, torch, self.counterparts).train()
        images = torch.from_numpy(X)
        if layout == "channels_last":
            net = net.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        self.net, self.images, self.labels = net, images, torch.from_numpy(y)
        self.cross_entropy = torch.nn.functional.cross_entropy
        self.optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)

    def __call__(self) -> None:
        self.optimizer.zero_grad()
        self.cross_entropy(self.net(self.images), self.labels).backward()
        self.optimizer.step()

    def instrument(self, layers: NamedLayers, clock: LayerClock) -> AbstractContextManager:
        """Inside the block the counterparts of ``layers`` report to ``clock``
        (:func:`convnet.bench.layer_times.torch_timers`)."""
        return torch_timers(self.net, self.counterparts, layers, clock)


def train_step_candidates(
    network: str, batch: int, dtype: np.dtype, torch, rng: np.random.Generator
) -> dict[str, Callable[[], object]]:
    """One SGD training step of the ``TRAIN_STEPS`` network ``network`` on a batch of
    ``batch`` random 3x32x32 images: ``CONVNET``'s, and (when ``torch`` is given) PyTorch's
    with the same weights in each layout (``TORCH_STEPS``: "torch NCHW", "torch
    channels_last")."""
    model = TRAIN_STEPS[network].build(dtype)
    X = rng.standard_normal((batch, *IMAGE_SHAPE)).astype(dtype)
    y = rng.integers(0, model.num_classes, size=batch)
    candidates: dict[str, Callable[[], object]] = {CONVNET: ConvnetStep(model, X, y)}
    if torch is not None:
        for name, layout in zip(TORCH_STEPS, LAYOUTS, strict=True):
            candidates[name] = TorchStep(model, X, y, torch, layout)
    return candidates
