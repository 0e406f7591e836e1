"""An ONNX graph as a :class:`convnet.nn.Classifier`.

Two passes over the nodes that the output depends on:

1. In graph order, every node either folds (all its inputs static: see
   :mod:`convnet._onnx_fold`) or becomes a *step*: the convnet modules that compute it
   from one run-time value (Conv -> Conv2d, Gemm -> Linear, ...), or a *join* (Add of
   two run-time values). Each run-time value keeps two sample shapes: what the modules
   give and what ONNX says (they differ only where ONNX keeps a global pool's (C, 1, 1)
   and convnet gives (C,)).
2. From the input forward, chains of steps become a Sequential, and a value that feeds
   two branches which meet again in an Add becomes a :class:`convnet.nn.Residual`.

Whatever convnet cannot compute exactly is a ``ValueError`` naming the node and what it
cannot do; nothing is approximated.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convnet._onnx_common import (
    MODEL_ELEMENT_TYPES,
    STATISTICS,
    dotted,
    named_modules,
    set_running_statistics,
)
from convnet._onnx_fold import BATCH, Folder, reshape_target, shape_vector, slice_shape
from convnet._onnx_read import node_label, tensor_to_array
from convnet.nn import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Classifier,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Residual,
    Sequential,
    from_config,
)

Shape = tuple[int, ...]
# operator semantics this importer implements hold from opset 7 (numpy-style broadcasting
# in Add; Dropout and BatchNormalization without is_test)
MIN_OPSET = 7
# the elements all folded constants together may hold: what the file's own bytes could
# encode, plus room for shape arithmetic
FOLD_ALLOWANCE = 1 << 20

ATTRIBUTES: dict[str, frozenset[str]] = {
    "Conv": frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}),
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
}
# operators that only fold (on constants and shapes), never run on the network's values
FOLD_ONLY = frozenset({"Sub", "Mul", "Div"})


@dataclass
class _Value:
    """A run-time value: its sample shape as the modules give it, and as ONNX has it."""

    shape: Shape
    logical: Shape


@dataclass
class _Step:
    """The modules of one node, from its data input(s) to its output."""

    label: str
    inputs: list[str]
    output: str
    modules: list[Module] = field(default_factory=list)

    @property
    def is_join(self) -> bool:
        return len(self.inputs) == 2


def _decimal(value: float) -> float:
    """A float attribute that does not change the outputs (a momentum, a dropout ratio)
    as the shortest decimal that rounds to its float32: 0.9, not 0.8999999762."""
    return float(str(np.float32(value)))


def _exact(value: float) -> float:
    """A float attribute that changes the outputs, exactly as ONNX defines it: a float32."""
    return float(np.float32(value))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Importer:
    """Holds one graph's state while it becomes modules."""

    def __init__(
        self, onnx: Any, model: Any, base_dir: Path | None, input_dim: Shape | None
    ) -> None:
        self.onnx = onnx
        self.model = model
        self.graph = model.graph
        self.base_dir = base_dir
        self.requested_input_dim = input_dim
        self.folder = Folder(FOLD_ALLOWANCE + model.ByteSize())
        self.initializers: dict[str, Any] = {}
        for tensor in self.graph.initializer:
            if tensor.name in self.initializers:
                raise ValueError(f"two initializers are named {tensor.name!r}")
            self.initializers[tensor.name] = tensor
        self.static: dict[str, np.ndarray] = {}
        self.values: dict[str, _Value] = {}
        self.steps: dict[str, _Step] = {}
        self.arrays: dict[int, dict[str, np.ndarray]] = {}
        self.users: dict[str, list[_Step]] = {}
        self.consumers: Counter[str] = Counter()

    # -- the graph's interface
    def _check_opset(self) -> None:
        versions = {entry.domain: entry.version for entry in self.model.opset_import}
        version = versions.get("", versions.get("ai.onnx"))
        if version is None:
            raise ValueError("the model imports no version of the default ONNX operator set")
        if version < MIN_OPSET:
            raise ValueError(
                f"the model uses opset {version}; convnet reads opset {MIN_OPSET} and newer"
            )

    def _graph_input(self, input_dim: Shape | None) -> tuple[str, np.dtype, Shape, int | None]:
        inputs = [value for value in self.graph.input if value.name not in self.initializers]
        if len(inputs) != 1:
            raise ValueError(
                f"the graph must have one input, got {len(inputs)} "
                f"({', '.join(value.name for value in inputs)})"
            )
        value = inputs[0]
        tensor_type = value.type.tensor_type
        if (
            not value.type.HasField("tensor_type")
            or tensor_type.elem_type not in MODEL_ELEMENT_TYPES
        ):
            raise ValueError(
                f"the graph input {value.name!r} must be a float or double tensor, got "
                f"element type {tensor_type.elem_type}"
            )
        dims = list(tensor_type.shape.dim)
        if not tensor_type.HasField("shape") or len(dims) not in (2, 4):
            raise ValueError(
                f"the graph input {value.name!r} must be (N, C, H, W) or (N, D), got rank "
                f"{len(dims) if tensor_type.HasField('shape') else 'unknown'}"
            )
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        batch = declared[0]
        sample = declared[1:]
        if input_dim is not None:
            if len(input_dim) != len(sample) or any(
                known is not None and known != given
                for known, given in zip(sample, input_dim, strict=True)
            ):
                raise ValueError(
                    f"input_dim {tuple(input_dim)} does not fit the graph input "
                    f"{value.name!r} of sample shape {tuple(sample)} (None: symbolic)"
                )
            sample = list(input_dim)
        if any(d is None or d < 1 for d in sample):
            raise ValueError(
                f"the graph input {value.name!r} has sample shape {tuple(sample)} with "
                "symbolic or zero sizes (None); pass input_dim=(C, H, W) or (D,)"
            )
        dtype = MODEL_ELEMENT_TYPES[tensor_type.elem_type]
        return value.name, dtype, tuple(int(d) for d in sample), batch or None

    # -- static values
    def _static_value(self, name: str, label: str) -> np.ndarray:
        if name in self.static:
            return self.static[name]
        if name in self.initializers:
            array = tensor_to_array(self.initializers[name], f"initializer {name!r}", self.base_dir)
            self.static[name] = array
            return array
        raise ValueError(f"{label}: input {name!r} is neither computed before it nor a constant")

    def _weight(self, node: Any, index: int, label: str, ndim: int | None = None) -> np.ndarray:
        """Input ``index`` of ``node`` as a float array of the model dtype (a weight)."""
        name = node.input[index]
        if name in self.values:
            raise ValueError(
                f"{label}: input {index} ({name!r}) is computed from the graph input; "
                "convnet needs it constant (a weight)"
            )
        array = self._static_value(name, label)
        if array.dtype != self.dtype:
            raise ValueError(
                f"{label}: input {index} ({name!r}) has element type {array.dtype}, the graph "
                f"computes in {self.dtype}"
            )
        if ndim is not None and array.ndim != ndim:
            raise ValueError(
                f"{label}: input {index} ({name!r}) must have {ndim} dimensions, got shape "
                f"{array.shape}"
            )
        return array

    def _optional_input(self, node: Any, index: int) -> bool:
        return index < len(node.input) and node.input[index] != ""

    def _attributes(self, node: Any, label: str) -> dict[str, Any]:
        allowed = ATTRIBUTES[node.op_type]
        result = {}
        for attribute in node.attribute:
            if attribute.name not in allowed:
                raise ValueError(
                    f"{label}: attribute {attribute.name!r} of {node.op_type} is not supported"
                )
            if attribute.type == self.onnx.AttributeProto.TENSOR:
                result[attribute.name] = tensor_to_array(
                    attribute.t, f"{label} attribute {attribute.name!r}", self.base_dir
                )
            else:
                result[attribute.name] = self.onnx.helper.get_attribute_value(attribute)
        return result

    # -- pass 1
    def run(self) -> Classifier:
        needed = self._needed_nodes()
        for index in needed:  # the operators first: the most telling refusal
            node = self.graph.node[index]
            if node.domain not in ("", "ai.onnx"):
                raise ValueError(
                    f"{node_label(node, index)}: operator domain {node.domain!r} is not supported"
                )
            if node.op_type not in ATTRIBUTES:
                raise ValueError(
                    f"{node_label(node, index)}: operator {node.op_type} is not supported "
                    f"(convnet runs {', '.join(sorted(set(ATTRIBUTES) - FOLD_ONLY))})"
                )
        self._check_opset()
        self.input_name, self.dtype, self.input_dim, self.static_batch = self._graph_input(
            self.requested_input_dim
        )
        self.values[self.input_name] = _Value(self.input_dim, self.input_dim)
        used = self._used_names(needed)
        self.consumers.update(
            name
            for index in needed
            if self.graph.node[index].op_type != "Shape"
            for name in self.graph.node[index].input
        )
        for index in needed:
            node = self.graph.node[index]
            label = node_label(node, index)
            attributes = self._attributes(node, label)
            for extra in node.output[1:]:
                if extra in used:
                    raise ValueError(
                        f"{label}: the graph uses its output {extra!r}, which convnet does not "
                        "compute (only the first output of a test-mode operator)"
                    )
            data = [name for name in node.input if name in self.values]
            if node.op_type == "Shape" and data:
                dims = shape_vector(self.values[data[0]].logical)
                start, end = int(attributes.get("start", 0)), attributes.get("end")
                self.static[node.output[0]] = slice_shape(dims, start, end)
            elif not data:
                inputs = [self._static_value(name, label) if name else None for name in node.input]
                self.static[node.output[0]] = self.folder.fold(
                    node.op_type, inputs, attributes, label
                )
            else:
                handler = HANDLERS.get(node.op_type)
                if handler is None:
                    raise ValueError(
                        f"{label}: {node.op_type} on the network's values is not supported"
                    )
                handler(self, node, label, attributes, data)
        return self._classifier()

    def _needed_nodes(self) -> list[int]:
        """Indices of the nodes the graph output depends on, in graph order."""
        if len(self.graph.output) != 1:
            raise ValueError(f"the graph must have one output, got {len(self.graph.output)}")
        producer = {
            name: index for index, node in enumerate(self.graph.node) for name in node.output
        }
        needed: set[int] = set()
        pending = [self.graph.output[0].name]
        while pending:
            name = pending.pop()
            index = producer.get(name)
            if index is None or index in needed:
                continue
            needed.add(index)
            pending.extend(name for name in self.graph.node[index].input if name)
        return sorted(needed)

    def _used_names(self, needed: list[int]) -> set[str]:
        used = {self.graph.output[0].name}
        for index in needed:
            used.update(self.graph.node[index].input)
        return used

    def _add_step(
        self, label: str, inputs: list[str], output: str, value: _Value, modules: list[Module]
    ) -> _Step:
        step = _Step(label, inputs, output, modules)
        self.steps[output] = step
        self.values[output] = value
        for name in inputs:
            self.users.setdefault(name, []).append(step)
        return step

    def _layer(
        self, label: str, node: Any, source: str, module: Module, arrays: dict[str, np.ndarray]
    ) -> None:
        """A step of one module with its arrays, output shape from the module itself."""
        value = self.values[source]
        if value.shape != value.logical:
            raise ValueError(
                f"{label}: its input has the shape {(None, *value.logical)} of a global pool's "
                f"output, which convnet holds as {(None, *value.shape)}; {node.op_type} on it "
                "is not supported"
            )
        try:
            shape = module.output_shape(value.shape)
        except ValueError as error:
            raise ValueError(f"{label}: {error}") from error
        self.arrays[id(module)] = arrays
        self._add_step(label, [source], node.output[0], _Value(shape, shape), [module])

    def _alias(self, label: str, node: Any, source: str, value: _Value | None = None) -> None:
        """A step with no modules (Identity, test-mode Dropout, a no-op reshape)."""
        self._add_step(label, [source], node.output[0], value or self.values[source], [])

    # -- pass 2
    def _classifier(self) -> Classifier:
        output = self.graph.output[0].name
        if output not in self.values:
            raise ValueError(f"the graph output {output!r} does not depend on the input")
        modules, end, join = self._chain(self.input_name)
        if join is not None or end != output:
            raise ValueError(f"the graph's branches do not lead to its output {output!r}")
        value = self.values[output]
        if len(value.logical) != 1 or value.shape != value.logical:
            raise ValueError(
                f"the graph output must be class scores (N, classes), got {(None, *value.logical)}"
            )
        if not modules:
            raise ValueError("the graph computes nothing from its input")
        net = modules[0] if len(modules) == 1 else Sequential(*modules)
        if not isinstance(net, Sequential):
            net = Sequential(net)
        model = Classifier(net, self.input_dim, dtype=self.dtype)
        self._assign_arrays(model)
        return model

    def _chain(self, value: str) -> tuple[list[Module], str, _Step | None]:
        """The modules from ``value`` forward to the output or to a join: returns them,
        the value they end in and the join (None at the output)."""
        modules: list[Module] = []
        while True:
            users = self.users.get(value, [])
            if not users:
                return modules, value, None
            if len(users) == 1:
                step = users[0]
                if step.is_join:
                    return modules, value, step
                modules += step.modules
                value = step.output
                continue
            if len(users) > 2 or users[0] is users[1]:
                raise ValueError(
                    f"the value {value!r} feeds {len(users)} uses "
                    f"({', '.join(step.label for step in users)}); convnet's networks branch "
                    "only into the two paths of a residual connection"
                )
            residual, join = self._residual(value, users)
            modules.append(residual)
            value = join.output

    def _residual(self, value: str, users: list[_Step]) -> tuple[Residual, _Step]:
        """The residual connection whose two paths start at ``value`` (taken by ``users``)
        and meet in an Add: returns it and that Add."""
        paths: dict[str, list[Module]] = {}
        joins = []
        for step in users:
            if step.is_join:
                paths[value], join = [], step
            else:
                inner, end, join = self._chain(step.output)
                paths[end] = step.modules + inner
            joins.append(join)
        join = joins[0]
        if join is None or joins[1] is not join or set(paths) != set(join.inputs):
            raise ValueError(
                f"the value {value!r} feeds two paths ({', '.join(s.label for s in users)}) "
                "that do not meet again in one Add; convnet's networks branch only into a "
                "residual connection"
            )
        body, shortcut = (paths[name] for name in join.inputs)
        if not body:
            body, shortcut = shortcut, body
        if not body:
            raise ValueError(f"{join.label}: adds a value to itself; convnet has no such layer")
        return Residual(_module(body), _module(shortcut) if shortcut else None), join

    def _assign_arrays(self, model: Classifier) -> None:
        statistics = {}
        for prefix, module in named_modules(model.net):
            for local, array in self.arrays.get(id(module), {}).items():
                name = dotted(prefix, local)
                if local in STATISTICS:
                    statistics[name] = array
                else:
                    model.params[name] = array
        set_running_statistics(model, statistics)


