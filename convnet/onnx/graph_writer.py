"""A :class:`convnet.nn.Classifier` as an ONNX graph: one node (or two) per layer.

The graph is the model in test mode: batch norm on its running statistics, no dropout
nodes. Parameter arrays become initializers under their ``params`` names; every node is
named after its module's dotted path. Imported only by :mod:`convnet.onnx`, which imports
onnx first.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from convnet._version import __version__
from convnet.nn import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Classifier,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LayerNorm,
    Linear,
    MaxPool2d,
    Module,
    Pad2d,
    ReLU,
    Residual,
    Sequential,
)
from convnet.onnx.common import (
    BATCH_NAME,
    ELEMENT_TYPE_OF,
    INPUT_NAME,
    OUTPUT_NAME,
    dotted,
    running_statistics,
    sample_shape,
)

# LayerNormalization, the newest operator the exporter may write, came with opset 17;
# every other one it writes has meant the same since opset 9 (Flatten, Gemm without the
# broadcast attribute, BatchNormalization without spatial).
MIN_OPSET = 9
LAYER_NORM_OPSET = 17

Shape = tuple[int, ...]


class _GraphBuilder:
    """Collects the nodes and initializers of one graph, with unique value names."""

    def __init__(self, onnx: Any, model: Classifier, opset: int) -> None:
        self.onnx = onnx
        self.dtype = model.dtype
        self.opset = opset
        # the model's own names of its arrays (W1 for ThreeLayerConvNet's "conv.w")
        arrays = [*model.params.items(), *model.buffers().items()]
        self._public = {id(array): name for name, array in arrays}
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._taken: set[str] = {INPUT_NAME, OUTPUT_NAME}

    def _unique(self, name: str) -> str:
        candidate, count = name, 1
        while candidate in self._taken:
            count += 1
            candidate = f"{name}_{count}"
        self._taken.add(candidate)
        return candidate

    def constant(self, name: str, array: np.ndarray) -> str:
        """An initializer holding ``array`` (a copy, cast to the model dtype if float)."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(self.dtype)
        unique = self._unique(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, unique))
        return unique

    def array(
        self, array: np.ndarray, prefix: str, local: str, value: np.ndarray | None = None
    ) -> str:
        """An initializer holding ``value`` (default ``array``), named as the model names
        ``array``, else by the dotted path of the layer at ``prefix`` and ``local``."""
        name = self._public.get(id(array), dotted(prefix, local))
        return self.constant(name, array if value is None else value)

    def param(self, layer: Module, prefix: str, local: str) -> str:
        """An initializer holding the parameter ``local`` of ``layer`` (at ``prefix``)."""
        return self.array(layer.params[local], prefix, local)

    def node(self, op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        """Append a node named ``name``; returns the name of its one output."""
        node_name = self._unique(name or op)
        output = self._unique(f"{node_name}.out")
        self.nodes.append(
            self.onnx.helper.make_node(op, inputs, [output], name=node_name, **attributes)
        )
        return output


def _pads(pad: tuple[int, int]) -> list[int]:
    """An (h, w) pad on both sides as ONNX's [top, left, bottom, right]."""
    return [pad[0], pad[1], pad[0], pad[1]]


def _convolution(
    graph: _GraphBuilder, op: str, layer: Conv2d, prefix: str, value: str, **attributes: Any
) -> str:
    """A Conv or ConvTranspose node of ``layer`` (weights, optional bias, geometry)."""
    inputs = [value, graph.param(layer, prefix, "w")]
    if layer.bias:
        inputs.append(graph.param(layer, prefix, "b"))
    return graph.node(
        op,
        inputs,
        prefix,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        dilations=list(layer.dilation),
        group=layer.groups,
        **attributes,
    )


def _conv(graph: _GraphBuilder, layer: Conv2d, prefix: str, value: str, shape: Shape) -> str:
    return _convolution(graph, "Conv", layer, prefix, value, pads=_pads(layer.pad))


def _conv_transpose(
    graph: _GraphBuilder, layer: ConvTranspose2d, prefix: str, value: str, shape: Shape
) -> str:
    # ONNX Runtime takes output padding only below the stride; the rest of it becomes a
    # smaller pad at the end, which adds the same rows and columns
    begin, end, extra = list(layer.pad), list(layer.pad), list(layer.output_pad)
    for axis in (0, 1):
        if extra[axis] < layer.stride[axis]:
            continue
        if extra[axis] > begin[axis]:
            raise ValueError(
                f"cannot export the module {prefix or 'net'} (ConvTranspose2d): its output_pad "
                f"{layer.output_pad} reaches the stride {layer.stride} and exceeds the pad "
                f"{layer.pad}, which ONNX Runtime's ConvTranspose cannot express"
            )
        end[axis] -= extra[axis]
        extra[axis] = 0
    return _convolution(
        graph,
        "ConvTranspose",
        layer,
        prefix,
        value,
        pads=[*begin, *end],
        output_padding=extra,
    )


def _pad(graph: _GraphBuilder, layer: Pad2d, prefix: str, value: str, shape: Shape) -> str:
    top, left, bottom, right = layer.pad
    pads = [0, 0, top, left, 0, 0, bottom, right]
    if graph.opset < 11:  # pads and value were attributes before opset 11
        return graph.node("Pad", [value], prefix, mode="constant", pads=pads, value=layer.value)
    inputs = [
        value,
        graph.constant(dotted(prefix, "pads"), np.array(pads, dtype=np.int64)),
        graph.constant(dotted(prefix, "value"), np.asarray(layer.value, dtype=graph.dtype)),
    ]
    return graph.node("Pad", inputs, prefix, mode="constant")


def _linear(graph: _GraphBuilder, layer: Linear, prefix: str, value: str, shape: Shape) -> str:
    if len(shape) != 1:
        value = graph.node("Flatten", [value], f"{prefix}.flatten", axis=1)
    inputs = [value, graph.param(layer, prefix, "w"), graph.param(layer, prefix, "b")]
    return graph.node("Gemm", inputs, prefix)


def _pool(
    graph: _GraphBuilder, op: str, layer: MaxPool2d, prefix: str, value: str, **extra: Any
) -> str:
    """A MaxPool or AveragePool node of ``layer`` (window, strides, pads)."""
    return graph.node(
        op,
        [value],
        prefix,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        pads=_pads(layer.pad),
        **extra,
    )


def _max_pool(graph: _GraphBuilder, layer: MaxPool2d, prefix: str, value: str, shape: Shape) -> str:
    return _pool(graph, "MaxPool", layer, prefix, value)


def _avg_pool(graph: _GraphBuilder, layer: AvgPool2d, prefix: str, value: str, shape: Shape) -> str:
    return _pool(
        graph, "AveragePool", layer, prefix, value, count_include_pad=int(layer.count_include_pad)
    )


def _global_avg_pool(
    graph: _GraphBuilder, layer: GlobalAvgPool, prefix: str, value: str, shape: Shape
) -> str:
    pooled = graph.node("GlobalAveragePool", [value], prefix)
    # ONNX keeps (N, C, 1, 1); the layer gives (N, C)
    return graph.node("Flatten", [pooled], f"{prefix}.flatten", axis=1)


def _batch_norm(
    graph: _GraphBuilder, layer: BatchNorm1d | BatchNorm2d, prefix: str, value: str, shape: Shape
) -> str:
    mean, var = running_statistics(layer)
    # ONNX's epsilon is a float32 attribute: what it cannot hold of a float64 model's eps
    # goes into the variance, so var + epsilon stays var + eps
    epsilon = float(np.float32(layer.eps))
    inputs = [
        value,
        graph.param(layer, prefix, "gamma"),
        graph.param(layer, prefix, "beta"),
        graph.array(mean, prefix, "running_mean"),
        graph.array(var, prefix, "running_var", var + var.dtype.type(layer.eps - epsilon)),
    ]
    return graph.node(
        "BatchNormalization", inputs, prefix, epsilon=epsilon, momentum=layer.momentum
    )


def _layer_norm(
    graph: _GraphBuilder, layer: LayerNorm, prefix: str, value: str, shape: Shape
) -> str:
    if graph.opset < LAYER_NORM_OPSET:
        raise ValueError(
            f"cannot export the module {prefix or 'net'} (LayerNorm) at opset {graph.opset}: "
            f"LayerNormalization needs opset {LAYER_NORM_OPSET} or newer"
        )
    epsilon = float(np.float32(layer.eps))
    if epsilon != layer.eps and graph.dtype == np.float64:
        # epsilon is a float32 attribute: LayerNorm(k x) with epsilon = k**2 * eps is
        # LayerNorm(x) with eps, exactly, so a float64 model keeps its eps. One k per
        # feature: ONNX Runtime folds a scalar factor into a Gemm's float32 alpha (k = 1)
        factor = np.sqrt(np.float64(epsilon) / layer.eps)
        scale = graph.constant(dotted(prefix, "eps_scale"), np.full(shape, factor))
        value = graph.node("Mul", [value, scale], dotted(prefix, "eps_scale"))
    inputs = [value, graph.param(layer, prefix, "gamma"), graph.param(layer, prefix, "beta")]
    return graph.node("LayerNormalization", inputs, prefix, axis=-1, epsilon=epsilon)


def _relu(graph: _GraphBuilder, layer: ReLU, prefix: str, value: str, shape: Shape) -> str:
    return graph.node("Relu", [value], prefix)


def _flatten(graph: _GraphBuilder, layer: Flatten, prefix: str, value: str, shape: Shape) -> str:
    return graph.node("Flatten", [value], prefix, axis=1)


def _dropout(graph: _GraphBuilder, layer: Dropout, prefix: str, value: str, shape: Shape) -> str:
    return value  # the identity in test mode


def _sequential(
    graph: _GraphBuilder, module: Sequential, prefix: str, value: str, shape: Shape
) -> str:
    for name, child in module.children():
        value, shape = _emit(graph, child, dotted(prefix, name), value, shape)
    return value


def _residual(graph: _GraphBuilder, module: Residual, prefix: str, value: str, shape: Shape) -> str:
    body, _ = _emit(graph, module.body, dotted(prefix, "body"), value, shape)
    skip = value
    if module.shortcut is not None:
        skip, _ = _emit(graph, module.shortcut, dotted(prefix, "shortcut"), value, shape)
    return graph.node("Add", [body, skip], dotted(prefix, "add"))


Emitter = Callable[[_GraphBuilder, Any, str, str, Shape], str]
EMITTERS: dict[type[Module], Emitter] = {
    Conv2d: _conv,
    ConvTranspose2d: _conv_transpose,
    Pad2d: _pad,
    Linear: _linear,
    MaxPool2d: _max_pool,
    AvgPool2d: _avg_pool,
    GlobalAvgPool: _global_avg_pool,
    BatchNorm1d: _batch_norm,
    BatchNorm2d: _batch_norm,
    LayerNorm: _layer_norm,
    ReLU: _relu,
    Flatten: _flatten,
    Dropout: _dropout,
    Sequential: _sequential,
    Residual: _residual,
}


def _emit(
    graph: _GraphBuilder, module: Module, prefix: str, value: str, shape: Shape
) -> tuple[str, Shape]:
    """The nodes of ``module`` (at ``prefix``) applied to ``value`` of sample ``shape``;
    returns the output value and its sample shape."""
    emitter = EMITTERS.get(type(module))
    if emitter is None:
        raise ValueError(
            f"cannot export the module {prefix or 'net'} ({type(module).__name__}): ONNX export "
            f"knows {', '.join(cls.__name__ for cls in EMITTERS)}"
        )
    return emitter(graph, module, prefix, value, shape), module.output_shape(shape)


def check_opset(opset: Any, newest: int) -> int:
    """``opset`` as an int from :data:`MIN_OPSET` to ``newest`` (onnx's newest)."""
    if isinstance(opset, (bool, np.bool_)) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"opset must be an integer, got {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"opset must be from {MIN_OPSET} to {newest} (the newest this onnx knows), got {opset}"
        )
    return int(opset)


