"""The feature operators convnet imports: BatchNormalization, LayerNormalization, Relu,
Flatten, Reshape, Squeeze, Gemm, MatMul, Add, Mul, Identity and Dropout, each a function
turning one node into the layers that compute it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet.nn import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    LayerNorm,
    Linear,
    Module,
    ReLU,
    from_config,
)
from convnet.onnx.folding import BATCH, reshape_target
from convnet.onnx.operators import (
    Handler,
    Shape,
    Value,
    axes_attribute,
    decimal_attribute,
    epsilon_attribute,
    exact_attribute,
    only_data,
)

if TYPE_CHECKING:
    from convnet.onnx.graph_reader import Importer


def _batch_norm(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = only_data(label, data)
    if int(attributes.get("training_mode", 0)):
        raise ValueError(f"{label}: training_mode=1 (batch statistics) is not supported")
    if int(attributes.get("spatial", 1)) != 1:
        raise ValueError(f"{label}: spatial=0 (per-activation statistics) is not supported")
    value = importer.values[source]
    arrays = {
        name: importer.weight(node, index, label, ndim=1)
        for index, name in enumerate(("gamma", "beta", "running_mean", "running_var"), start=1)
    }
    channels = value.logical[0] if value.logical else 0
    if any(array.shape != (channels,) for array in arrays.values()):
        raise ValueError(
            f"{label}: scale, bias, mean and var must have {channels} entries, got "
            f"{[array.shape for array in arrays.values()]}"
        )
    eps = epsilon_attribute(attributes.get("epsilon", 1e-5), importer.dtype)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"{label}: epsilon={eps} is not supported (convnet needs eps > 0)")
    if not np.all(arrays["running_var"] + eps > 0):
        raise ValueError(f"{label}: a running variance at or below -epsilon")
    momentum = decimal_attribute(attributes.get("momentum", 0.9))
    momentum = momentum if 0 <= momentum < 1 else 0.9  # training only: any valid value
    if len(value.shape) == 3:
        layer: Module = BatchNorm2d(channels, eps=eps, momentum=momentum)
    elif len(value.shape) == 1:
        layer = BatchNorm1d(channels, eps=eps, momentum=momentum)
    else:
        raise ValueError(
            f"{label}: BatchNormalization of {(None, *value.logical)} is not supported"
        )
    importer.arrays[id(layer)] = arrays
    importer.add_step(label, [source], node.output[0], value, [layer])


def _layer_norm(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = only_data(label, data)
    features = _dense_input(importer, source, label)
    axis = int(attributes.get("axis", -1))
    if axis not in (-1, 1):
        raise ValueError(f"{label}: LayerNormalization over axis {axis} of (N, D) is not supported")
    gamma = importer.weight(node, 1, label)
    beta = importer.weight(node, 2, label) if importer.has_input(node, 2) else np.zeros_like(gamma)
    if gamma.shape != (features,) or beta.shape != (features,):
        raise ValueError(
            f"{label}: scale {gamma.shape} and bias {beta.shape} for {features} features"
        )
    eps = epsilon_attribute(attributes.get("epsilon", 1e-5), importer.dtype)
    step = importer.steps.get(source)
    if step is not None and step.pending_scale is not None and importer.consumers[source] == 1:
        # LayerNorm(k x) with epsilon is LayerNorm(x) with epsilon / k**2 (convnet's own
        # float64 export writes it so)
        eps /= step.pending_scale**2
        step.pending_scale = None
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"{label}: epsilon={eps} is not supported (convnet needs eps > 0)")
    layer = LayerNorm(features, eps=eps)
    importer.layer(label, node, source, layer, {"gamma": gamma, "beta": beta})


def _relu(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = only_data(label, data)
    importer.add_step(label, [source], node.output[0], importer.values[source], [ReLU()])


def _flattened(importer: Importer, label: str, node: Any, source: str) -> None:
    """Steps to (N, features): a Flatten unless the modules already give (N, D)."""
    value = importer.values[source]
    flat = Value((math.prod(value.logical),), (math.prod(value.logical),))
    importer.add_step(
        label, [source], node.output[0], flat, [] if len(value.shape) == 1 else [Flatten()]
    )


def _flatten(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = only_data(label, data)
    rank = len(importer.values[source].logical) + 1
    axis = int(attributes.get("axis", 1))
    if not -rank <= axis <= rank or axis % rank != 1:
        raise ValueError(
            f"{label}: Flatten with axis={axis} of rank {rank}; convnet keeps the batch axis"
        )
    _flattened(importer, label, node, source)


def _reshape(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = only_data(label, data)
    value = importer.values[source]
    if "shape" in attributes:
        target = np.array(attributes["shape"], dtype=np.int64)
    else:
        if node.input[1] in importer.values:
            raise ValueError(f"{label}: the target shape is computed from the input's values")
        target = importer.static_value(node.input[1], label)
    if target.dtype.kind not in "iu" and not (target.dtype == object):
        raise ValueError(f"{label}: the target shape must be integers, got {target.dtype}")
    features = math.prod(value.logical)
    entries = reshape_target(
        list(np.ravel(target)), [BATCH, *value.logical], bool(attributes.get("allowzero", 0)), label
    )
    described = "[" + ", ".join("N" if e is BATCH else str(e) for e in entries) + "]"
    if not entries or any(e is BATCH for e in entries[1:]):
        raise ValueError(f"{label}: Reshape to {described} moves the batch axis")
    rest = [int(e) for e in entries[1:]]
    known = math.prod(e for e in rest if e != -1)
    first = entries[0]
    if first is BATCH:
        pass
    elif first == -1:
        if -1 in rest or known != features:
            raise ValueError(f"{label}: Reshape to {described} does not keep the batch axis")
    elif first != importer.static_batch:
        raise ValueError(
            f"{label}: Reshape to {described} fixes the batch size to {first}, and the graph "
            f"input's batch size is {importer.static_batch or 'symbolic'}"
        )
    if -1 in rest:
        if known == 0 or features % known:
            raise ValueError(f"{label}: Reshape to {described} does not fit {features} features")
        rest = [features // known if e == -1 else e for e in rest]
    if math.prod(rest) != features:
        raise ValueError(f"{label}: Reshape to {described} does not fit {features} features")
    if tuple(rest) == value.logical:
        importer.alias(label, node, source)
    elif len(rest) == 1:
        _flattened(importer, label, node, source)
    else:
        raise ValueError(f"{label}: Reshape to {described}; convnet reshapes only to (N, features)")


def _dense_input(importer: Importer, source: str, label: str) -> int:
    value = importer.values[source]
    if len(value.logical) != 1:
        raise ValueError(
            f"{label}: needs a matrix (N, features), its input has shape {(None, *value.logical)}"
        )
    return value.logical[0]


def _gemm(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = only_data(label, data)
    if node.input[0] != source:
        raise ValueError(f"{label}: the network's values must be Gemm's first input (A)")
    features = _dense_input(importer, source, label)
    if int(attributes.get("transA", 0)):
        raise ValueError(f"{label}: transA=1 is not supported")
    matrix = importer.weight(node, 1, label, ndim=2)
    weights = matrix.T if int(attributes.get("transB", 0)) else matrix
    if weights.shape[0] != features:
        raise ValueError(
            f"{label}: weights of shape {matrix.shape} (transB={attributes.get('transB', 0)}) "
            f"for {features} input features"
        )
    outputs = weights.shape[1]
    alpha = exact_attribute(attributes.get("alpha", 1.0))
    beta = exact_attribute(attributes.get("beta", 1.0))
    if alpha != 1:
        weights = weights * importer.dtype.type(alpha)
    bias = np.zeros(outputs, dtype=importer.dtype)
    if importer.has_input(node, 2):
        constant = importer.weight(node, 2, label)
        bias = _bias(constant, (outputs,), label) * importer.dtype.type(beta)
    layer = Linear(features, outputs)
    importer.layer(label, node, source, layer, {"w": np.ascontiguousarray(weights), "b": bias})


def _bias(array: np.ndarray, logical: Shape, label: str) -> np.ndarray:
    """A constant added to values of sample shape ``logical`` (outputs first), as one
    value per output: it must broadcast without varying over the batch or the space."""
    rank = len(logical) + 1
    if array.ndim > rank:
        raise ValueError(f"{label}: a constant of shape {array.shape} added to rank {rank}")
    padded = (1,) * (rank - array.ndim) + array.shape
    outputs = logical[0]
    if padded[0] != 1 or padded[1] not in (1, outputs) or any(d != 1 for d in padded[2:]):
        raise ValueError(
            f"{label}: a constant of shape {array.shape} is not one value per output of "
            f"{(None, *logical)}; convnet adds only biases"
        )
    return np.broadcast_to(array.reshape(-1), (outputs,)).copy()


def _matmul(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = only_data(label, data)
    if node.input[0] != source:
        raise ValueError(f"{label}: the network's values must be MatMul's first input")
    features = _dense_input(importer, source, label)
    weights = importer.weight(node, 1, label, ndim=2)
    if weights.shape[0] != features:
        raise ValueError(f"{label}: weights of shape {weights.shape} for {features} features")
    layer = Linear(features, weights.shape[1])
    bias = np.zeros(weights.shape[1], dtype=importer.dtype)
    importer.layer(label, node, source, layer, {"w": np.ascontiguousarray(weights), "b": bias})


def _add(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    if len(data) == 2:
        first, second = (importer.values[name] for name in data)
        if first.logical != second.logical or first.shape != second.shape:
            raise ValueError(
                f"{label}: adds values of shapes {(None, *first.logical)} and "
                f"{(None, *second.logical)}; convnet adds only equal shapes"
            )
        importer.add_step(label, list(data), node.output[0], first, [])
        return
    source = data[0]
    constant = importer.weight(node, 1 - list(node.input).index(source), label)
    step = importer.steps.get(source)
    layer = step.modules[-1] if step is not None and step.modules else None
    if not isinstance(layer, (Linear, Conv2d)) or importer.consumers[source] != 1:
        raise ValueError(
            f"{label}: adds a constant that is not the bias of a Conv, Gemm or MatMul "
            "whose output it alone uses; convnet has no such layer"
        )
    value = importer.values[source]
    arrays = importer.arrays.pop(id(layer))
    if isinstance(layer, Conv2d) and not layer.bias:
        layer = from_config({**layer.config(), "bias": True})
        step.modules[-1] = layer
    zeros = np.zeros(value.logical[0], dtype=importer.dtype)
    arrays["b"] = arrays.get("b", zeros) + _bias(constant, value.logical, label)
    importer.arrays[id(layer)] = arrays
    importer.alias(label, node, source)


def _mul(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    """A positive factor: the scaling of raw images (a scalar on the graph input, as
    ``convnet export --with-preprocessing`` writes it) or one a LayerNormalization right
    after absorbs (convnet's float64 export)."""
    source = only_data(label, data)
    factor = importer.weight(node, 1 - list(node.input).index(source), label)
    value = importer.values[source]
    first = factor.ravel()[:1]
    if (
        factor.ndim > len(value.logical) + 1
        or first.size != 1
        or not (np.isfinite(first).all() and first[0] > 0 and np.all(factor == first[0]))
    ):
        raise ValueError(
            f"{label}: Mul by a constant of shape {factor.shape} is not supported (convnet "
            "takes a positive scalar on the input as preprocessing, and folds one positive "
            "factor into a LayerNormalization right after it)"
        )
    try:
        np.broadcast_shapes(factor.shape, (1, *value.logical))
    except ValueError as error:
        raise ValueError(f"{label}: {error}") from error
    if factor.ndim == 0 and source == importer.input_name:
        _check_sole_consumer(importer, source, label, "Mul")
    step = importer.add_step(label, [source], node.output[0], value, [])
    if factor.ndim == 0 and source == importer.input_name:
        importer.preprocessing_scale = float(first[0])
        importer.preprocessing_outputs.add(node.output[0])
    else:
        step.pending_scale = float(first[0])


def _check_sole_consumer(importer: Importer, source: str, label: str, op_type: str) -> None:
    """Refuse preprocessing whose input also feeds another node.

    Parameters
    ----------
    importer : Importer
        The graph being read.
    source : str
        The graph input, or the output of its scaling.
    label : str
        The node's name for error messages.
    op_type : str
        ``"Mul"`` or ``"Sub"``.

    Raises
    ------
    ValueError
        If ``source`` has another consumer: pulling the arithmetic out of the graph
        would then change what the other branch sees.
    """
    if importer.consumers[source] != 1:
        raise ValueError(
            f"{label}: {op_type} on the input is taken as preprocessing only when it is "
            f"the sole consumer of '{source}', which feeds {importer.consumers[source]} "
            "uses; convnet cannot apply it to one branch alone"
        )


def _sub(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    """The mean subtraction of raw images: the graph input (or its scaling) minus a
    constant image, as ``convnet export --with-preprocessing`` writes it."""
    source = only_data(label, data)
    value = importer.values[source]
    preprocessing = source == importer.input_name or source in importer.preprocessing_outputs
    if node.input[0] != source or not preprocessing or importer.preprocessing_mean is not None:
        raise ValueError(
            f"{label}: Sub is not supported but as the mean subtraction of the raw images "
            "(the graph input, or its scaling, minus a constant)"
        )
    _check_sole_consumer(importer, source, label, "Sub")
    mean = importer.weight(node, 1, label)
    padded = (1,) * (len(value.logical) + 1 - mean.ndim) + mean.shape
    if mean.ndim > len(value.logical) + 1 or padded[0] != 1:
        raise ValueError(f"{label}: a mean of shape {mean.shape} varies over the batch")
    try:
        mean = np.broadcast_to(mean.reshape(padded[1:]), value.logical).copy()
    except ValueError as error:
        raise ValueError(f"{label}: a mean of shape {mean.shape}: {error}") from error
    importer.preprocessing_mean = mean
    importer.preprocessing_outputs.add(node.output[0])
    importer.alias(label, node, source)


def _identity(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    importer.alias(label, node, only_data(label, data))


def _dropout(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = only_data(label, data)
    if node.input[0] != source:
        raise ValueError(f"{label}: the network's values must be Dropout's first input")
    if importer.has_input(node, 2):
        training = importer.static_value(node.input[2], label)
        if np.any(training.astype(bool)):
            raise ValueError(f"{label}: training_mode=True (random dropout) is not supported")
    if "ratio" in attributes:
        ratio = decimal_attribute(attributes["ratio"])
    elif importer.has_input(node, 1):
        ratio = float(np.ravel(importer.static_value(node.input[1], label))[0])
    else:
        ratio = 0.5
    if not 0 <= ratio < 1:
        raise ValueError(f"{label}: ratio={ratio} must lie in [0, 1)")
    modules = [Dropout(1 - ratio)] if ratio > 0 else []
    importer.add_step(label, [source], node.output[0], importer.values[source], modules)


def _squeeze(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = only_data(label, data)
    value = importer.values[source]
    axes = axes_attribute(importer, node, attributes, label)
    if axes is None:  # every axis of size 1
        axes = [axis + 1 for axis, size in enumerate(value.logical) if size == 1]
    rank = len(value.logical) + 1
    normalized = {a % rank for a in axes if -rank <= a < rank}
    if (
        len(normalized) != len(axes)
        or 0 in normalized
        or any(value.logical[a - 1] != 1 for a in normalized)
    ):
        raise ValueError(f"{label}: Squeeze of axes {axes} of {(None, *value.logical)}")
    logical = tuple(
        size for axis, size in enumerate(value.logical, start=1) if axis not in normalized
    )
    if logical == value.shape:
        importer.alias(label, node, source, Value(value.shape, logical))
    elif len(logical) == 1:
        _flattened(importer, label, node, source)
    else:
        raise ValueError(f"{label}: Squeeze to {(None, *logical)} is not supported")


FEATURE_HANDLERS: dict[str, Handler] = {
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Relu": _relu,
    "Add": _add,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Mul": _mul,
    "Sub": _sub,
    "Identity": _identity,
    "Dropout": _dropout,
    "Squeeze": _squeeze,
}
