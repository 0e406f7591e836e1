"""The operators convnet runs on a graph's run-time values, each a function that turns
one node into the modules computing it (see :mod:`convnet.onnx.graph_reader`).

Every attribute an operator may carry is listed in :data:`ATTRIBUTES`; anything else, or
a value convnet cannot compute exactly, is a ``ValueError`` naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet.nn import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
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
    from_config,
)
from convnet.onnx.folding import BATCH, reshape_target

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
FOLD_ONLY = frozenset({"Sub", "Div", "ConstantOfShape", "Transpose"})


@dataclass
class Value:
    """A run-time value: its sample shape as the modules give it, and as ONNX has it."""

    shape: Shape
    logical: Shape


def _decimal(value: float) -> float:
    """A float attribute that does not change the outputs (a momentum, a dropout ratio)
    as the shortest decimal that rounds to its float32: 0.9, not 0.8999999762."""
    return float(str(np.float32(value)))


def _exact(value: float) -> float:
    """A float attribute that changes the outputs, exactly as ONNX defines it: a float32."""
    return float(np.float32(value))


def _epsilon(value: float, dtype: np.dtype) -> float:
    """A normalization's epsilon: in a float64 graph exactly the float32 the attribute
    holds; in a float32 graph, which rounds it to float32 anyway, the decimal (1e-05)."""
    return _exact(value) if dtype == np.float64 else _decimal(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
    pooling: bool = False,
) -> tuple[int, int, int, int]:
    """ONNX's pads [top, left, bottom, right], from ``pads`` or ``auto_pad``.

    SAME_UPPER / SAME_LOWER pad ``(ceil(size / stride) - 1) * stride + span - size`` in
    all, the odd one at the end / start. Where that is negative (a window smaller than the
    stride) a convolution pads nothing, as ONNX Runtime does; ONNX Runtime refuses or
    shifts such a pooling, so ``pooling`` refuses it.
    """
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
        total = (math.ceil(length / step) - 1) * step + window - length
        if total < 0 and pooling:
            raise ValueError(
                f"{label}: auto_pad={auto_pad} with a window below the stride is not "
                "supported (runtimes refuse or shift it)"
            )
        total = max(total, 0)
        low = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(low)
        end.append(total - low)
    return begin[0], begin[1], end[0], end[1]


def _split_pads(
    pads: tuple[int, int, int, int], value: float
) -> tuple[tuple[int, int], Pad2d | None]:
    """ONNX's pads [top, left, bottom, right] as the (h, w) pads both sides share, and a
    Pad2d of ``value`` adding the rest in front (None when the pads are symmetric)."""
    top, left, bottom, right = pads
    shared = (min(top, bottom), min(left, right))
    extra = (top - shared[0], left - shared[1], bottom - shared[0], right - shared[1])
    return shared, (Pad2d(extra, value) if any(extra) else None)


def _built(label: str, factory: Callable[..., Module], *args: Any, **kwargs: Any) -> Module:
    """``factory(*args, **kwargs)``, its ValueError naming the node."""
    try:
        return factory(*args, **kwargs)
    except ValueError as error:
        raise ValueError(
            f"{label}: not supported by convnet's {factory.__name__}: {error}"
        ) from error


def _spatial(importer: Importer, source: str, label: str) -> tuple[int, int, int]:
    value = importer.values[source]
    if len(value.logical) != 3:
        raise ValueError(
            f"{label}: needs images (N, C, H, W), its input has shape {(None, *value.logical)}"
        )
    channels, height, width = value.logical
    return channels, height, width


def _kernel(
    importer: Importer, node: Any, label: str, attributes: dict, transposed: bool
) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """A (transposed) convolution's weights W and bias B (None if absent), checked against
    its kernel_shape and group: returns them, the group count and the output channels."""
    w = importer.weight(node, 1, label, ndim=4)
    b = importer.weight(node, 2, label, ndim=1) if importer.has_input(node, 2) else None
    channels = importer.values[node.input[0]].logical[0]
    if "kernel_shape" in attributes and list(attributes["kernel_shape"]) != list(w.shape[2:]):
        raise ValueError(
            f"{label}: kernel_shape {list(attributes['kernel_shape'])} does not match weights "
            f"of shape {w.shape}"
        )
    groups = int(attributes.get("group", 1))
    # W is (F, C / group, kh, kw) for a convolution, (C, F / group, kh, kw) transposed
    filters = w.shape[1] * groups if transposed else w.shape[0]
    depth = w.shape[0] if transposed else w.shape[1] * groups
    if groups < 1 or depth != channels or channels % groups or filters % groups:
        raise ValueError(
            f"{label}: group={groups} does not fit {channels} input channels and weights of "
            f"shape {w.shape}"
        )
    if b is not None and b.shape != (filters,):
        raise ValueError(f"{label}: bias of shape {b.shape} for {filters} filters")
    return w, b, groups, filters


def _conv(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    channels, height, width = _spatial(importer, source, label)
    w, b, groups, filters = _kernel(importer, node, label, attributes, transposed=False)
    kh, kw = w.shape[2:]
    stride = _pair(attributes.get("strides"), "strides", label, 1)
    dilation = _pair(attributes.get("dilations"), "dilations", label, 1)
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    pads = _explicit_pads(attributes, (height, width), span, stride, label)
    shared, padding = _split_pads(pads, 0.0)
    layer = _built(
        label,
        Conv2d,
        channels,
        filters,
        (kh, kw),
        stride=stride,
        pad=shared,
        dilation=dilation,
        groups=groups,
        bias=b is not None,
    )
    arrays = {"w": w} if b is None else {"w": w, "b": b}
    importer.layer(label, node, source, layer, arrays, padding=padding)


def _conv_transpose(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    channels, height, width = _spatial(importer, source, label)
    w, b, groups, filters = _kernel(importer, node, label, attributes, transposed=True)
    kh, kw = w.shape[2:]
    if _text(attributes.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID", ""):
        raise ValueError(f"{label}: auto_pad={_text(attributes['auto_pad'])} is not supported")
    stride = _pair(attributes.get("strides"), "strides", label, 1)
    dilation = _pair(attributes.get("dilations"), "dilations", label, 1)
    output_pad = tuple(int(p) for p in attributes.get("output_padding", (0, 0)))
    if len(output_pad) != 2 or any(p >= s for p, s in zip(output_pad, stride, strict=True)):
        raise ValueError(
            f"{label}: output_padding {list(output_pad)} at or above the strides "
            f"{list(stride)} is not supported (ONNX Runtime refuses it, older versions "
            "computed it otherwise)"
        )
    pads = _explicit_pads({"pads": attributes.get("pads")}, (height, width), (1, 1), (1, 1), label)
    # the pads both sides share, then a crop of what one side has more
    shared, extra = _split_pads(pads, 0.0)
    cropping = None if extra is None else Pad2d(tuple(-side for side in extra.pad))
    layer = _built(
        label,
        ConvTranspose2d,
        channels,
        filters,
        (kh, kw),
        stride=stride,
        pad=shared,
        output_pad=output_pad,
        dilation=dilation,
        groups=groups,
        bias=b is not None,
    )
    arrays = {"w": w} if b is None else {"w": w, "b": b}
    importer.layer(label, node, source, layer, arrays, cropping=cropping)
    if "output_shape" in attributes:
        expected = importer.values[node.output[0]].shape[1:]
        if tuple(int(d) for d in attributes["output_shape"][-2:]) != expected:
            raise ValueError(
                f"{label}: output_shape {list(attributes['output_shape'])} differs from the "
                f"{expected} its pads give (not supported: convnet takes the pads)"
            )


def _pad(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    if node.input[0] != source:
        raise ValueError(f"{label}: the network's values must be Pad's first input")
    _spatial(importer, source, label)
    mode = _text(attributes.get("mode", "constant"))
    if mode != "constant":
        raise ValueError(f"{label}: Pad mode={mode!r} is not supported (only 'constant')")
    if "pads" in attributes:
        pads, value = [int(p) for p in attributes["pads"]], float(attributes.get("value", 0.0))
        axes = [0, 1, 2, 3]
    else:
        pads = [int(p) for p in np.ravel(importer.static_value(node.input[1], label))]
        value = 0.0
        if importer.has_input(node, 2):
            value = float(np.ravel(importer.weight(node, 2, label))[0])
        axes = [0, 1, 2, 3]
        if importer.has_input(node, 3):
            axes = [int(a) % 4 for a in np.ravel(importer.static_value(node.input[3], label))]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"{label}: pads {pads} for axes {axes}")
    begin, end = (
        dict(zip(axes, pads[: len(axes)], strict=True)),
        dict(zip(axes, pads[len(axes) :], strict=True)),
    )
    if any(begin.get(a, 0) or end.get(a, 0) for a in (0, 1)):
        raise ValueError(f"{label}: padding the batch or channel axis ({pads}) is not supported")
    sides = (begin.get(2, 0), begin.get(3, 0), end.get(2, 0), end.get(3, 0))
    if math.isnan(value) or value == math.inf:
        raise ValueError(f"{label}: padding with {value} is not supported")
    if not any(sides):
        importer.alias(label, node, source)
        return
    importer.layer(label, node, source, Pad2d(sides, value), {})


def _ceil_extra(length: int, window: int, stride: int, begin: int, end: int) -> int:
    """Padding at the end that makes ``ceil_mode``'s output size the floor's: ceil rounds
    up, except for a last window that would start in the end padding (PyTorch's and ONNX
    Runtime's rule)."""
    padded = length + begin + end
    size = -(-(padded - window) // stride) + 1
    if (size - 1) * stride >= length + begin:
        size -= 1
    return max((size - 1) * stride + window - padded, 0)


def _pool_geometry(
    importer: Importer, source: str, label: str, attributes: dict
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int], bool]:
    """Window, strides, pads [top, left, bottom, right] and whether ceil_mode adds to
    the end pads (already in them)."""
    _, height, width = _spatial(importer, source, label)
    kernel = _pair(attributes.get("kernel_shape"), "kernel_shape", label, 0)
    stride = _pair(attributes.get("strides"), "strides", label, 1)
    if _pair(attributes.get("dilations"), "dilations", label, 1) != (1, 1):
        raise ValueError(f"{label}: dilated pooling (dilations) is not supported")
    top, left, bottom, right = _explicit_pads(
        attributes, (height, width), kernel, stride, label, pooling=True
    )
    if kernel[0] > height + top + bottom or kernel[1] > width + left + right:
        raise ValueError(
            f"{label}: the window {kernel} exceeds the padded input (not supported: no "
            "window would lie inside it)"
        )
    ceiling = (0, 0)
    if int(attributes.get("ceil_mode", 0)):
        if _text(attributes.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID", ""):
            raise ValueError(
                f"{label}: ceil_mode=1 with auto_pad={_text(attributes['auto_pad'])} is not "
                "supported (runtimes differ on it)"
            )
        ceiling = (
            _ceil_extra(height, kernel[0], stride[0], top, bottom),
            _ceil_extra(width, kernel[1], stride[1], left, right),
        )
    pads = (top, left, bottom + ceiling[0], right + ceiling[1])
    return kernel, stride, pads, any(ceiling)


def _max_pool(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    kernel, stride, pads, _ = _pool_geometry(importer, source, label, attributes)
    shared, padding = _split_pads(pads, -math.inf)
    layer = _built(label, MaxPool2d, kernel, stride, shared)
    importer.layer(label, node, source, layer, {}, padding=padding)


def _avg_pool(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    kernel, stride, pads, ceiling = _pool_geometry(importer, source, label, attributes)
    if ceiling:
        raise ValueError(
            f"{label}: ceil_mode=1 changes the output size here; convnet's average pooling "
            "does not divide the windows it adds as ONNX does (not supported)"
        )
    count_include_pad = bool(int(attributes.get("count_include_pad", 0)))
    shared, padding = _split_pads(pads, 0.0)
    if padding is not None and not count_include_pad:
        raise ValueError(
            f"{label}: asymmetric pads {list(pads)} with count_include_pad=0 are not supported"
        )
    layer = _built(label, AvgPool2d, kernel, stride, shared, count_include_pad)
    importer.layer(label, node, source, layer, {}, padding=padding)


def _global_avg_pool(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    channels, _, _ = _spatial(importer, source, label)
    importer.layer(label, node, source, GlobalAvgPool(), {}, logical=(channels, 1, 1))


def _global_max_pool(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    _, height, width = _spatial(importer, source, label)
    importer.layer(label, node, source, MaxPool2d((height, width)), {})


def _reduce_mean(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
    value = importer.values[source]
    if "axes" in attributes:
        axes = [int(a) for a in attributes["axes"]]
    elif importer.has_input(node, 1):
        axes = [int(a) for a in np.ravel(importer.static_value(node.input[1], label))]
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
        importer.alias(label, node, source, Value(value.shape, logical))
        return
    importer.layer(label, node, source, GlobalAvgPool(), {}, logical=logical)


def _batch_norm(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
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
    eps = _epsilon(attributes.get("epsilon", 1e-5), importer.dtype)
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
    importer.add_step(label, [source], node.output[0], value, [layer])


def _layer_norm(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = _only_data(label, data)
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
    eps = _epsilon(attributes.get("epsilon", 1e-5), importer.dtype)
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
    source = _only_data(label, data)
    importer.add_step(label, [source], node.output[0], importer.values[source], [ReLU()])


def _flattened(importer: Importer, label: str, node: Any, source: str) -> None:
    """Steps to (N, features): a Flatten unless the modules already give (N, D)."""
    value = importer.values[source]
    flat = Value((math.prod(value.logical),), (math.prod(value.logical),))
    importer.add_step(
        label, [source], node.output[0], flat, [] if len(value.shape) == 1 else [Flatten()]
    )


def _flatten(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    rank = len(importer.values[source].logical) + 1
    axis = int(attributes.get("axis", 1))
    if not -rank <= axis <= rank or axis % rank != 1:
        raise ValueError(
            f"{label}: Flatten with axis={axis} of rank {rank}; convnet keeps the batch axis"
        )
    _flattened(importer, label, node, source)


def _reshape(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
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
    source = _only_data(label, data)
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
    alpha = _exact(attributes.get("alpha", 1.0))
    beta = _exact(attributes.get("beta", 1.0))
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
    source = _only_data(label, data)
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
    source = _only_data(label, data)
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
            "folds one positive factor into a LayerNormalization right after it)"
        )
    try:
        np.broadcast_shapes(factor.shape, (1, *value.logical))
    except ValueError as error:
        raise ValueError(f"{label}: {error}") from error
    step = importer.add_step(label, [source], node.output[0], value, [])
    step.pending_scale = float(first[0])


def _identity(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    importer.alias(label, node, _only_data(label, data))


def _dropout(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    if node.input[0] != source:
        raise ValueError(f"{label}: the network's values must be Dropout's first input")
    if importer.has_input(node, 2):
        training = importer.static_value(node.input[2], label)
        if np.any(training.astype(bool)):
            raise ValueError(f"{label}: training_mode=True (random dropout) is not supported")
    if "ratio" in attributes:
        ratio = _decimal(attributes["ratio"])
    elif importer.has_input(node, 1):
        ratio = float(np.ravel(importer.static_value(node.input[1], label))[0])
    else:
        ratio = 0.5
    if not 0 <= ratio < 1:
        raise ValueError(f"{label}: ratio={ratio} must lie in [0, 1)")
    modules = [Dropout(1 - ratio)] if ratio > 0 else []
    importer.add_step(label, [source], node.output[0], importer.values[source], modules)


def _squeeze(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = _only_data(label, data)
    value = importer.values[source]
    if "axes" in attributes:
        axes = [int(a) for a in attributes["axes"]]
    elif importer.has_input(node, 1):
        axes = [int(a) for a in np.ravel(importer.static_value(node.input[1], label))]
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
        importer.alias(label, node, source, Value(value.shape, logical))
    elif len(logical) == 1:
        _flattened(importer, label, node, source)
    else:
        raise ValueError(f"{label}: Squeeze to {(None, *logical)} is not supported")


Handler = Callable[["Importer", Any, str, dict, list[str]], None]
HANDLERS: dict[str, Handler] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "GlobalAveragePool": _global_avg_pool,
    "GlobalMaxPool": _global_max_pool,
    "ReduceMean": _reduce_mean,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Relu": _relu,
    "Add": _add,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Mul": _mul,
    "Identity": _identity,
    "Dropout": _dropout,
    "Squeeze": _squeeze,
}