def _preprocessing(
    graph: _GraphBuilder, scale: float | None, mean: np.ndarray | None, input_dim: Shape
) -> str:
    """Nodes computing ``input * scale - mean`` (either part optional) from the input."""
    value = INPUT_NAME
    if scale is not None:
        if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
            raise TypeError(f"input_scale must be a real number, got {scale!r}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"input_scale must be finite and positive, got {scale}")
        factor = graph.constant("preprocessing.scale", np.asarray(scale, dtype=graph.dtype))
        value = graph.node("Mul", [value, factor], "preprocessing.scale")
    if mean is not None:
        mean = np.asarray(mean)
        if mean.dtype.kind not in "iuf" or mean.shape != input_dim:
            raise ValueError(
                f"input_mean must be a real array of the sample shape {input_dim}, got "
                f"{mean.dtype} {mean.shape}"
            )
        if not np.all(np.isfinite(mean)):
            raise ValueError("input_mean must be finite")
        offset = graph.constant("preprocessing.mean", mean.astype(graph.dtype))
        value = graph.node("Sub", [value, offset], "preprocessing.mean")
    return value


def _graph_input(model: Classifier, input_dim: Shape | None) -> Shape:
    """The sample shape the graph takes: the model's, or images it flattens."""
    own = sample_shape(model)
    if input_dim is None or tuple(input_dim) == own:
        return own
    if len(own) != 1 or math.prod(input_dim) != own[0]:
        raise ValueError(
            f"input_dim {tuple(input_dim)} must be the model's sample shape {own}, or images "
            f"of {own[0]} values for a model of vectors (D,)"
        )
    return tuple(input_dim)


def build_model(
    onnx: Any,
    model: Classifier,
    opset: int,
    input_scale: float | None = None,
    input_mean: np.ndarray | None = None,
    input_dim: Shape | None = None,
) -> Any:
    """The ONNX ``ModelProto`` of ``model`` (see :func:`convnet.onnx.to_onnx`)."""
    helper = onnx.helper
    graph = _GraphBuilder(onnx, model, opset)
    input_dim = _graph_input(model, input_dim)
    value = _preprocessing(graph, input_scale, input_mean, input_dim)
    if input_dim != sample_shape(model):
        value = graph.node("Flatten", [value], "input.flatten", axis=1)
    value, shape = _emit(graph, model.net, "", value, sample_shape(model))
    if value == INPUT_NAME or not graph.nodes or graph.nodes[-1].output[0] != value:
        graph.node("Identity", [value], "output")
    graph.nodes[-1].output[0] = OUTPUT_NAME
    element_type = ELEMENT_TYPE_OF[model.dtype]
    inputs = [helper.make_tensor_value_info(INPUT_NAME, element_type, [BATCH_NAME, *input_dim])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, element_type, [BATCH_NAME, *shape])]
    proto = helper.make_graph(graph.nodes, "convnet", inputs, outputs, graph.initializers)
    opsets = [helper.make_opsetid("", opset)]
    result = helper.make_model(
        proto,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="convnet",
        producer_version=__version__,
    )
    onnx.checker.check_model(result, full_check=True)
    return result
