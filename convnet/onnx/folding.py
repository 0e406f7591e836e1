"""Constant folding of what exporters emit around a network: shape arithmetic and copies.

A *static* value is known before the network runs: an initializer, a Constant, or
something computed from them and from the shapes of run-time values. Shapes hold the
batch size as :data:`BATCH` (an object array entry), which flows through Shape, Gather,
Slice, Unsqueeze, Squeeze, Concat and Cast, so the usual ``x.view(x.size(0), -1)`` chain
(Shape -> Gather -> Unsqueeze -> Concat -> Reshape) folds to ``[BATCH, -1]``. Arithmetic
folds only on plain numbers, which the entries of a shape other than the batch size are.

Every folded result is charged against a budget of elements fixed by the file's size
before it is allocated, so a chain of Concats or a broadcasting Mul cannot make a small
file allocate without bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from convnet.onnx.common import BOOL, DOUBLE, FLOAT, INT32, INT64


class _Batch:
    """The batch size, unknown until the network runs."""

    def __repr__(self) -> str:
        return "N"


BATCH = _Batch()

CAST_TYPES = {
    FLOAT: np.dtype(np.float32),
    DOUBLE: np.dtype(np.float64),
    INT64: np.dtype(np.int64),
    INT32: np.dtype(np.int32),
    BOOL: np.dtype(np.bool_),
}


def has_batch(array: np.ndarray) -> bool:
    """Whether a static value holds the symbolic batch size."""
    return array.dtype == object and any(entry is BATCH for entry in array.flat)


def shape_vector(shape: Sequence[int]) -> np.ndarray:
    """A run-time value's shape ``(N, *shape)`` as a static vector with :data:`BATCH`."""
    return np.array([BATCH, *(int(d) for d in shape)], dtype=object)


class Folder:
    """Evaluates foldable nodes on static inputs, within an element budget.

    Parameters
    ----------
    budget : int
        Elements all folded results together may hold.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def charge(self, count: int, label: str) -> None:
        """Account for a result of ``count`` elements before allocating it."""
        if count > self.budget:
            raise ValueError(
                f"{label}: folding it would create {count} elements, more than the file "
                "can justify (a tampered or adversarial graph?)"
            )
        self.budget -= count

    def fold(
        self, op: str, inputs: list[np.ndarray | None], attributes: dict[str, Any], label: str
    ) -> np.ndarray:
        """The output of the static node ``op`` (one output)."""
        handler = FOLDERS.get(op)
        if handler is None:
            raise ValueError(
                f"{label}: {op} on constants is not supported (convnet folds "
                f"{', '.join(sorted(FOLDERS))})"
            )
        return handler(self, inputs, attributes, label)


def _input(inputs: list[np.ndarray | None], index: int, label: str) -> np.ndarray:
    if index >= len(inputs) or inputs[index] is None:
        raise ValueError(f"{label}: input {index} is missing")
    return inputs[index]


def _optional(inputs: list[np.ndarray | None], index: int) -> np.ndarray | None:
    return inputs[index] if index < len(inputs) else None


def _ints(array: np.ndarray | None, what: str, label: str) -> list[int] | None:
    """A static int vector as Python ints (None stays None); BATCH is refused."""
    if array is None:
        return None
    if array.dtype == object and has_batch(array):
        raise ValueError(f"{label}: {what} depends on the batch size, which convnet cannot fold")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{label}: {what} must be integers, got {array.dtype}")
    return [int(v) for v in np.ravel(array)]


def _axes(
    inputs: list[np.ndarray | None], attributes: dict[str, Any], label: str
) -> list[int] | None:
    """``axes`` from the attribute (older opsets) or the second input (newer ones)."""
    if "axes" in attributes:
        return [int(a) for a in attributes["axes"]]
    return _ints(_optional(inputs, 1), "axes", label)


def _normalize_axis(axis: int, rank: int, label: str) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"{label}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def _identity(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    return _input(inputs, 0, label)


def _cast(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    value = _input(inputs, 0, label)
    target = CAST_TYPES.get(int(attributes.get("to", 0)))
    if target is None:
        raise ValueError(f"{label}: Cast to element type {attributes.get('to')} is not supported")
    if value.dtype == object:
        if target.kind not in "iu":
            raise ValueError(f"{label}: Cast of a shape holding the batch size to {target}")
        return value
    return value.astype(target)


def _shape(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    value = _input(inputs, 0, label)
    dims = np.array(value.shape, dtype=np.int64)
    return slice_shape(dims, int(attributes.get("start", 0)), attributes.get("end"))


def slice_shape(dims: np.ndarray, start: int, end: int | None) -> np.ndarray:
    """Shape's ``start`` and ``end`` attributes (clamped as the operator defines them)."""
    return dims[slice(start, None if end is None else int(end))]


