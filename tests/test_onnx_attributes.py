"""Every attribute of the convolution, pooling and padding operators convnet imports, in
random combinations (asymmetric pads, auto_pad, ceil_mode, count_include_pad, groups,
dilations, output_padding), against ONNX Runtime on the same one-node graph: convnet
computes what ONNX Runtime computes, or refuses with a ValueError saying what it does not
support."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_cases import assert_scores_close

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
convnet_onnx = pytest.importorskip("convnet.onnx")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto


def one_node_model(node: Any, shape: tuple[int, ...], weights: dict[str, np.ndarray]) -> Any:
    """``node`` from ``x`` (N, *shape) to ``y``, then Flatten to the output ``scores``."""
    graph = helper.make_graph(
        [node, helper.make_node("Flatten", ["y"], ["scores"], axis=1)],
        "attributes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", None])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def runtime_output(model: Any, x: np.ndarray) -> np.ndarray | None:
    """ONNX Runtime's output, or None where it refuses the graph (an invalid combination)."""
    try:
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run(None, {"x": x})[0]
    except Exception:  # ONNX Runtime's own errors: it has no reference to hold convnet to
        return None


@st.composite
def padding(draw: Any, kernel: tuple[int, int], allow_auto: bool = True) -> dict[str, Any]:
    """Explicit pads (any four, below the window) or an auto_pad mode."""
    mode = draw(st.sampled_from(["pads", "pads", "SAME_UPPER", "SAME_LOWER", "VALID", None]))
    if not allow_auto or mode in ("pads", None):
        if mode is None:
            return {}
        pads = [draw(st.integers(0, k - 1)) for k in (*kernel, *kernel)]
        return {"pads": pads}
    return {"auto_pad": mode}


@st.composite
def cases(draw: Any) -> tuple[Any, np.ndarray]:
    """A one-node model and its input."""
    op = draw(st.sampled_from(["Conv", "MaxPool", "AveragePool", "ConvTranspose", "Pad"]))
    channels = draw(st.sampled_from([1, 2, 4]))
    shape = (channels, draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    strides = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    weights: dict[str, np.ndarray] = {}
    if op in ("Conv", "ConvTranspose"):
        group = draw(st.sampled_from([g for g in (1, 2) if channels % g == 0]))
        filters = group * draw(st.integers(1, 2))
        dilations = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
        w_shape = (
            (filters, channels // group, *kernel)
            if op == "Conv"
            else (channels, filters // group, *kernel)
        )
        weights["W"] = rng.standard_normal(w_shape).astype(np.float32)
        inputs = ["x", "W"]
        if draw(st.booleans()):
            weights["B"] = rng.standard_normal(filters).astype(np.float32)
            inputs.append("B")
        attributes = {"kernel_shape": list(kernel), "strides": strides, "group": group}
        attributes["dilations"] = dilations
        if op == "Conv":
            attributes.update(draw(padding(kernel)))
        else:
            attributes.update(draw(padding(kernel, allow_auto=False)))
            attributes["output_padding"] = [
                draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dilations, strict=True)
            ]
    elif op == "Pad":
        pads = [0, 0, *(draw(st.integers(0, 2)) for _ in range(2)), 0, 0]
        pads += [draw(st.integers(0, 2)) for _ in range(2)]
        weights["pads"] = np.array(pads, dtype=np.int64)
        weights["value"] = np.array(draw(st.sampled_from([0.0, -1.5, -np.inf])), np.float32)
        inputs, attributes = ["x", "pads", "value"], {"mode": "constant"}
    else:
        inputs = ["x"]
        attributes = {"kernel_shape": list(kernel), "strides": strides}
        attributes.update(draw(padding(kernel)))
        attributes["ceil_mode"] = draw(st.integers(0, 1))
        if op == "AveragePool":
            attributes["count_include_pad"] = draw(st.integers(0, 1))
    node = helper.make_node(op, inputs, ["y"], name="node", **attributes)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    return one_node_model(node, shape, weights), x


@settings(max_examples=300)
@given(case=cases())
def test_attributes_match_the_runtime(case: tuple[Any, np.ndarray]) -> None:
    model, x = case
    expected = runtime_output(model, x)
    if expected is None:
        return
    if expected.size == 0:  # a window larger than the padded input: convnet refuses
        with pytest.raises(ValueError, match="node 'node'"):
            convnet_onnx.from_onnx(model)
        return
    try:
        loaded = convnet_onnx.from_onnx(model)
    except ValueError as error:
        message = str(error)
        assert "node 'node'" in message and "not supported" in message, message
        return
    assert_scores_close(loaded.loss(x), expected)


def test_a_torchvision_stem_max_pool_and_ceil_mode_rules() -> None:
    """ceil_mode drops a last window that would start in the end padding (here: a 3x3
    input, window 2, stride 2, pad 1: three windows by rounding up, two by the rule)."""
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], name="node", kernel_shape=[2, 2], strides=[2, 2], pads=[1] * 4
    )
    node.attribute.append(helper.make_attribute("ceil_mode", 1))
    x = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3)
    model = one_node_model(node, (1, 3, 3), {})
    expected = runtime_output(model, x)
    assert expected is not None and expected.shape == (2, 4)
    assert_scores_close(convnet_onnx.from_onnx(model).loss(x), expected)
