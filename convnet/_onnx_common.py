"""What ONNX export and import share: the tree walk, running statistics, element types.

Nothing here imports onnx; the element-type numbers are ONNX's ``TensorProto.DataType``
values, fixed by the format.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from convnet.nn import BatchNorm1d, BatchNorm2d, Classifier, Module

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

BATCH_NORMS = (BatchNorm1d, BatchNorm2d)
STATISTICS = ("running_mean", "running_var")


def named_modules(module: Module, prefix: str = "") -> Iterator[tuple[str, Module]]:
    """Every module of the subtree with its dotted path (``""`` for ``module`` itself),
    parents before children, in forward order."""
    yield prefix, module
    for name, child in module.children():
        yield from named_modules(child, f"{prefix}.{name}" if prefix else name)


def dotted(prefix: str, local: str) -> str:
    """The name of a layer's array ``local`` inside a network, as ``params`` spells it."""
    return f"{prefix}.{local}" if prefix else local


def running_statistics(model: Classifier, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """The running mean and variance of the batch norm at ``prefix`` in ``model.net``.

    The one place that knows where a Classifier keeps them (today: ``params``).
    """
    mean, var = (model.params[dotted(prefix, name)] for name in STATISTICS)
    return mean, var


def set_running_statistics(model: Classifier, values: Mapping[str, np.ndarray]) -> None:
    """Store running statistics by their dotted names (``"3.running_mean"``) in ``model``."""
    for name, value in values.items():
        model.params[name] = value