def _gather(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    data, indices = _input(inputs, 0, label), _input(inputs, 1, label)
    if data.ndim == 0:
        raise ValueError(f"{label}: Gather needs data of rank >= 1")
    axis = _normalize_axis(int(attributes.get("axis", 0)), data.ndim, label)
    positions = np.asarray(_ints(indices, "indices", label), dtype=np.int64).reshape(indices.shape)
    size = data.shape[axis]
    if np.any((positions < -size) | (positions >= size)):
        raise ValueError(f"{label}: Gather indices out of range for an axis of {size}")
    folder.charge(positions.size * math.prod(data.shape) // max(size, 1), label)
    return np.asarray(np.take(data, positions % max(size, 1), axis=axis), dtype=data.dtype)


def _unsqueeze(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    value = _input(inputs, 0, label)
    axes = _axes(inputs, attributes, label)
    if axes is None:
        raise ValueError(f"{label}: Unsqueeze needs axes")
    rank = value.ndim + len(axes)
    normalized = sorted(_normalize_axis(axis, rank, label) for axis in axes)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{label}: repeated axes {axes}")
    for axis in normalized:
        value = np.expand_dims(value, axis)
    return value


def _squeeze(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    value = _input(inputs, 0, label)
    axes = _axes(inputs, attributes, label)
    if axes is None:
        return np.squeeze(value)
    normalized = tuple(_normalize_axis(axis, value.ndim, label) for axis in axes)
    if any(value.shape[axis] != 1 for axis in normalized):
        raise ValueError(f"{label}: Squeeze of axes {axes} that are not 1 in {value.shape}")
    return np.squeeze(value, axis=normalized)


def _concat(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    parts = [part for part in inputs if part is not None]
    if not parts or any(part.ndim != parts[0].ndim or part.ndim == 0 for part in parts):
        raise ValueError(f"{label}: Concat needs inputs of one rank >= 1")
    axis = _normalize_axis(int(attributes.get("axis", 0)), parts[0].ndim, label)
    folder.charge(sum(part.size for part in parts), label)
    if any(part.dtype == object for part in parts):
        parts = [part.astype(object) for part in parts]
    try:
        return np.concatenate(parts, axis=axis)
    except ValueError as error:
        raise ValueError(f"{label}: {error}") from error


def _slice(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    value = _input(inputs, 0, label)
    if "starts" in attributes:
        starts, ends = list(attributes["starts"]), list(attributes["ends"])
        axes, steps = attributes.get("axes"), None
    else:
        starts = _ints(_input(inputs, 1, label), "starts", label)
        ends = _ints(_input(inputs, 2, label), "ends", label)
        axes = _ints(_optional(inputs, 3), "axes", label)
        steps = _ints(_optional(inputs, 4), "steps", label)
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise ValueError(
            f"{label}: Slice needs starts, ends, axes, steps of one length, steps != 0"
        )
    index = [slice(None)] * value.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[_normalize_axis(int(axis), value.ndim, label)] = slice(
            int(start), int(end), int(step)
        )
    return value[tuple(index)]


def reshape_target(
    shape: Sequence[Any], source: Sequence[Any], allowzero: bool, label: str
) -> list[Any]:
    """The shape a Reshape to ``shape`` gives ``source`` (entries int or BATCH): 0 copies
    the source's entry unless ``allowzero``, one -1 takes what is left."""
    result: list[Any] = []
    for position, entry in enumerate(shape):
        if entry is BATCH:
            result.append(BATCH)
        elif int(entry) == 0 and not allowzero:
            if position >= len(source):
                raise ValueError(f"{label}: Reshape copies dimension {position} it lacks")
            result.append(source[position])
        elif int(entry) < -1:
            raise ValueError(f"{label}: Reshape to {list(shape)} with a negative size")
        else:
            result.append(int(entry))
    if sum(1 for entry in result if entry is not BATCH and entry == -1) > 1:
        raise ValueError(f"{label}: Reshape to {list(shape)} has more than one -1")
    return result


def _reshape(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    value = _input(inputs, 0, label)
    shape = attributes.get("shape")
    target = _ints(_input(inputs, 1, label) if shape is None else np.array(shape), "shape", label)
    dims = reshape_target(target, value.shape, bool(attributes.get("allowzero", 0)), label)
    try:
        return value.reshape(dims)
    except ValueError as error:
        raise ValueError(f"{label}: {error}") from error


def _plain(array: np.ndarray) -> np.ndarray:
    """A piece of a shape without the batch size as plain int64 (others unchanged).

    Parameters
    ----------
    array : numpy.ndarray
        A static value; shapes are object arrays.

    Returns
    -------
    numpy.ndarray
        ``array`` as int64 if it is an object array without :data:`BATCH`, else itself.
    """
    if array.dtype == object and not has_batch(array):
        return array.astype(np.int64)
    return array


def _arithmetic(function: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable:
    def fold(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
        left, right = (_plain(_input(inputs, index, label)) for index in (0, 1))
        if left.dtype == object or right.dtype == object:
            raise ValueError(f"{label}: arithmetic on the batch size cannot be folded")
        if left.dtype != right.dtype:
            raise ValueError(f"{label}: operands of types {left.dtype} and {right.dtype}")
        try:
            shape = np.broadcast_shapes(left.shape, right.shape)
        except ValueError as error:
            raise ValueError(f"{label}: {error}") from error
        folder.charge(math.prod(shape), label)
        try:
            with np.errstate(all="ignore"):
                return np.asarray(function(left, right)).astype(left.dtype)
        except ValueError as error:
            raise ValueError(f"{label}: {error}") from error

    return fold


def _divide(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    if left.dtype.kind in "iu":
        if np.any(right == 0):
            raise ValueError("integer division by zero")
        quotient = np.abs(left) // np.abs(right)  # ONNX truncates toward zero, as C
        return np.where((left < 0) != (right < 0), -quotient, quotient)
    return left / right


def _constant(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    for name, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if name in attributes:
            return np.asarray(attributes[name], dtype=dtype)
    for name, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if name in attributes:
            folder.charge(len(attributes[name]), label)
            return np.asarray(list(attributes[name]), dtype=dtype)
    if "value" in attributes:
        return attributes["value"]
    raise ValueError(
        f"{label}: Constant with attribute {', '.join(attributes) or 'none'} is not supported "
        "(value, value_float(s), value_int(s) are)"
    )


def _constant_of_shape(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    shape = _ints(_input(inputs, 0, label), "shape", label)
    if any(d < 0 for d in shape):
        raise ValueError(f"{label}: ConstantOfShape to negative sizes {shape}")
    fill = attributes.get("value", np.zeros(1, dtype=np.float32))
    if fill.size != 1:
        raise ValueError(f"{label}: ConstantOfShape's value must hold one element")
    folder.charge(math.prod(shape), label)
    return np.full(shape, fill.ravel()[0], dtype=fill.dtype)


def _transpose(folder: Folder, inputs: list, attributes: dict, label: str) -> np.ndarray:
    value = _input(inputs, 0, label)
    perm = attributes.get("perm")
    perm = list(range(value.ndim))[::-1] if perm is None else [int(a) for a in perm]
    if sorted(perm) != list(range(value.ndim)):
        raise ValueError(f"{label}: perm {perm} is not a permutation of {value.ndim} axes")
    return np.transpose(value, perm)


FOLDERS: dict[str, Callable[[Folder, list, dict, str], np.ndarray]] = {
    "Constant": _constant,
    "Identity": _identity,
    "Cast": _cast,
    "Shape": _shape,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": _concat,
    "Slice": _slice,
    "Reshape": _reshape,
    "ConstantOfShape": _constant_of_shape,
    "Transpose": _transpose,
    "Add": _arithmetic(np.add),
    "Sub": _arithmetic(np.subtract),
    "Mul": _arithmetic(np.multiply),
    "Div": _arithmetic(_divide),
}