def _module(modules: list[Module]) -> Module:
    return modules[0] if len(modules) == 1 else Sequential(*modules)


# -- the operators on run-time values
def _only_data(label: str, data: list[str]) -> str:
    if len(data) != 1:
        raise ValueError(
            f"{label}: inputs {data} are all computed from the graph input; convnet needs "
            "all but the first constant (weights)"
        )
    return data[0]


def _pair(values: Any, name: str, label: str, default: int) -> tuple[int, int]:
    values = [default, default] if values is None else [int(v) for v in values]
    if len(values) != 2:
        raise ValueError(f"{label}: {name} {values} must have 2 entries (2-D only)")
    if any(v < 1 for v in values):
        raise ValueError(f"{label}: {name} {values} must be positive")
    return values[0], values[1]


def _explicit_pads(
    attributes: dict[str, Any],
    size: tuple[int, int],
    span: tuple[int, int],
    stride: tuple[int, int],
    label: str,
) -> tuple[int, int, int, int]:
    """ONNX's pads [top, left, bottom, right], from ``pads`` or ``auto_pad``."""
    auto_pad = _text(attributes.get("auto_pad", "NOTSET")) or "NOTSET"
    pads = attributes.get("pads")
    if auto_pad == "NOTSET":
        pads = [0, 0, 0, 0] if pads is None else [int(p) for p in pads]
        if len(pads) != 4 or any(p < 0 for p in pads):
            raise ValueError(f"{label}: pads {pads} must be 4 non-negative ints (2-D)")
        return pads[0], pads[1], pads[2], pads[3]
    if pads is not None and any(int(p) for p in pads):
        raise ValueError(f"{label}: pads and auto_pad={auto_pad} together")
    if auto_pad == "VALID":
        return 0, 0, 0, 0
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ValueError(f"{label}: auto_pad={auto_pad!r} is not supported")
    begin, end = [], []
    for length, window, step in zip(size, span, stride, strict=True):
        total = max((math.ceil(length / step) - 1) * step + window - length, 0)
        low = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(low)
        end.append(total - low)
    return begin[0], begin[1], end[0], end[1]


