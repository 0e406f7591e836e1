"""Reading an ONNX file without trusting it: parse, check, and materialize tensors only
after their sizes are checked against the bytes that hold them.

A tampered file can declare a tensor of 10**12 elements in a few bytes; every tensor
here is checked (element type, dimensions, the length of its data) before numpy sees
it, and external data is read only from regular files inside the model's folder, only
the declared bytes, only when they exist. So loading costs memory in proportion to the
files, never to what they claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from convnet.onnx.common import BOOL, DOUBLE, FLOAT, INT32, INT64

# the element types a graph convnet can run may hold, and the field of TensorProto that
# holds them when they are not raw bytes
TENSOR_TYPES: dict[int, tuple[np.dtype, str]] = {
    FLOAT: (np.dtype("<f4"), "float_data"),
    DOUBLE: (np.dtype("<f8"), "double_data"),
    INT64: (np.dtype("<i8"), "int64_data"),
    INT32: (np.dtype("<i4"), "int32_data"),
    BOOL: (np.dtype("bool"), "int32_data"),
}
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
MIN_IR_VERSION = 3  # the first with opset_import


def read_model(onnx: Any, path: Path) -> Any:
    """Parse the file at ``path`` as an ``onnx.ModelProto`` and check it (:func:`check_model`).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not an ONNX model, or not one :func:`check_model` accepts.
    """
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    data = path.read_bytes()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path} is not an ONNX model: cannot parse it ({error})") from error
    check_model(onnx, model, path)
    return model


def check_model(onnx: Any, model: Any, path: Path | None) -> None:
    """Refuse a ``ModelProto`` that is no model, has parts convnet never runs (subgraphs,
    sparse or training initializers, functions), points at external data it may not read,
    or fails onnx's checker.

    Parameters
    ----------
    path : Path or None
        The file the model came from (None: a model in memory, which may not use
        external data).
    """
    source = str(path) if path is not None else "the model"
    if (
        model.ir_version < MIN_IR_VERSION
        or not model.HasField("graph")
        or not model.opset_import
        or not model.graph.node
    ):
        raise ValueError(
            f"{source} is not an ONNX model: it has no graph, no operator set or no IR "
            f"version >= {MIN_IR_VERSION} (IR version {model.ir_version}, "
            f"{len(model.graph.node)} nodes)"
        )
    _refuse_extras(model, source)
    external = False
    base_dir = None if path is None else path.parent
    for where, tensor in _tensors(model):
        if tensor.data_location == EXTERNAL:
            external = True
            _external_file(tensor, where, base_dir)
    try:
        # with external data the checker needs the file, to find it beside the model
        onnx.checker.check_model(str(path) if external else model)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise ValueError(f"{source} is not a valid ONNX model: {_first_line(error)}") from error


def _tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """Every tensor the graph holds (initializers, tensor attributes), with its name."""
    for tensor in model.graph.initializer:
        yield f"initializer {tensor.name!r}", tensor
    for index, node in enumerate(model.graph.node):
        for attribute in node.attribute:
            tensors = [attribute.t] if attribute.HasField("t") else list(attribute.tensors)
            for tensor in tensors:
                yield f"{node_label(node, index)} attribute {attribute.name!r}", tensor


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _refuse_extras(model: Any, source: str) -> None:
    """Refuse what a convnet network cannot hold, before the checker walks into it."""
    graph = model.graph
    if graph.sparse_initializer:
        raise ValueError(f"{source}: sparse initializers are not supported")
    if model.functions:
        raise ValueError(
            f"{source}: model-local functions are not supported "
            f"({', '.join(function.name for function in model.functions)})"
        )
    if model.training_info:
        raise ValueError(f"{source}: training information is not supported")
    for index, node in enumerate(graph.node):
        for attribute in node.attribute:
            if attribute.g.ByteSize() or attribute.graphs or attribute.sparse_tensor.ByteSize():
                raise ValueError(
                    f"{node_label(node, index)}: attribute {attribute.name!r} holds a subgraph "
                    "or a sparse tensor; control flow and sparse constants are not supported"
                )


def node_label(node: Any, index: int) -> str:
    """How errors name a node: ``node 'name' (Op)`` or, unnamed, by position and output."""
    if node.name:
        return f"node {node.name!r} ({node.op_type})"
    output = f", output {node.output[0]!r}" if node.output else ""
    return f"node #{index} ({node.op_type}{output})"


def tensor_to_array(tensor: Any, where: str, base_dir: Path | None) -> np.ndarray:
    """The values of a ``TensorProto``, checked before anything is allocated.

    Parameters
    ----------
    tensor : onnx.TensorProto
    where : str
        What holds the tensor, for error messages (``"initializer 'conv.w'"``).
    base_dir : Path or None
        The model file's folder: external data must be a regular file inside it (None:
        a model in memory, which may hold no external data).

    Raises
    ------
    ValueError
        For an element type convnet does not use, negative dimensions, or data whose
        length differs from what the dimensions need (a tampered or truncated file).
    """
    if tensor.data_type not in TENSOR_TYPES:
        raise ValueError(
            f"{where} has element type {tensor.data_type} "
            f"({_type_name(tensor.data_type)}); convnet reads float, double, int64, int32 "
            "and bool tensors"
        )
    dtype, field = TENSOR_TYPES[tensor.data_type]
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise ValueError(f"{where} has negative dimensions {dims}")
    count = math.prod(dims)
    nbytes = count * dtype.itemsize
    if tensor.data_location == EXTERNAL:
        raw = _external_bytes(tensor, where, base_dir)
    elif tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) != nbytes:
            raise ValueError(
                f"{where} declares {dims} ({count} elements, {nbytes} bytes) but holds "
                f"{len(raw)} bytes of data"
            )
    else:
        values = getattr(tensor, field)
        if len(values) != count:
            raise ValueError(
                f"{where} declares {dims} ({count} elements) but holds {len(values)} values"
            )
        return np.asarray(values).astype(dtype.newbyteorder("="), copy=True).reshape(dims)
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _type_name(code: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(code)
    except ValueError:
        return "unknown"


def _external_file(tensor: Any, where: str, base_dir: Path | None) -> tuple[Path, int, int]:
    """Where a tensor's external data lies (file, offset, bytes), refused unless it is a
    regular file inside ``base_dir`` holding all the bytes the tensor needs."""
    if base_dir is None:
        raise ValueError(f"{where} has external data; load the model from its file")
    dtype, _ = TENSOR_TYPES.get(tensor.data_type, (np.dtype("u1"), ""))
    nbytes = math.prod(max(int(d), 0) for d in tensor.dims) * dtype.itemsize
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location", "")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries.get("length", str(nbytes)))
    except ValueError as error:
        raise ValueError(f"{where}: malformed external data offset or length ({error})") from error
    relative = Path(location)
    if not location or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(
            f"{where} points at external data {location!r}; convnet reads only files named "
            "relative to the model's folder, inside it"
        )
    if offset < 0 or length != nbytes:
        raise ValueError(
            f"{where}: external data of {length} bytes at offset {offset}, but the tensor "
            f"needs {nbytes} bytes"
        )
    folder = base_dir.resolve()
    target = (folder / relative).resolve()
    if folder not in target.parents or not target.is_file():
        raise ValueError(
            f"{where} points at external data {location!r}, which is not a regular file "
            f"inside {folder}"
        )
    size = target.stat().st_size
    if offset + nbytes > size:
        raise ValueError(
            f"{where} needs bytes {offset} to {offset + nbytes} of {location!r}, which has "
            f"{size} bytes"
        )
    return target, offset, nbytes


def _external_bytes(tensor: Any, where: str, base_dir: Path | None) -> bytes:
    """The bytes of a tensor's external data, read only where :func:`_external_file` allows."""
    target, offset, nbytes = _external_file(tensor, where, base_dir)
    with open(target, "rb") as handle:
        handle.seek(offset)
        data = handle.read(nbytes)
    if len(data) != nbytes:
        raise ValueError(f"{where}: {target.name!r} changed while it was read")
    return data
