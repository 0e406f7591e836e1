"""What the ONNX tests share: random convnet networks (hypothesis), runners for ONNX
Runtime and onnx's reference evaluator, and the comparison the bars of issue 17 set."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from convnet import nn

# ONNX Runtime's (or the reference evaluator's) scores against convnet's, relative to
# the largest score
SCORE_TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def assert_scores_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same shape, equal within the dtype's tolerance relative to the largest finite
    |expected|; NaN and infinities in the same places."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    tol = SCORE_TOLERANCE[np.dtype(expected.dtype)]
    scale = float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * max(scale, 1e-30))


def randomize_statistics(model: Any, rng: np.random.Generator) -> None:
    """Normalizations with scales, shifts and running statistics far from 1 and 0, and
    biases far from 0."""
    for arrays in (model.params, model.buffers()):
        for name, value in arrays.items():
            local = name.rsplit(".", 1)[-1].rstrip("0123456789")
            if local == "running_var":
                arrays[name] = rng.uniform(0.3, 3.0, value.shape)
            elif local in ("running_mean", "beta", "b"):
                arrays[name] = rng.normal(0.0, 0.5, value.shape)
            elif local == "gamma":
                arrays[name] = rng.uniform(0.5, 2.0, value.shape)


def sample_shape(model: Any) -> tuple[int, ...]:
    """One input sample's shape (FullyConnectedNet's input_dim is an int)."""
    shape = model.input_dim
    return (shape,) if isinstance(shape, int) else tuple(shape)


# what ONNX Runtime's CPU provider cannot run in float64
NO_FLOAT64_KERNEL = {"Conv", "ConvTranspose", "AveragePool", "GlobalAveragePool"}


def run_graph(proto: Any, x: np.ndarray) -> np.ndarray:
    """The graph's output for ``x``: ONNX Runtime's CPU provider (default optimizations),
    or onnx's reference evaluator for float64 graphs with operators ONNX Runtime has no
    float64 kernel for (Conv, AveragePool, ...)."""
    operators = {node.op_type for node in proto.graph.node}
    if x.dtype == np.float64 and operators & NO_FLOAT64_KERNEL:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(proto).run(None, {"input": x})[0]
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"input": x})[0]


def _conv(
    draw: Any, channels: int, size: tuple[int, int], shape_rule: str = "any"
) -> tuple[nn.Conv2d, tuple]:
    """A convolution that fits (channels, *size). ``shape_rule``: "any"; "same": the
    output (F, ceil(H / s), ceil(W / s)) of a 1x1 convolution of stride s (odd kernels,
    half-kernel pads), so a projection shortcut fits; "identity": also stride 1 and F = C."""
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0]))
    filters = channels if shape_rule == "identity" else groups * draw(st.integers(1, 3))
    kernel, dilation, pad, stride = [], [], [], []
    for length in size:
        d = draw(st.integers(1, 2))
        if shape_rule == "any":
            k, p, s = draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
            if d * (k - 1) + 1 > length + 2 * p:
                k, d = 1, 1
        else:
            k = draw(st.sampled_from([1, 3]))
            p = d * (k - 1) // 2
            s = 1 if shape_rule == "identity" else draw(st.integers(1, 2))
        kernel.append(k)
        dilation.append(d)
        pad.append(p)
        stride.append(s)
    layer = nn.Conv2d(
        channels,
        filters,
        tuple(kernel),
        stride=tuple(stride),
        pad=tuple(pad),
        dilation=tuple(dilation),
        groups=groups,
        bias=draw(st.booleans()),
    )
    return layer, layer.output_shape((channels, *size))


def _pool(draw: Any, kind: str, shape: tuple[int, int, int], float64: bool) -> nn.Module:
    """A max or average pool (padded or not) that fits ``shape``. In float64 a max pool
    pads its two axes alike: onnx's reference evaluator, the only float64 runtime for
    convolutions, miscomputes MaxPool with unequal pads (onnx 1.23)."""
    _, height, width = shape
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # the smallest pads that let the window fit, up to the largest the layers take
    low = [max(0, (k - size + 1) // 2) for k, size in zip(kernel, (height, width), strict=True)]
    if float64 and kind == "maxpool":
        if max(low) > min(kernel) - 1:
            kernel, pad = (min(kernel[0], height), min(kernel[1], width)), (0, 0)
        else:
            pad = (draw(st.integers(max(low), min(kernel) - 1)),) * 2
    else:
        pad = tuple(draw(st.integers(lo, k - 1)) for lo, k in zip(low, kernel, strict=True))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if kind == "maxpool":
        return nn.MaxPool2d(kernel, stride, pad)
    return nn.AvgPool2d(kernel, stride, pad, count_include_pad=draw(st.booleans()))


def _transpose(draw: Any, channels: int, float64: bool) -> nn.ConvTranspose2d:
    """A transposed convolution; in float64 one group and output padding below the stride
    (onnx 1.23's reference evaluator fails on grouped ConvTranspose and on the unequal
    pads such output padding is exported as)."""
    groups = 1 if float64 else draw(st.sampled_from([g for g in (1, 2) if channels % g == 0]))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = tuple(
        draw(st.integers(0, (d * (k - 1)) // 2)) for k, d in zip(kernel, dilation, strict=True)
    )
    # output padding up to the dilation; at or above the stride only within the pad (what
    # ONNX Runtime can take: see convnet.onnx.graph_writer)
    output_pad = tuple(
        min(draw(st.integers(0, max(s, d) - 1)), s - 1 if float64 else max(s - 1, p))
        for s, d, p in zip(stride, dilation, pad, strict=True)
    )
    return nn.ConvTranspose2d(
        channels,
        groups * draw(st.integers(1, 2)),
        kernel,
        stride,
        pad,
        output_pad,
        dilation,
        groups,
        bias=draw(st.booleans()),
    )


def _block(
    draw: Any, shape: tuple[int, int, int], depth: int, float64: bool
) -> tuple[nn.Module, tuple]:
    """One random image layer (or a residual block of them) for samples of ``shape``."""
    channels, height, width = shape
    kinds = ["conv", "relu", "bn", "maxpool", "avgpool", "dropout", "transpose", "pad"]
    if depth < 2:
        kinds += ["identity", "projection", "pad-maxpool"]
    kind = draw(st.sampled_from(kinds))
    if kind == "conv":
        return _conv(draw, channels, (height, width))
    if kind == "relu":
        return nn.ReLU(), shape
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=draw(st.sampled_from([1e-5, 1e-3]))), shape
    if kind == "dropout":
        return nn.Dropout(draw(st.sampled_from([0.5, 0.9]))), shape
    if kind in ("maxpool", "avgpool"):
        layer = _pool(draw, kind, shape, float64)
        return layer, layer.output_shape(shape)
    if kind in ("transpose", "pad"):
        sides = tuple(draw(st.integers(0, 2)) for _ in range(4))
        value = draw(st.sampled_from([0.0, 0.5]))
        layer = (
            _transpose(draw, channels, float64) if kind == "transpose" else nn.Pad2d(sides, value)
        )
        if min(layer.output_shape(shape)[1:]) > 12:  # keep the graphs small
            return nn.ReLU(), shape
        return layer, layer.output_shape(shape)
    if kind == "pad-maxpool":  # -inf padding in front of a max pool (ceil_mode's import)
        padding = nn.Pad2d(tuple(draw(st.integers(0, 1)) for _ in range(4)), -np.inf)
        pool = nn.MaxPool2d(2, 2) if min(padding.output_shape(shape)[1:]) >= 2 else nn.ReLU()
        return nn.Sequential(padding, pool), pool.output_shape(padding.output_shape(shape))
    first, body_shape = _conv(
        draw, channels, (height, width), kind if kind == "identity" else "same"
    )
    body_layers: list[nn.Module] = [first]
    for _ in range(draw(st.integers(0, 2))):
        inner, inner_shape = _block(draw, body_shape, depth + 1, float64)
        if inner_shape == body_shape:
            body_layers.append(inner)
    body = body_layers[0] if len(body_layers) == 1 else nn.Sequential(*body_layers)
    if kind == "identity" and draw(st.booleans()):
        return nn.Residual(body), shape
    shortcut: nn.Module = nn.Conv2d(channels, body_shape[0], 1, stride=first.stride)
    if draw(st.booleans()):
        shortcut = nn.Sequential(shortcut, nn.BatchNorm2d(body_shape[0]))
    return nn.Residual(body, shortcut), body_shape


@st.composite
def networks(draw: Any) -> nn.Classifier:
    """A random classifier of images or of vectors, every layer kind and attribute."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    modules: list[nn.Module] = []
    if draw(st.booleans()):
        shape: tuple[int, ...] = (
            draw(st.integers(1, 4)),
            draw(st.integers(1, 9)),
            draw(st.integers(1, 9)),
        )
        input_dim = shape
        for _ in range(draw(st.integers(0, 4))):
            module, shape = _block(draw, shape, 0, dtype == np.float64)
            modules.append(module)
        if draw(st.booleans()):
            modules.append(nn.GlobalAvgPool())
            shape = (shape[0],)
        elif draw(st.booleans()):
            modules.append(nn.Flatten())
            shape = (int(np.prod(shape)),)
    else:
        input_dim = shape = (draw(st.integers(1, 12)),)
    features = int(np.prod(shape))
    for _ in range(draw(st.integers(0, 2))):
        width = draw(st.integers(1, 8))
        modules.append(nn.Linear(features, width))
        features = width
        # a normalization after the linear layer, as FullyConnectedNet has it (a layer norm
        # after a ReLU normalizes near-equal values: ONNX Runtime 1.25's float32 layer norm
        # then differs by up to 5e-4 of the largest score, 1.32's does not)
        norm = draw(st.sampled_from([None, "batch", "layer"]))
        if norm == "batch":
            modules.append(nn.BatchNorm1d(width))
        elif norm == "layer":
            modules.append(nn.LayerNorm(width, eps=draw(st.sampled_from([1e-5, 1e-3]))))
        modules.append(nn.ReLU())
        if draw(st.booleans()):
            modules.append(nn.Dropout(0.5))
    modules.append(nn.Linear(features, draw(st.integers(1, 5))))
    model = nn.Classifier(
        nn.Sequential(*modules), input_dim, dtype=dtype, seed=draw(st.integers(0, 99))
    )
    randomize_statistics(model, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    return model
