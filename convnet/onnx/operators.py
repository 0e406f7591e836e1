"""What the operators convnet imports share: the attributes each may carry, the shapes of
run-time values, and the helpers that read attributes and build layers.

The operators themselves, each a function turning one node into the modules computing
it, are in :mod:`convnet.onnx.spatial_operators` (convolution, padding, pooling) and
:mod:`convnet.onnx.feature_operators` (normalization, activation, linear layers,
reshaping, addition); :mod:`convnet.onnx.graph_reader` runs them. Every attribute an
operator may carry is listed in :data:`ATTRIBUTES`; anything else, or a value convnet
cannot compute exactly, is a ``ValueError`` naming the node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet.nn import (
    Module,
)

if TYPE_CHECKING:
    from convnet.onnx.graph_reader import Importer

Shape = tuple[int, ...]

ATTRIBUTES: dict[str, frozenset[str]] = {
    "Conv": frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}),
    "ConvTranspose": frozenset(
        {
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "output_padding",
            "output_shape",
            "pads",
            "strides",
        }
    ),
    "Pad": frozenset({"mode", "pads", "value"}),
    "MaxPool": frozenset(
        {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"}
    ),
    "AveragePool": frozenset(
        {
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "dilations",
            "kernel_shape",
            "pads",
            "strides",
        }
    ),
    "GlobalAveragePool": frozenset(),
    "GlobalMaxPool": frozenset(),
    "BatchNormalization": frozenset({"epsilon", "momentum", "spatial", "training_mode"}),
    "LayerNormalization": frozenset({"axis", "epsilon", "stash_type"}),
    "Relu": frozenset(),
    "Add": frozenset(),
    "Flatten": frozenset({"axis"}),
    "Reshape": frozenset({"allowzero", "shape"}),
    "Gemm": frozenset({"alpha", "beta", "transA", "transB", "broadcast"}),
    "MatMul": frozenset(),
    "Identity": frozenset(),
    "Dropout": frozenset({"ratio", "seed"}),
    "ReduceMean": frozenset({"axes", "keepdims", "noop_with_empty_axes"}),
    "Squeeze": frozenset({"axes"}),
    "Shape": frozenset({"start", "end"}),
    "Constant": frozenset({"value", "value_float", "value_floats", "value_int", "value_ints"}),
    "Cast": frozenset({"to", "saturate", "round_mode"}),
    "Gather": frozenset({"axis"}),
    "Unsqueeze": frozenset({"axes"}),
    "Concat": frozenset({"axis"}),
    "Slice": frozenset({"starts", "ends", "axes"}),
    "Sub": frozenset(),
    "Mul": frozenset(),
    "Div": frozenset(),
    "ConstantOfShape": frozenset({"value"}),
    "Transpose": frozenset({"perm"}),
}
# operators that only fold (on constants and shapes), never run on the network's values
FOLD_ONLY = frozenset({"Div", "ConstantOfShape", "Transpose"})


@dataclass
class Value:
    """A run-time value: its sample shape as the modules give it, and as ONNX has it."""

    shape: Shape
    logical: Shape


def decimal_attribute(value: float) -> float:
    """A float attribute that does not change the outputs (a momentum, a dropout ratio)
    as the shortest decimal that rounds to its float32: 0.9, not 0.8999999762."""
    return float(str(np.float32(value)))


def exact_attribute(value: float) -> float:
    """A float attribute that changes the outputs, exactly as ONNX defines it: a float32."""
    return float(np.float32(value))


def epsilon_attribute(value: float, dtype: np.dtype) -> float:
    """A normalization's epsilon: in a float64 graph exactly the float32 the attribute
    holds; in a float32 graph, which rounds it to float32 anyway, the decimal (1e-05)."""
    return exact_attribute(value) if dtype == np.float64 else decimal_attribute(value)


def text_attribute(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def only_data(label: str, data: list[str]) -> str:
    if len(data) != 1:
        raise ValueError(
            f"{label}: inputs {data} are all computed from the graph input; convnet needs "
            "all but the first constant (weights)"
        )
    return data[0]


def pair_attribute(values: Any, name: str, label: str, default: int) -> tuple[int, int]:
    values = [default, default] if values is None else [int(v) for v in values]
    if len(values) != 2:
        raise ValueError(f"{label}: {name} {values} must have 2 entries (2-D only)")
    if any(v < 1 for v in values):
        raise ValueError(f"{label}: {name} {values} must be positive")
    return values[0], values[1]


def built(label: str, factory: Callable[..., Module], *args: Any, **kwargs: Any) -> Module:
    """``factory(*args, **kwargs)``, its ValueError naming the node."""
    try:
        return factory(*args, **kwargs)
    except ValueError as error:
        raise ValueError(
            f"{label}: not supported by convnet's {factory.__name__}: {error}"
        ) from error


def axes_attribute(importer: Importer, node: Any, attributes: dict, label: str) -> list[int] | None:
    """A reduction's or a squeeze's axes: the attribute (older opsets) or the second input
    (newer ones); None when neither is given."""
    if "axes" in attributes:
        return [int(a) for a in attributes["axes"]]
    if importer.has_input(node, 1):
        return [int(a) for a in np.ravel(importer.static_value(node.input[1], label))]
    return None


Handler = Callable[["Importer", Any, str, dict, list[str]], None]
