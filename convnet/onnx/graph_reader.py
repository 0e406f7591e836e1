"""An ONNX graph as a :class:`convnet.nn.Classifier`.

Two passes over the nodes that the output depends on:

1. In graph order, every node either folds (all its inputs static: see
   :mod:`convnet.onnx.folding`) or becomes a *step*: the convnet modules that compute it
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

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convnet.nn import (
    Classifier,
    Module,
    Pad2d,
    Residual,
    Sequential,
)
from convnet.onnx.common import (
    MODEL_ELEMENT_TYPES,
    STATISTICS,
    set_running_statistics,
)
from convnet.onnx.feature_operators import FEATURE_HANDLERS
from convnet.onnx.files import node_label, tensor_to_array
from convnet.onnx.folding import Folder, shape_vector, slice_shape
from convnet.onnx.operators import ATTRIBUTES, FOLD_ONLY, Value
from convnet.onnx.spatial_operators import SPATIAL_HANDLERS

HANDLERS = {**SPATIAL_HANDLERS, **FEATURE_HANDLERS}

Shape = tuple[int, ...]
# operator semantics this importer implements hold from opset 7 (numpy-style broadcasting
# in Add; Dropout and BatchNormalization without is_test)
MIN_OPSET = 7
# the elements all folded constants together may hold: what the file's own bytes could
# encode, plus room for shape arithmetic
FOLD_ALLOWANCE = 1 << 20


@dataclass
class Step:
    """The modules of one node, from its data input(s) to its output."""

    label: str
    inputs: list[str]
    output: str
    modules: list[Module] = field(default_factory=list)
    # a positive factor a LayerNormalization right after must absorb (Mul by a scalar)
    pending_scale: float | None = None

    @property
    def is_join(self) -> bool:
        return len(self.inputs) == 2


class Importer:
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
        self.values: dict[str, Value] = {}
        self.steps: dict[str, Step] = {}
        self.arrays: dict[int, dict[str, np.ndarray]] = {}
        self.users: dict[str, list[Step]] = {}
        self.consumers: Counter[str] = Counter()
        # raw images' preprocessing in front of the network: input * scale - mean
        self.preprocessing_scale = 1.0
        self.preprocessing_mean: np.ndarray | None = None
        self.preprocessing_outputs: set[str] = set()

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
    def static_value(self, name: str, label: str) -> np.ndarray:
        if name in self.static:
            return self.static[name]
        if name in self.initializers:
            array = tensor_to_array(self.initializers[name], f"initializer {name!r}", self.base_dir)
            self.static[name] = array
            return array
        raise ValueError(f"{label}: input {name!r} is neither computed before it nor a constant")

    def weight(self, node: Any, index: int, label: str, ndim: int | None = None) -> np.ndarray:
        """Input ``index`` of ``node`` as a float array of the model dtype (a weight)."""
        name = node.input[index]
        if name in self.values:
            raise ValueError(
                f"{label}: input {index} ({name!r}) is computed from the graph input; "
                "convnet needs it constant (a weight)"
            )
        array = self.static_value(name, label)
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

    def has_input(self, node: Any, index: int) -> bool:
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
    def run(self) -> tuple[Classifier, tuple[float, np.ndarray] | None]:
        """The network, and the preprocessing in front of it: ``(scale, mean)`` (the
        input is ``raw * scale - mean``), or None."""
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
        self.values[self.input_name] = Value(self.input_dim, self.input_dim)
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
                inputs = [self.static_value(name, label) if name else None for name in node.input]
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
        for step in self.steps.values():
            if step.pending_scale is not None:
                raise ValueError(
                    f"{step.label}: multiplies by a constant; convnet folds that only into a "
                    "LayerNormalization right after it"
                )
        preprocessing = None
        if self.preprocessing_outputs:
            mean = self.preprocessing_mean
            if mean is None:
                mean = np.zeros(self.input_dim, dtype=self.dtype)
            preprocessing = (self.preprocessing_scale, mean)
        return self._classifier(), preprocessing

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

    def add_step(
        self, label: str, inputs: list[str], output: str, value: Value, modules: list[Module]
    ) -> Step:
        step = Step(label, inputs, output, modules)
        self.steps[output] = step
        self.values[output] = value
        for name in inputs:
            self.users.setdefault(name, []).append(step)
        return step

    def layer(
        self,
        label: str,
        node: Any,
        source: str,
        module: Module,
        arrays: dict[str, np.ndarray],
        logical: Shape | None = None,
        padding: Pad2d | None = None,
        cropping: Pad2d | None = None,
    ) -> None:
        """A step of one module with its arrays, between ``padding`` and ``cropping`` if
        given; the output's shape is the modules', and ONNX's shape of it ``logical`` if
        that differs (a global pool's (C, 1, 1))."""
        value = self.values[source]
        if value.shape != value.logical:
            raise ValueError(
                f"{label}: its input has the shape {(None, *value.logical)} of a global pool's "
                f"output, which convnet holds as {(None, *value.shape)}; {node.op_type} on it "
                "is not supported"
            )
        modules = [part for part in (padding, module, cropping) if part is not None]
        shape = value.shape
        try:
            for part in modules:
                shape = part.output_shape(shape)
        except ValueError as error:
            raise ValueError(f"{label}: {error}") from error
        self.arrays[id(module)] = arrays
        value = Value(shape, shape if logical is None else logical)
        self.add_step(label, [source], node.output[0], value, modules)

    def alias(self, label: str, node: Any, source: str, value: Value | None = None) -> None:
        """A step with no modules (Identity, test-mode Dropout, a no-op reshape)."""
        self.add_step(label, [source], node.output[0], value or self.values[source], [])

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
        model = Classifier(Sequential(*modules), self.input_dim, dtype=self.dtype)
        self._assign_arrays(model)
        return model

    def _chain(self, value: str) -> tuple[list[Module], str, Step | None]:
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
            if len({id(step) for step in users}) != len(users):
                join = users[0]
                raise ValueError(f"{join.label}: adds a value to itself; convnet has no such layer")
            inner, end, join = self._branches(value, users)
            return modules + inner, end, join

    def _path(self, value: str, step: Step) -> tuple[list[Module], str, Step | None]:
        """The path from ``value`` through its use ``step``: as :meth:`_chain` returns."""
        if step.is_join:
            return [], value, step
        inner, end, join = self._chain(step.output)
        return step.modules + inner, end, join

    def _branches(self, value: str, users: list[Step]) -> tuple[list[Module], str, Step | None]:
        """The paths from ``value`` (taken by ``users``) merged into residual connections,
        innermost first, until one path is left: returns it as :meth:`_chain` does.

        Two paths that meet in one Add are a Residual (identity shortcut when one of them
        is ``value`` itself), and what follows that Add a path on; so nested residuals
        (``x + b(x + a(x))``, a Residual whose body starts with one) read back.

        Raises
        ------
        ValueError
            If some paths never meet two by two in an Add.
        """
        paths = [self._path(value, step) for step in users]
        while len(paths) > 1:
            pair = self._meeting(paths)
            if pair is None:
                raise ValueError(
                    f"the value {value!r} feeds {len(users)} uses "
                    f"({', '.join(step.label for step in users)}) that do not meet two by "
                    "two in an Add; convnet's networks branch only into the two paths of a "
                    "residual connection"
                )
            first, second = (paths[index] for index in pair)
            join = first[2]
            residual = _residual(join, {first[1]: first[0], second[1]: second[0]})
            inner, end, next_join = self._chain(join.output)
            paths = [path for index, path in enumerate(paths) if index not in pair]
            paths.append(([residual, *inner], end, next_join))
        return paths[0]

    @staticmethod
    def _meeting(paths: list[tuple[list[Module], str, Step | None]]) -> tuple[int, int] | None:
        """The indices of two paths that are the two inputs of one Add, or None."""
        for i, (_, end, join) in enumerate(paths):
            for j in range(i + 1, len(paths)):
                other_end, other_join = paths[j][1], paths[j][2]
                if (
                    join is not None
                    and other_join is join
                    and end != other_end
                    and {end, other_end} == set(join.inputs)
                ):
                    return i, j
        return None

    def _assign_arrays(self, model: Classifier) -> None:
        """The graph's arrays into the layers (after the Classifier drew its own)."""
        for layer in model.net.layers():
            arrays = dict(self.arrays.get(id(layer), {}))
            if set(STATISTICS) <= set(arrays):
                set_running_statistics(layer, *(arrays.pop(name) for name in STATISTICS))
            for local, array in arrays.items():
                layer.params[local] = array


def _residual(join: Step, paths: dict[str, list[Module]]) -> Residual:
    """The Residual of the two paths that ``join`` adds, keyed by the values they end in."""
    body, shortcut = (paths[name] for name in join.inputs)
    if not body:
        body, shortcut = shortcut, body
    if not body:
        raise ValueError(f"{join.label}: adds a value to itself; convnet has no such layer")
    return Residual(_module(body), _module(shortcut) if shortcut else None)


def _module(modules: list[Module]) -> Module:
    return modules[0] if len(modules) == 1 else Sequential(*modules)


def import_model(
    onnx: Any, model: Any, base_dir: Path | None, input_dim: Shape | None
) -> tuple[Classifier, tuple[float, np.ndarray] | None]:
    """The Classifier computing the graph of ``model`` (see :func:`convnet.onnx.load`)."""
    return Importer(onnx, model, base_dir, input_dim).run()
