"""Graphs that PyTorch's exporters write (TorchScript: ``dynamo=False``; ``dynamo=True``)
load into convnet and give PyTorch's eval-mode outputs within 1e-5 (float32), batch
norms' running statistics far from 0 and 1 included."""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_cases import SCORE_TOLERANCE

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
convnet_onnx = pytest.importorskip("convnet.onnx")
tnn = torch.nn


def randomize(module: Any, seed: int) -> Any:
    """Eval mode, with every batch norm's statistics, scale and shift far from 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, tnn.LayerNorm):
            with torch.no_grad():
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) + 0.5)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.5)
        if isinstance(layer, (tnn.BatchNorm1d, tnn.BatchNorm2d)):
            count = layer.num_features
            with torch.no_grad():
                layer.running_mean.copy_(torch.randn(count, generator=generator) * 0.5)
                layer.running_var.copy_(torch.rand(count, generator=generator) * 2.7 + 0.3)
                layer.weight.copy_(torch.rand(count, generator=generator) * 1.5 + 0.5)
                layer.bias.copy_(torch.randn(count, generator=generator) * 0.5)
    return module.eval()


def export(module: Any, x: Any, dynamo: bool, **options: Any) -> Any:
    """``torch.onnx.export`` of ``module`` with a symbolic batch size, as a ModelProto
    (``options`` go to the TorchScript exporter)."""
    names = {"input_names": ["input"], "output_names": ["logits"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            program = torch.onnx.export(
                module,
                (x,),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("N")},),
                verbose=False,
                **names,
            )
            return program.model_proto
        buffer = io.BytesIO()
        torch.onnx.export(
            module,
            (x,),
            buffer,
            dynamo=False,
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            **names,
            **options,
        )
        return onnx.load_from_string(buffer.getvalue())


def check_against_torch(module: Any, x: Any, dynamo: bool, **options: Any) -> Any:
    """Export ``module``, load the graph into convnet, compare the scores; returns the
    graph."""
    proto = export(module, x, dynamo, **options)
    model = convnet_onnx.from_onnx(proto)
    other = torch.randn(1, *x.shape[1:], generator=torch.Generator().manual_seed(9))
    for images in (x, other):  # and a batch size other than the exported one
        assert_matches_torch(model.loss(images.numpy()), module, images)
    return proto


def float32_sensitivity(module: Any, x: Any, trials: int = 3) -> np.ndarray:
    """How far the exact outputs (float64) move when every weight, statistic and input
    moves by float32's rounding (relative 2**-24): the error a float32 implementation may
    carry, large where a small output is the difference of large terms."""
    exact = copy.deepcopy(module).double()
    generator = torch.Generator().manual_seed(0)

    def jitter(tensor: Any) -> Any:
        noise = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
        return tensor * (1 + (2 * noise - 1) * 2.0**-24)

    with torch.no_grad():
        reference = exact(x.double())
        spread = torch.zeros_like(reference)
        for _ in range(trials):
            moved = copy.deepcopy(exact)
            for tensor in [*moved.parameters(), *moved.buffers()]:
                if tensor.is_floating_point():
                    tensor.copy_(jitter(tensor))
            spread = torch.maximum(spread, (moved(jitter(x.double())) - reference).abs())
    return spread.numpy()


def assert_matches_torch(scores: Any, module: Any, x: Any) -> None:
    """``scores`` equal PyTorch's float32 outputs within 1e-5 relative to the largest,
    give or take a few times the outputs' float32 sensitivity (:func:`float32_sensitivity`;
    seen: a score of 1.8e-4 left by a batch norm subtracting its mean from a value close to
    it, which both libraries round at the size of the terms)."""
    with torch.no_grad():
        expected = module(x).numpy()
    assert scores.shape == expected.shape and scores.dtype == expected.dtype
    allowed = SCORE_TOLERANCE[np.dtype(np.float32)] * float(np.max(np.abs(expected)))
    if np.all(np.abs(scores - expected) <= allowed):
        return
    allowed = allowed + 8 * float32_sensitivity(module, x)
    assert np.all(np.abs(scores - expected) <= allowed), (scores, expected, allowed)


class BasicBlock(tnn.Module):
    """ResNet's basic block; a 1x1 projection when the shape changes."""

    def __init__(self, channels: int, filters: int, stride: int) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(channels, filters, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(filters)
        self.conv2 = tnn.Conv2d(filters, filters, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(filters)
        self.shortcut = tnn.Identity()
        if stride != 1 or channels != filters:
            self.shortcut = tnn.Sequential(
                tnn.Conv2d(channels, filters, 1, stride, bias=False), tnn.BatchNorm2d(filters)
            )

    def forward(self, x: Any) -> Any:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ViewFlatten(tnn.Module):
    """``x.view(x.size(0), -1)``: the exporters' Shape -> Gather -> ... -> Reshape chain."""

    def forward(self, x: Any) -> Any:
        return x.view(x.size(0), -1)


class ProductFlatten(tnn.Module):
    """``x.reshape(-1, x.shape[1] * x.shape[2] * x.shape[3])``: Mul on shape entries."""

    def forward(self, x: Any) -> Any:
        return x.reshape(-1, x.shape[1] * x.shape[2] * x.shape[3])


class SpatialMean(tnn.Module):
    """``x.mean((2, 3))``: ReduceMean over H and W."""

    def forward(self, x: Any) -> Any:
        return x.mean((2, 3))


def resnet_style() -> Any:
    """torchvision's ResNet at small widths: the 7x7 stride-2 stem and its 3x3 stride-2
    max pool padded by 1, basic blocks, adaptive average pooling."""
    return tnn.Sequential(
        tnn.Conv2d(3, 8, 7, 2, 3, bias=False),
        tnn.BatchNorm2d(8),
        tnn.ReLU(),
        tnn.MaxPool2d(3, 2, 1),
        BasicBlock(8, 8, 1),
        BasicBlock(8, 16, 2),
        BasicBlock(16, 16, 1),
        BasicBlock(16, 32, 2),
        tnn.AdaptiveAvgPool2d((1, 1)),
        tnn.Flatten(),
        tnn.Linear(32, 10),
    )


def padded_style() -> Any:
    """What else a PyTorch network pads or upsamples with: zero and constant padding,
    'same' convolutions of even kernels, ceil-mode and padded pools, a transposed
    convolution."""
    return tnn.Sequential(
        tnn.ZeroPad2d((1, 0, 2, 1)),
        tnn.Conv2d(3, 6, 2, padding="same"),
        tnn.ReLU(),
        tnn.MaxPool2d(3, 2, 1, ceil_mode=True),
        tnn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1),
        tnn.BatchNorm2d(4),
        tnn.ConstantPad2d((0, 1, 1, 0), -0.5),
        tnn.AvgPool2d(3, 2, 1, count_include_pad=False),
        tnn.AvgPool2d(2, 1, 1),
        tnn.Flatten(),
        tnn.Linear(528, 10),
    )


def vgg_style() -> Any:
    return tnn.Sequential(
        tnn.Conv2d(3, 8, 3, padding=1),
        tnn.BatchNorm2d(8),
        tnn.ReLU(),
        tnn.Conv2d(8, 8, 3, padding=1),
        tnn.ReLU(),
        tnn.BatchNorm2d(8),  # after the ReLU: the exporters cannot fold it into the Conv
        tnn.MaxPool2d(2),
        tnn.Conv2d(8, 16, 3, padding=1, bias=False),
        tnn.BatchNorm2d(16),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        ViewFlatten(),
        tnn.Linear(16 * 4 * 4, 32),
        tnn.ReLU(),
        tnn.BatchNorm1d(32),
        tnn.Dropout(0.5),
        tnn.Linear(32, 10),
    )


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("build", [resnet_style, vgg_style, padded_style])
def test_pytorch_nets_load_and_match(build: Any, dynamo: bool) -> None:
    torch.manual_seed(0)
    module = randomize(build(), seed=1)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    proto = check_against_torch(module, x, dynamo)
    operators = {node.op_type for node in proto.graph.node}
    assert {"Conv", "Gemm"} <= operators
    if build is vgg_style:
        assert "BatchNormalization" in operators  # the one after a ReLU stays a node


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_products_of_shape_entries_fold(dynamo: bool) -> None:
    """Arithmetic on the entries of a shape other than the batch size folds."""
    module = randomize(
        tnn.Sequential(tnn.Conv2d(3, 4, 3), tnn.ReLU(), ProductFlatten(), tnn.Linear(4 * 6 * 6, 5)),
        seed=3,
    )
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    check_against_torch(module, x, dynamo)


@pytest.mark.parametrize(
    ("build", "opset", "folding"),
    [
        (resnet_style, 9, True),
        (vgg_style, 9, True),
        (resnet_style, 11, False),
        (vgg_style, 11, False),
        (padded_style, 11, False),
        (resnet_style, 13, True),
        (vgg_style, 13, True),
        (padded_style, 13, True),
    ],
)
def test_older_opsets_unfolded_graphs_and_initializers_as_inputs(
    build: Any, opset: int, folding: bool
) -> None:
    """Unsqueeze's axes, Slice's bounds and Pad's pads as attributes (before opset 13 and
    11), initializers listed as inputs, and graphs the exporter left unfolded (batch norms
    after convolutions; the pads computed by Shape, ConstantOfShape, Transpose, Sub, Mul)."""
    module = randomize(build(), seed=5)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    options = {"opset_version": opset, "do_constant_folding": folding}
    proto = check_against_torch(
        module, x, dynamo=False, keep_initializers_as_inputs=True, **options
    )
    assert proto.opset_import[0].version == opset
    assert len(proto.graph.input) > 1


@st.composite
def torch_networks(draw: Any) -> tuple[Any, tuple[int, int, int]]:
    """A random torch.nn network of every layer kind convnet imports, and its input shape."""
    torch.manual_seed(draw(st.integers(0, 2**16)))  # the layers' initial weights
    channels, height, width = (
        draw(st.integers(1, 4)),
        draw(st.integers(3, 9)),
        draw(st.integers(3, 9)),
    )
    input_dim = (channels, height, width)
    layers: list[Any] = []
    for _ in range(draw(st.integers(0, 4))):
        kinds = ["conv", "bn", "relu", "maxpool", "avgpool", "block", "transpose", "pad"]
        kind = draw(st.sampled_from(kinds))
        if kind == "conv":
            groups = draw(st.sampled_from([g for g in (1, 2) if channels % g == 0]))
            filters = groups * draw(st.integers(1, 3))
            kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
            spans = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
            if spans[0] > height + 2 * pad[0] or spans[1] > width + 2 * pad[1]:
                continue
            stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            layer = tnn.Conv2d(
                channels, filters, kernel, stride, pad, dilation, groups, bias=draw(st.booleans())
            )
            channels = filters
        elif kind == "bn":
            layer = tnn.BatchNorm2d(channels, eps=draw(st.sampled_from([1e-5, 1e-3])))
        elif kind == "relu":
            layer = tnn.ReLU()
        elif kind in ("maxpool", "avgpool"):
            kernel = (draw(st.integers(1, min(3, height))), draw(st.integers(1, min(3, width))))
            stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            pad = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
            if kind == "maxpool":  # convnet imports ceil mode for max pooling
                layer = tnn.MaxPool2d(kernel, stride, pad, ceil_mode=draw(st.booleans()))
            else:
                layer = tnn.AvgPool2d(kernel, stride, pad, count_include_pad=draw(st.booleans()))
        elif kind == "transpose":
            stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            pad = tuple(draw(st.integers(0, (k - 1) // 2)) for k in kernel)
            output_pad = tuple(draw(st.integers(0, s - 1)) for s in stride)
            filters = draw(st.integers(1, 3))
            layer = tnn.ConvTranspose2d(channels, filters, kernel, stride, pad, output_pad)
            channels = filters
        elif kind == "pad":
            sides = tuple(draw(st.integers(0, 2)) for _ in range(4))
            layer = tnn.ConstantPad2d(sides, draw(st.sampled_from([0.0, -1.0])))
        else:
            filters = draw(st.integers(1, 4))
            stride = draw(st.integers(1, 2))
            layer = BasicBlock(channels, filters, stride)
            channels = filters
        layers.append(layer)
        with torch.no_grad():
            probe = tnn.Sequential(*layers).eval()
            _, channels, height, width = probe(torch.zeros(1, *input_dim)).shape
    tail = draw(st.sampled_from(["adaptive", "flatten", "view", "mean"]))
    if tail == "adaptive":
        layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten()]
        features = channels
    elif tail == "mean":
        layers.append(SpatialMean())
        features = channels
    else:
        layers.append(tnn.Flatten() if tail == "flatten" else ViewFlatten())
        features = channels * height * width
    if draw(st.booleans()):
        hidden = draw(st.integers(1, 8))
        layers += [tnn.Linear(features, hidden), tnn.ReLU()]
        norm = draw(st.sampled_from([None, tnn.BatchNorm1d, tnn.LayerNorm]))
        if norm is not None:
            layers.append(norm(hidden))
        layers.append(tnn.Dropout(draw(st.sampled_from([0.1, 0.5]))))
        features = hidden
    layers.append(tnn.Linear(features, draw(st.integers(1, 5)), bias=draw(st.booleans())))
    return randomize(tnn.Sequential(*layers), draw(st.integers(0, 2**16))), input_dim


@given(case=torch_networks())
@settings(max_examples=30)
def test_random_torchscript_exports_match(case: tuple[Any, tuple[int, int, int]]) -> None:
    module, input_dim = case
    x = torch.randn(3, *input_dim, generator=torch.Generator().manual_seed(0))
    check_against_torch(module, x, dynamo=False)


@given(case=torch_networks())
@settings(max_examples=3)
def test_random_dynamo_exports_match(case: tuple[Any, tuple[int, int, int]]) -> None:
    module, input_dim = case
    x = torch.randn(3, *input_dim, generator=torch.Generator().manual_seed(0))
    check_against_torch(module, x, dynamo=True)


def test_round_trip_through_convnet_keeps_pytorch_outputs(tmp_path) -> None:
    module = randomize(resnet_style(), seed=3)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    model = convnet_onnx.from_onnx(export(module, x, dynamo=False))
    again = convnet_onnx.load(convnet_onnx.export(model, tmp_path / "again.onnx"))
    assert_matches_torch(again.loss(x.numpy()), module, x)
