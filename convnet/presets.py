"""Ready-made composed networks: a small residual net and a VGG-style net, any input size.

Both return a :class:`convnet.nn.Classifier`, which the Solver trains and
:func:`convnet.serialization.save_model` stores like the other models (``convnet train --model
resnet`` / ``--model vgg``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convnet._validation import _positive_int, image_shape
from convnet.nn import (
    BatchNorm2d,
    Classifier,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Residual,
    Sequential,
)


def _widths(widths: Sequence[int]) -> list[int]:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
        raise TypeError(f"widths must be a non-empty sequence of ints, got {widths!r}")
    return [_positive_int(width, "widths", 1) for width in widths]


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> Sequential:
    """3x3 convolution (no bias, padding 1), batch norm, ReLU: names conv, bn, relu."""
    return Sequential(
        Conv2d(in_channels, out_channels, 3, stride=stride, pad=1, bias=False),
        BatchNorm2d(out_channels),
        ReLU(),
        names=["conv", "bn", "relu"],
    )


def basic_block(in_channels: int, out_channels: int, stride: int = 1) -> Sequential:
    """ResNet's basic block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    The shortcut is the identity when the shape stays, else a 1x1 convolution with the
    block's stride followed by batch norm. Names: ``residual.body.{conv1,bn1,conv2,bn2}``,
    ``residual.shortcut.{conv,bn}``, ``relu``.
    """
    body = Sequential(
        Conv2d(in_channels, out_channels, 3, stride=stride, pad=1, bias=False),
        BatchNorm2d(out_channels),
        ReLU(),
        Conv2d(out_channels, out_channels, 3, pad=1, bias=False),
        BatchNorm2d(out_channels),
        names=["conv1", "bn1", "relu", "conv2", "bn2"],
    )
    shortcut: Module | None = None
    if stride != 1 or in_channels != out_channels:
        shortcut = Sequential(
            Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            BatchNorm2d(out_channels),
            names=["conv", "bn"],
        )
    return Sequential(Residual(body, shortcut), ReLU(), names=["residual", "relu"])


def resnet_net(
    input_channels: int, num_classes: int, widths: Sequence[int], blocks: int
) -> Sequential:
    """The network of :func:`resnet` (without initialization or a classifier)."""
    widths = _widths(widths)
    blocks = _positive_int(blocks, "blocks", 1)
    parts: list[Module] = [conv_bn_relu(input_channels, widths[0])]
    names = ["stem"]
    previous = widths[0]
    for stage, width in enumerate(widths, start=1):
        stride = 1 if stage == 1 else 2
        stage_blocks = [basic_block(previous, width, stride)]
        stage_blocks += [basic_block(width, width) for _ in range(blocks - 1)]
        parts.append(Sequential(*stage_blocks))
        names.append(f"stage{stage}")
        previous = width
    parts += [GlobalAvgPool(), Linear(previous, num_classes)]
    names += ["pool", "fc"]
    return Sequential(*parts, names=names)


def resnet(
    input_dim: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    widths: Sequence[int] = (16, 32, 64),
    blocks: int = 1,
    reg: float = 0.0,
    dtype: Any = np.float32,
    init: str = "he",
    weight_scale: float = 1e-2,
    seed: int | None = None,
    *,
    fresh_masks: bool = False,
) -> Classifier:
    """A small residual net: conv-BN-ReLU stem, stages of basic blocks, global average
    pooling, one linear layer.

    Stage i has ``widths[i]`` channels and ``blocks`` basic blocks (:func:`basic_block`);
    every stage after the first halves the height and width (stride 2, rounding up), so any
    input size works: 8x8 digits end in 2x2 maps, 32x32 CIFAR-10 images in 8x8.

    Parameters
    ----------
    input_dim : (C, H, W), default (3, 32, 32)
    num_classes : int, default 10
    widths : sequence of int, default (16, 32, 64)
    blocks : int, default 1
        Basic blocks per stage.
    reg, dtype, init, weight_scale, seed, fresh_masks
        As for :class:`convnet.nn.Classifier` (He initialization by default).
    """
    channels, height, width = image_shape(input_dim)
    net = resnet_net(channels, _positive_int(num_classes, "num_classes", 1), widths, blocks)
    return Classifier(
        net,
        (channels, height, width),
        reg=reg,
        dtype=dtype,
        init=init,
        weight_scale=weight_scale,
        seed=seed,
        fresh_masks=fresh_masks,
    )


def vgg(
    input_dim: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    hidden_dim: int = 256,
    dropout: float = 0.5,
    reg: float = 0.0,
    dtype: Any = np.float32,
    init: str = "he",
    weight_scale: float = 1e-2,
    seed: int | None = None,
    *,
    fresh_masks: bool = False,
) -> Classifier:
    """A VGG-style net with batch norm and dropout.

    Stage i: two conv-BN-ReLU (3x3, ``widths[i]`` channels), then a 2x2 max pool while the
    maps are at least 2x2 (so any input size works); then Flatten, Dropout, Linear to
    ``hidden_dim``, ReLU, Dropout, Linear to the classes.

    Parameters
    ----------
    input_dim : (C, H, W), default (3, 32, 32)
    num_classes : int, default 10
    widths : sequence of int, default (32, 64, 128)
    hidden_dim : int, default 256
    dropout : float in (0, 1], default 0.5
        KEEP probability of the two dropout layers (1: none).
    reg, dtype, init, weight_scale, seed, fresh_masks
        As for :class:`convnet.nn.Classifier`.
    """
    channels, height, width = image_shape(input_dim)
    widths = _widths(widths)
    hidden_dim = _positive_int(hidden_dim, "hidden_dim", 1)
    num_classes = _positive_int(num_classes, "num_classes", 1)
    parts: list[Module] = []
    names = []
    previous = channels
    for stage, stage_width in enumerate(widths, start=1):
        layers: list[Module] = [
            conv_bn_relu(previous, stage_width),
            conv_bn_relu(stage_width, stage_width),
        ]
        layer_names = ["block1", "block2"]
        if height >= 2 and width >= 2:
            layers.append(MaxPool2d(2))
            layer_names.append("pool")
            height, width = height // 2, width // 2
        parts.append(Sequential(*layers, names=layer_names))
        names.append(f"stage{stage}")
        previous = stage_width
    parts += [
        Flatten(),
        Dropout(dropout),
        Linear(previous * height * width, hidden_dim),
        ReLU(),
        Dropout(dropout),
        Linear(hidden_dim, num_classes),
    ]
    names += ["flatten", "drop1", "fc1", "relu", "drop2", "fc2"]
    return Classifier(
        Sequential(*parts, names=names),
        (channels, *image_shape(input_dim)[1:]),
        reg=reg,
        dtype=dtype,
        init=init,
        weight_scale=weight_scale,
        seed=seed,
        fresh_masks=fresh_masks,
    )