def _symmetric(pads: tuple[int, int, int, int], label: str) -> tuple[int, int]:
    top, left, bottom, right = pads
    if top != bottom or left != right:
        raise ValueError(
            f"{label}: asymmetric pads [top, left, bottom, right] = {list(pads)} are not supported"
        )
    return top, left


def _spatial(importer: _Importer, source: str, label: str) -> tuple[int, int, int]:
    value = importer.values[source]
    if len(value.logical) != 3:
        raise ValueError(
            f"{label}: needs images (N, C, H, W), its input has shape {(None, *value.logical)}"
        )
    channels, height, width = value.logical
    return channels, height, width


def _conv(importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    channels, height, width = _spatial(importer, source, label)
    w = importer._weight(node, 1, label, ndim=4)
    b = importer._weight(node, 2, label, ndim=1) if importer._optional_input(node, 2) else None
    filters, depth, kh, kw = w.shape
    if "kernel_shape" in attributes and list(attributes["kernel_shape"]) != [kh, kw]:
        raise ValueError(
            f"{label}: kernel_shape {list(attributes['kernel_shape'])} does not match weights "
            f"of shape {w.shape}"
        )
    stride = _pair(attributes.get("strides"), "strides", label, 1)
    dilation = _pair(attributes.get("dilations"), "dilations", label, 1)
    groups = int(attributes.get("group", 1))
    if groups < 1 or channels % groups or filters % groups or channels // groups != depth:
        raise ValueError(
            f"{label}: group={groups} does not fit {channels} input channels and weights of "
            f"shape {w.shape}"
        )
    if b is not None and b.shape != (filters,):
        raise ValueError(f"{label}: bias of shape {b.shape} for {filters} filters")
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    pads = _explicit_pads(attributes, (height, width), span, stride, label)
    layer = Conv2d(
        channels,
        filters,
        (kh, kw),
        stride=stride,
        pad=_symmetric(pads, label),
        dilation=dilation,
        groups=groups,
        bias=b is not None,
    )
    arrays = {"w": w} if b is None else {"w": w, "b": b}
    importer._layer(label, node, source, layer, arrays)


def _pool_geometry(
    importer: _Importer, source: str, label: str, attributes: dict
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    _, height, width = _spatial(importer, source, label)
    kernel = _pair(attributes.get("kernel_shape"), "kernel_shape", label, 0)
    stride = _pair(attributes.get("strides"), "strides", label, 1)
    if _pair(attributes.get("dilations"), "dilations", label, 1) != (1, 1):
        raise ValueError(f"{label}: dilated pooling (dilations) is not supported")
    pads = _explicit_pads(attributes, (height, width), kernel, stride, label)
    if any(pads):
        raise ValueError(f"{label}: padded pooling (pads {list(pads)}) is not supported")
    if int(attributes.get("ceil_mode", 0)):
        for length, window, step in zip((height, width), kernel, stride, strict=True):
            if (length - window) % step:
                raise ValueError(
                    f"{label}: ceil_mode=1 changes the output size here; it is not supported"
                )
    return kernel, stride, pads


def _max_pool(
    importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    kernel, stride, _ = _pool_geometry(importer, source, label, attributes)
    importer._layer(label, node, source, MaxPool2d(kernel, stride), {})


def _avg_pool(
    importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    kernel, stride, _ = _pool_geometry(importer, source, label, attributes)
    importer._layer(label, node, source, AvgPool2d(kernel, stride), {})


def _global_avg_pool(
    importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    channels, _, _ = _spatial(importer, source, label)
    importer._layer(label, node, source, GlobalAvgPool(), {})
    importer.values[node.output[0]] = _Value((channels,), (channels, 1, 1))


def _global_max_pool(
    importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    _, height, width = _spatial(importer, source, label)
    importer._layer(label, node, source, MaxPool2d((height, width)), {})


def _reduce_mean(
    importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    value = importer.values[source]
    if "axes" in attributes:
        axes = [int(a) for a in attributes["axes"]]
    elif importer._optional_input(node, 1):
        axes = [int(a) for a in np.ravel(importer._static_value(node.input[1], label))]
    else:
        axes = []
    rank = len(value.logical) + 1
    if sorted(a % rank for a in axes if -rank <= a < rank) != [2, 3] or len(axes) != 2 or rank != 4:
        raise ValueError(
            f"{label}: ReduceMean over axes {axes} of {(None, *value.logical)}; convnet averages "
            "only over (H, W) of images (global average pooling)"
        )
    channels = value.logical[0]
    logical = (channels, 1, 1) if attributes.get("keepdims", 1) else (channels,)
    if value.shape != value.logical:  # a global pool's (C, 1, 1): its mean is itself
        importer._alias(label, node, source, _Value(value.shape, logical))
        return
    importer._layer(label, node, source, GlobalAvgPool(), {})
    importer.values[node.output[0]] = _Value((channels,), logical)


def _batch_norm(
    importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    if int(attributes.get("training_mode", 0)):
        raise ValueError(f"{label}: training_mode=1 (batch statistics) is not supported")
    if int(attributes.get("spatial", 1)) != 1:
        raise ValueError(f"{label}: spatial=0 (per-activation statistics) is not supported")
    value = importer.values[source]
    arrays = {
        name: importer._weight(node, index, label, ndim=1)
        for index, name in enumerate(("gamma", "beta", "running_mean", "running_var"), start=1)
    }
    channels = value.logical[0] if value.logical else 0
    if any(array.shape != (channels,) for array in arrays.values()):
        raise ValueError(
            f"{label}: scale, bias, mean and var must have {channels} entries, got "
            f"{[array.shape for array in arrays.values()]}"
        )
    eps = _exact(attributes.get("epsilon", 1e-5))
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"{label}: epsilon={eps} is not supported (convnet needs eps > 0)")
    if not np.all(arrays["running_var"] + eps > 0):
        raise ValueError(f"{label}: a running variance at or below -epsilon")
    momentum = _decimal(attributes.get("momentum", 0.9))
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
    importer._add_step(label, [source], node.output[0], value, [layer])


def _relu(importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    importer._add_step(label, [source], node.output[0], importer.values[source], [ReLU()])


def _flattened(importer: _Importer, label: str, node: Any, source: str) -> None:
    """Steps to (N, features): a Flatten unless the modules already give (N, D)."""
    value = importer.values[source]
    flat = _Value((math.prod(value.logical),), (math.prod(value.logical),))
    importer._add_step(
        label, [source], node.output[0], flat, [] if len(value.shape) == 1 else [Flatten()]
    )


def _flatten(importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    rank = len(importer.values[source].logical) + 1
    axis = int(attributes.get("axis", 1))
    if not -rank <= axis <= rank or axis % rank != 1:
        raise ValueError(
            f"{label}: Flatten with axis={axis} of rank {rank}; convnet keeps the batch axis"
        )
    _flattened(importer, label, node, source)


def _reshape(importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    value = importer.values[source]
    if "shape" in attributes:
        target = np.array(attributes["shape"], dtype=np.int64)
    else:
        if node.input[1] in importer.values:
            raise ValueError(f"{label}: the target shape is computed from the input's values")
        target = importer._static_value(node.input[1], label)
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
        importer._alias(label, node, source)
    elif len(rest) == 1:
        _flattened(importer, label, node, source)
    else:
        raise ValueError(f"{label}: Reshape to {described}; convnet reshapes only to (N, features)")


def _dense_input(importer: _Importer, source: str, label: str) -> int:
    value = importer.values[source]
    if len(value.logical) != 1:
        raise ValueError(
            f"{label}: needs a matrix (N, features), its input has shape {(None, *value.logical)}"
        )
    return value.logical[0]


def _gemm(importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    if node.input[0] != source:
        raise ValueError(f"{label}: the network's values must be Gemm's first input (A)")
    features = _dense_input(importer, source, label)
    if int(attributes.get("transA", 0)):
        raise ValueError(f"{label}: transA=1 is not supported")
    matrix = importer._weight(node, 1, label, ndim=2)
    weights = matrix.T if int(attributes.get("transB", 0)) else matrix
    if weights.shape[0] != features:
        raise ValueError(
            f"{label}: weights of shape {matrix.shape} (transB={attributes.get('transB', 0)}) "
            f"for {features} input features"
        )
    outputs = weights.shape[1]
    alpha = _exact(attributes.get("alpha", 1.0))
    beta = _exact(attributes.get("beta", 1.0))
    if alpha != 1:
        weights = weights * importer.dtype.type(alpha)
    bias = np.zeros(outputs, dtype=importer.dtype)
    if importer._optional_input(node, 2):
        constant = importer._weight(node, 2, label)
        bias = _bias(constant, (outputs,), label) * importer.dtype.type(beta)
    layer = Linear(features, outputs)
    importer._layer(label, node, source, layer, {"w": np.ascontiguousarray(weights), "b": bias})


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


def _matmul(importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    if node.input[0] != source:
        raise ValueError(f"{label}: the network's values must be MatMul's first input")
    features = _dense_input(importer, source, label)
    weights = importer._weight(node, 1, label, ndim=2)
    if weights.shape[0] != features:
        raise ValueError(f"{label}: weights of shape {weights.shape} for {features} features")
    layer = Linear(features, weights.shape[1])
    bias = np.zeros(weights.shape[1], dtype=importer.dtype)
    importer._layer(label, node, source, layer, {"w": np.ascontiguousarray(weights), "b": bias})


def _add(importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    if len(data) == 2:
        first, second = (importer.values[name] for name in data)
        if first.logical != second.logical or first.shape != second.shape:
            raise ValueError(
                f"{label}: adds values of shapes {(None, *first.logical)} and "
                f"{(None, *second.logical)}; convnet adds only equal shapes"
            )
        importer._add_step(label, list(data), node.output[0], first, [])
        return
    source = data[0]
    constant = importer._weight(node, 1 - list(node.input).index(source), label)
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
    importer._alias(label, node, source)


def _identity(
    importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    importer._alias(label, node, _only_data(label, data))


def _dropout(importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    if node.input[0] != source:
        raise ValueError(f"{label}: the network's values must be Dropout's first input")
    if importer._optional_input(node, 2):
        training = importer._static_value(node.input[2], label)
        if np.any(training.astype(bool)):
            raise ValueError(f"{label}: training_mode=True (random dropout) is not supported")
    if "ratio" in attributes:
        ratio = _decimal(attributes["ratio"])
    elif importer._optional_input(node, 1):
        ratio = float(np.ravel(importer._static_value(node.input[1], label))[0])
    else:
        ratio = 0.5
    if not 0 <= ratio < 1:
        raise ValueError(f"{label}: ratio={ratio} must lie in [0, 1)")
    modules = [Dropout(1 - ratio)] if ratio > 0 else []
    importer._add_step(label, [source], node.output[0], importer.values[source], modules)


def _squeeze(importer: _Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    value = importer.values[source]
    if "axes" in attributes:
        axes = [int(a) for a in attributes["axes"]]
    elif importer._optional_input(node, 1):
        axes = [int(a) for a in np.ravel(importer._static_value(node.input[1], label))]
    else:
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
        importer._alias(label, node, source, _Value(value.shape, logical))
    elif len(logical) == 1:
        _flattened(importer, label, node, source)
    else:
        raise ValueError(f"{label}: Squeeze to {(None, *logical)} is not supported")


Handler = Callable[[_Importer, Any, str, dict, list[str]], None]
HANDLERS: dict[str, Handler] = {
    "Conv": _conv,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "GlobalAveragePool": _global_avg_pool,
    "GlobalMaxPool": _global_max_pool,
    "ReduceMean": _reduce_mean,
    "BatchNormalization": _batch_norm,
    "Relu": _relu,
    "Add": _add,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Identity": _identity,
    "Dropout": _dropout,
    "Squeeze": _squeeze,
}


def import_model(
    onnx: Any, model: Any, base_dir: Path | None, input_dim: Shape | None
) -> Classifier:
    """The Classifier computing the graph of ``model`` (see :func:`convnet.onnx.load`)."""
    return _Importer(onnx, model, base_dir, input_dim).run()
