"""convnet's networks as PyTorch modules with the same weights, the reference ``convnet
bench`` times a training step against (and the tests compare with). PyTorch is imported
only inside these functions."""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet import nn
from convnet.models import ThreeLayerConvNet
from convnet.nn import Module


def load_torch(threads: int) -> Any:
    """The ``torch`` module set to ``threads`` threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def torch_network(net: Module, torch) -> Any:
    """The same network as a ``torch.nn.Module``, with a copy of ``net``'s parameters.

    Every layer of :mod:`convnet.nn` maps to its PyTorch counterpart (batch norm's momentum
    ``m`` to PyTorch's ``1 - m``, dropout's keep probability ``p`` to ``1 - p``, a linear
    layer's ``w`` (in, out) to ``weight`` (out, in)); a :class:`convnet.nn.Residual` adds
    its body and its shortcut.
    """
    from torch import nn as tnn

    class TorchResidual(tnn.Module):
        def __init__(self, body: Any, shortcut: Any) -> None:
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x: Any) -> Any:
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    dtype = next(iter(net.params.values())).dtype if net.params else np.dtype(np.float32)
    torch_dtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype.type]

    def tensor(array: np.ndarray) -> Any:
        return tnn.Parameter(torch.from_numpy(np.array(array)))

    def convert(module: Module) -> Any:
        if isinstance(module, nn.Sequential):
            return tnn.Sequential(*(convert(child) for _, child in module.children()))
        if isinstance(module, nn.Residual):
            shortcut = None if module.shortcut is None else convert(module.shortcut)
            return TorchResidual(convert(module.body), shortcut)
        p = module.params
        if isinstance(module, nn.Conv2d):
            layer = tnn.Conv2d(
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.pad,
                module.dilation,
                module.groups,
                module.bias,
            )
            layer.weight = tensor(p["w"])
            if module.bias:
                layer.bias = tensor(p["b"])
            return layer
        if isinstance(module, nn.Linear):
            layer = tnn.Linear(module.in_features, module.out_features)
            layer.weight, layer.bias = tensor(p["w"].T), tensor(p["b"])
            return layer
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            kind = tnn.BatchNorm2d if isinstance(module, nn.BatchNorm2d) else tnn.BatchNorm1d
            layer = kind(module.num_features, module.eps, 1 - module.momentum, dtype=torch_dtype)
            layer.weight, layer.bias = tensor(p["gamma"]), tensor(p["beta"])
            layer.running_mean.copy_(torch.from_numpy(p["running_mean"]))
            layer.running_var.copy_(torch.from_numpy(p["running_var"]))
            return layer
        if isinstance(module, nn.AvgPool2d):
            return tnn.AvgPool2d(module.kernel_size, module.stride)
        if isinstance(module, nn.MaxPool2d):
            return tnn.MaxPool2d(module.kernel_size, module.stride)
        if isinstance(module, nn.GlobalAvgPool):
            return tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten())
        if isinstance(module, nn.Dropout):
            return tnn.Dropout(1 - module.p)
        simple = {nn.ReLU: tnn.ReLU, nn.Flatten: tnn.Flatten}
        return simple[type(module)]()

    return convert(net).to(torch_dtype)


def torch_three_layer_net(model: ThreeLayerConvNet, torch) -> Any:
    """ThreeLayerConvNet as a ``torch.nn.Module`` (conv - relu - 2x2 max pool - affine -
    relu - affine), with a copy of ``model``'s parameters."""
    from torch import nn as tnn

    w1 = model.params["W1"]
    filters, channels, size = w1.shape[0], w1.shape[1], w1.shape[2]
    hidden, classes = model.params["W3"].shape
    net = tnn.Sequential(
        tnn.Conv2d(channels, filters, size, padding=model.conv_param["pad"]),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Flatten(),
        tnn.Linear(model.params["W2"].shape[0], hidden),
        tnn.ReLU(),
        tnn.Linear(hidden, classes),
    ).to({np.float32: torch.float32, np.float64: torch.float64}[w1.dtype.type])
    with torch.no_grad():
        for layer, weight, bias, transpose in (
            (0, "W1", "b1", False),
            (4, "W2", "b2", True),
            (6, "W3", "b3", True),
        ):
            w = model.params[weight]
            net[layer].weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T if transpose else w)))
            net[layer].bias.copy_(torch.from_numpy(model.params[bias]))
    return net
