"""convnet's networks as PyTorch modules with the same weights, the reference ``convnet
bench`` times a training step against (and the tests compare with). PyTorch is imported
only inside these functions."""

from __future__ import annotations

from typing import Any

import numpy as np

from convnet import nn
from convnet.bench.layer_times import named_layers
from convnet.nn import Module


def load_torch(threads: int) -> Any:
    """The ``torch`` module set to ``threads`` threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def torch_network(net: Module, torch, counterparts: dict[Module, Any] | None = None) -> Any:
    """The same network as a ``torch.nn.Module``, with a copy of ``net``'s parameters and
    buffers (every convnet model's ``model.net``: ThreeLayerConvNet's, resnet's, ...).

    Every layer of :mod:`convnet.nn` maps to its PyTorch counterpart (batch norm's momentum
    ``m`` to PyTorch's ``1 - m``, dropout's keep probability ``p`` to ``1 - p``, a linear
    layer's ``w`` (in, out) to ``weight`` (out, in)); a :class:`convnet.nn.Residual` adds
    its body and its shortcut.

    ``counterparts``, when given, receives every module of ``net`` (layers and containers)
    -> the PyTorch module made from it (a :class:`convnet.nn.GlobalAvgPool` becomes a
    ``Sequential`` of average pooling and flattening).
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
        converted = convert_module(module)
        if counterparts is not None:
            counterparts[module] = converted
        return converted

    def convert_module(module: Module) -> Any:
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
            statistics = module.buffers()
            layer.running_mean.copy_(torch.from_numpy(statistics["running_mean"]))
            layer.running_var.copy_(torch.from_numpy(statistics["running_var"]))
            return layer
        if isinstance(module, nn.LayerNorm):
            layer = tnn.LayerNorm(module.num_features, module.eps, dtype=torch_dtype)
            layer.weight, layer.bias = tensor(p["gamma"]), tensor(p["beta"])
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


def torch_gradients(net: Module, counterparts: dict[Module, Any]) -> dict[str, np.ndarray]:
    """The gradients PyTorch left on the counterparts of ``net``'s layers (after a backward
    pass), keyed and shaped like ``net.grads``: a linear layer's ``weight`` gradient
    transposed to ``w``'s (in, out)."""
    local_names = {"w": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}
    grads = {}
    for layer_name, layer in named_layers(net):
        for local in layer.params:
            grad = getattr(counterparts[layer], local_names[local]).grad.numpy()
            transpose = isinstance(layer, nn.Linear) and local == "w"
            grads[f"{layer_name}.{local}"] = grad.T if transpose else grad
    return grads
