"""What ONNX export and import share: the tree walk, running statistics, element types.

Nothing here imports onnx; the element-type numbers are ONNX's ``TensorProto.DataType``
values, fixed by the format.
"""

from __future__ import annotations

import numpy as np

from convnet.nn import BatchNorm1d, BatchNorm2d, Classifier

# TensorProto.DataType: FLOAT = 1, DOUBLE = 11 (the model dtypes), INT64 = 7, INT32 = 6,
# BOOL = 9 (shape arithmetic and flags)
FLOAT = 1
INT32 = 6
INT64 = 7
BOOL = 9
DOUBLE = 11
MODEL_ELEMENT_TYPES = {FLOAT: np.dtype(np.float32), DOUBLE: np.dtype(np.float64)}
ELEMENT_TYPE_OF = {dtype: code for code, dtype in MODEL_ELEMENT_TYPES.items()}

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_NAME = "N"
DEFAULT_OPSET = 17

STATISTICS = ("running_mean", "running_var")


def dotted(prefix: str, local: str) -> str:
    """The name of a layer's array ``local`` inside a network, as ``params`` spells it."""
    return f"{prefix}.{local}" if prefix else local


def sample_shape(model: Classifier) -> tuple[int, ...]:
    """The shape of one input sample: ``model.input_dim`` as a tuple (FullyConnectedNet
    gives the course's int D)."""
    shape = model.input_dim
    return (shape,) if isinstance(shape, int) else tuple(shape)


def running_statistics(layer: BatchNorm1d | BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """A batch norm's running mean and variance: the one place that knows where a layer
    keeps them (with :func:`set_running_statistics`): its buffers."""
    buffers = layer.buffers()
    return buffers["running_mean"], buffers["running_var"]


def set_running_statistics(
    layer: BatchNorm1d | BatchNorm2d, mean: np.ndarray, var: np.ndarray
) -> None:
    """Replace a batch norm's running mean and variance (cast to its dtype)."""
    buffers = layer.buffers()
    buffers["running_mean"] = mean
    buffers["running_var"] = var
