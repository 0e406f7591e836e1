"""The spatial operators convnet imports: Conv, ConvTranspose, Pad, MaxPool, AveragePool,
GlobalAveragePool, GlobalMaxPool and ReduceMean over (H, W), each a function turning one
node into the layers that compute it (a Pad2d in front where ONNX pads unequally).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet.nn import AvgPool2d, Conv2d, ConvTranspose2d, GlobalAvgPool, MaxPool2d, Pad2d
from convnet.onnx.operators import (
    Handler,
    Value,
    axes_attribute,
    built,
    only_data,
    pair_attribute,
    text_attribute,
)

if TYPE_CHECKING:
    from convnet.onnx.graph_reader import Importer


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
    auto_pad = text_attribute(attributes.get("auto_pad", "NOTSET")) or "NOTSET"
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
    source = only_data(label, data)
    channels, height, width = _spatial(importer, source, label)
    w, b, groups, filters = _kernel(importer, node, label, attributes, transposed=False)
    kh, kw = w.shape[2:]
    stride = pair_attribute(attributes.get("strides"), "strides", label, 1)
    dilation = pair_attribute(attributes.get("dilations"), "dilations", label, 1)
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    pads = _explicit_pads(attributes, (height, width), span, stride, label)
    shared, padding = _split_pads(pads, 0.0)
    layer = built(
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


def _output_shape_pads(
    attributes: dict[str, Any],
    pads: tuple[int, int, int, int],
    size: tuple[int, int],
    span: tuple[int, int],
    stride: tuple[int, int],
    output_pad: tuple[int, ...],
    label: str,
) -> tuple[int, int, int, int]:
    """The pads a ConvTranspose's ``output_shape`` implies, as ONNX Runtime places them.

    ONNX Runtime ignores ``pads`` when ``output_shape`` is given: it pads
    ``stride * (size - 1) + output_padding + span - output_shape`` in all, the odd one at
    the start (auto_pad NOTSET or VALID; the SAME ones are refused before).

    Parameters
    ----------
    attributes : dict
        The node's attributes, with ``output_shape``.
    pads : tuple of int
        The pads [top, left, bottom, right] the graph states (zeros if none).
    size, span, stride : tuple of int
        The input's height and width, the dilated kernel's, and the strides.
    output_pad : tuple of int
        The ``output_padding``.
    label : str
        The node's name for error messages.

    Returns
    -------
    tuple of int
        The pads; the graph's own when it states any.

    Raises
    ------
    ValueError
        If ``output_shape`` asks for more than the kernel covers, or the graph states
        pads other than those ONNX Runtime computes from ``output_shape``.
    """
    wanted = [int(d) for d in attributes["output_shape"]][-2:]
    begin, end = [], []
    for length, window, step, extra, target in zip(
        size, span, stride, output_pad, wanted, strict=True
    ):
        total = step * (length - 1) + extra + window - target
        if total < 0:
            raise ValueError(
                f"{label}: output_shape {wanted} is larger than the ConvTranspose covers"
            )
        begin.append(total - total // 2)
        end.append(total // 2)
    implied = (begin[0], begin[1], end[0], end[1])
    stated = attributes.get("pads") is not None and any(int(p) for p in attributes["pads"])
    if stated and tuple(pads) != implied:
        raise ValueError(
            f"{label}: pads {list(pads)} differ from the pads {list(implied)} ONNX Runtime "
            f"computes from output_shape {wanted} (not supported: the two disagree on where "
            "the output is cropped)"
        )
    return implied


def _conv_transpose(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = only_data(label, data)
    channels, height, width = _spatial(importer, source, label)
    w, b, groups, filters = _kernel(importer, node, label, attributes, transposed=True)
    kh, kw = w.shape[2:]
    if text_attribute(attributes.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID", ""):
        raise ValueError(
            f"{label}: auto_pad={text_attribute(attributes['auto_pad'])} is not supported"
        )
    stride = pair_attribute(attributes.get("strides"), "strides", label, 1)
    dilation = pair_attribute(attributes.get("dilations"), "dilations", label, 1)
    output_pad = tuple(int(p) for p in attributes.get("output_padding", (0, 0)))
    if len(output_pad) != 2 or any(p >= s for p, s in zip(output_pad, stride, strict=True)):
        raise ValueError(
            f"{label}: output_padding {list(output_pad)} at or above the strides "
            f"{list(stride)} is not supported (ONNX Runtime refuses it, older versions "
            "computed it otherwise)"
        )
    pads = _explicit_pads({"pads": attributes.get("pads")}, (height, width), (1, 1), (1, 1), label)
    if "output_shape" in attributes:
        spans = tuple((k - 1) * d + 1 for k, d in zip((kh, kw), dilation, strict=True))
        pads = _output_shape_pads(
            attributes, pads, (height, width), spans, stride, output_pad, label
        )
    # the pads both sides share, then a crop of what one side has more
    shared, extra = _split_pads(pads, 0.0)
    cropping = None if extra is None else Pad2d(tuple(-side for side in extra.pad))
    layer = built(
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
    source = only_data(label, data)
    if node.input[0] != source:
        raise ValueError(f"{label}: the network's values must be Pad's first input")
    _spatial(importer, source, label)
    mode = text_attribute(attributes.get("mode", "constant"))
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
    kernel = pair_attribute(attributes.get("kernel_shape"), "kernel_shape", label, 0)
    stride = pair_attribute(attributes.get("strides"), "strides", label, 1)
    if pair_attribute(attributes.get("dilations"), "dilations", label, 1) != (1, 1):
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
        auto_pad = text_attribute(attributes.get("auto_pad", "NOTSET"))
        if auto_pad not in ("NOTSET", "VALID", ""):
            raise ValueError(
                f"{label}: ceil_mode=1 with auto_pad={auto_pad} is not supported (runtimes "
                "differ on it)"
            )
        ceiling = (
            _ceil_extra(height, kernel[0], stride[0], top, bottom),
            _ceil_extra(width, kernel[1], stride[1], left, right),
        )
    pads = (top, left, bottom + ceiling[0], right + ceiling[1])
    return kernel, stride, pads, any(ceiling)


def _max_pool(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = only_data(label, data)
    kernel, stride, pads, _ = _pool_geometry(importer, source, label, attributes)
    shared, padding = _split_pads(pads, -math.inf)
    layer = built(label, MaxPool2d, kernel, stride, shared)
    importer.layer(label, node, source, layer, {}, padding=padding)


def _avg_pool(importer: Importer, node: Any, label: str, attributes: dict, data: list[str]) -> None:
    source = only_data(label, data)
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
    layer = built(label, AvgPool2d, kernel, stride, shared, count_include_pad)
    importer.layer(label, node, source, layer, {}, padding=padding)


def _global_avg_pool(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = only_data(label, data)
    channels, _, _ = _spatial(importer, source, label)
    importer.layer(label, node, source, GlobalAvgPool(), {}, logical=(channels, 1, 1))


def _global_max_pool(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = only_data(label, data)
    _, height, width = _spatial(importer, source, label)
    importer.layer(label, node, source, MaxPool2d((height, width)), {})


def _reduce_mean(
    importer: Importer, node: Any, label: str, attributes: dict, data: list[str]
) -> None:
    source = only_data(label, data)
    value = importer.values[source]
    axes = axes_attribute(importer, node, attributes, label) or []
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


SPATIAL_HANDLERS: dict[str, Handler] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "GlobalAveragePool": _global_avg_pool,
    "GlobalMaxPool": _global_max_pool,
    "ReduceMean": _reduce_mean,
}
