"""What convnet cannot import is one clear ValueError naming the node and what is
unsupported; files that are not ONNX or were tampered with are refused, and loading
costs memory in proportion to the file, never to what it claims."""

from __future__ import annotations

import os
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_cases import assert_scores_close

onnx = pytest.importorskip("onnx")
convnet_onnx = pytest.importorskip("convnet.onnx")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto


def make_model(
    nodes: list[Any],
    initializers: dict[str, np.ndarray] | None = None,
    input_shape: tuple[Any, ...] = ("N", 2, 4, 4),
    output: str = "y",
    output_shape: tuple[Any, ...] = ("N", 3),
    opset: int = 17,
    element_type: int = TensorProto.FLOAT,
) -> Any:
    """A model of ``nodes`` with input ``x`` and the one output ``output``."""
    tensors = [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", element_type, list(input_shape))],
        [helper.make_tensor_value_info(output, element_type, list(output_shape))],
        tensors,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def dense(features: int = 32, classes: int = 3) -> tuple[list[Any], dict[str, np.ndarray]]:
    """Flatten and a Gemm to ``classes`` scores, from ``h`` to ``y``."""
    nodes = [
        helper.make_node("Flatten", ["h"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "W", "B"], ["y"], name="fc", transB=1),
    ]
    rng = np.random.default_rng(0)
    weights = {
        "W": rng.standard_normal((classes, features)).astype(np.float32),
        "B": rng.standard_normal(classes).astype(np.float32),
    }
    return nodes, weights


def image_model(node: Any, **initializers: np.ndarray) -> Any:
    """``node`` from ``x`` (N, 2, 4, 4) to ``h`` (N, 2, 4, 4), then the dense head."""
    nodes, weights = dense()
    return make_model([node, *nodes], {**initializers, **weights})


def refuses(model: Any, *fragments: str, **options: Any) -> str:
    with pytest.raises(ValueError) as caught:
        convnet_onnx.from_onnx(model, **options)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_working_hand_made_graph(rng: np.random.Generator) -> None:
    model = convnet_onnx.from_onnx(image_model(helper.make_node("Relu", ["x"], ["h"])))
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    _, weights = dense()
    expected = np.maximum(x, 0).reshape(3, -1) @ weights["W"].T + weights["B"]
    assert_scores_close(model.loss(x), expected)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "Softmax", "LeakyRelu"])
def test_unsupported_operators_are_named(op: str) -> None:
    node = helper.make_node(op, ["x"], ["h"], name="mystery")
    refuses(image_model(node), "node 'mystery'", f"operator {op} is not supported")


def test_lstm_is_refused() -> None:
    w = np.zeros((1, 8, 3), np.float32)
    r = np.zeros((1, 8, 2), np.float32)
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="rnn", hidden_size=2)
    model = make_model([node], {"W": w, "R": r}, input_shape=(5, "N", 3))
    refuses(model, "node 'rnn'", "LSTM")


@pytest.mark.parametrize(
    ("op", "attributes", "fragment"),
    [
        ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2]}, "dilations"),
        ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, None),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, "ceil_mode"),
        (
            "AveragePool",
            {"kernel_shape": [2, 2], "pads": [0, 0, 1, 1], "count_include_pad": 0},
            "asymmetric pads [0, 0, 1, 1] with count_include_pad=0",
        ),
        (
            "MaxPool",
            {"kernel_shape": [1, 1], "strides": [4, 4], "auto_pad": "SAME_UPPER"},
            "stride",
        ),
    ],
)
def test_pooling_attributes(op: str, attributes: dict, fragment: str | None) -> None:
    pool = helper.make_node(op, ["x"], ["p"], name="pool", **attributes)
    relu = helper.make_node("Relu", ["p"], ["h"])
    if fragment is None:  # ceil_mode that does not change the output size is accepted
        nodes, weights = dense(features=2 * 2 * 2)
        model = convnet_onnx.from_onnx(make_model([pool, relu, *nodes], weights))
        assert model.input_dim == (2, 4, 4)
        return
    nodes, weights = dense(features=8)
    refuses(make_model([pool, relu, *nodes], weights), "node 'pool'", fragment)


def test_gemm_transa_is_refused() -> None:
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transA=1)
    model = make_model([node], {"W": np.zeros((4, 3), np.float32)}, input_shape=("N", 4))
    refuses(model, "node 'fc'", "transA")


def test_weights_computed_from_the_input_are_refused() -> None:
    node = helper.make_node("Conv", ["x", "x"], ["h"], name="self_conv")
    refuses(image_model(node), "node 'self_conv'", "constant")


def test_reshape_other_than_flatten_is_refused() -> None:
    shape = np.array([0, 8, 4], dtype=np.int64)
    node = helper.make_node("Reshape", ["x", "s"], ["h"], name="fold")
    head = helper.make_node("Flatten", ["h"], ["y"])
    model = make_model([node, head], {"s": shape})
    refuses(model, "node 'fold'", "Reshape to [N, 8, 4]")


def test_an_add_that_is_no_bias_is_refused() -> None:
    offset = np.ones((1, 2, 4, 4), np.float32)
    node = helper.make_node("Add", ["x", "c"], ["h"], name="shift")
    refuses(image_model(node, c=offset), "node 'shift'", "bias")


def test_branches_other_than_residual_are_refused() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("Relu", ["x"], ["b"], name="b"),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "b"], ["h"]),
    ]
    head, weights = dense()
    refuses(make_model(nodes + head, weights), "feeds 2 uses", "residual")


def test_three_branches_summed_two_by_two_are_nested_residuals(
    rng: np.random.Generator,
) -> None:
    """``(a(x) + b(x)) + c(x)`` reads as a Residual whose body is a Residual."""
    onnxruntime = pytest.importorskip("onnxruntime")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("MaxPool", ["x"], ["b"], name="b", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["x"], ["c"], name="c"),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "c"], ["h"]),
    ]
    head, weights = dense()
    model = make_model(nodes + head, weights)
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    assert_scores_close(convnet_onnx.from_onnx(model).loss(x), session.run(None, {"x": x})[0])


def test_two_inputs_or_outputs_are_refused() -> None:
    nodes, weights = dense()
    model = make_model([helper.make_node("Relu", ["x"], ["h"]), *nodes], weights)
    model.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3]))
    refuses(model, "one input")
    model = make_model([helper.make_node("Relu", ["x"], ["h"]), *nodes], weights)
    model.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 2]))
    refuses(model, "one output")


def test_old_opsets_and_other_domains_are_refused() -> None:
    nodes, weights = dense()
    refuses(
        make_model([helper.make_node("Relu", ["x"], ["h"]), *nodes], weights, opset=6), "opset 6"
    )
    model = make_model([helper.make_node("Relu", ["x"], ["h"]), *nodes], weights)
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    refuses(model, "domain 'com.example'")


def test_symbolic_sample_sizes_need_input_dim(rng: np.random.Generator) -> None:
    nodes, weights = dense()
    model = make_model(
        [helper.make_node("Relu", ["x"], ["h"]), *nodes], weights, input_shape=("N", 2, "H", "W")
    )
    refuses(model, "input_dim")
    loaded = convnet_onnx.from_onnx(model, input_dim=(2, 4, 4))
    assert loaded.input_dim == (2, 4, 4)
    refuses(model, "does not fit", input_dim=(3, 4, 4))


def test_float16_graphs_are_refused() -> None:
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        input_shape=("N", 3),
        element_type=TensorProto.FLOAT16,
    )
    refuses(model, "float or double")


# -- files that are not ONNX, or were tampered with
def load_bytes(tmp_path: Any, data: bytes) -> str:
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(ValueError) as caught:
        convnet_onnx.load(path)
    return str(caught.value)


@pytest.mark.parametrize(
    "data", [b"", b"not an onnx file at all\n", os.urandom(1000), b"\x08\x07"], ids=repr
)
def test_not_onnx(tmp_path: Any, data: bytes) -> None:
    assert "not an ONNX model" in load_bytes(tmp_path, data)


def test_truncated_file(tmp_path: Any) -> None:
    data = image_model(helper.make_node("Relu", ["x"], ["h"])).SerializeToString()
    message = load_bytes(tmp_path, data[: len(data) // 2])
    assert "ONNX model" in message


def test_missing_file(tmp_path: Any) -> None:
    with pytest.raises(FileNotFoundError):
        convnet_onnx.load(tmp_path / "absent.onnx")


def tampered(dims: list[int]) -> Any:
    model = image_model(helper.make_node("Relu", ["x"], ["h"]))
    weight = next(t for t in model.graph.initializer if t.name == "W")
    del weight.dims[:]
    weight.dims.extend(dims)
    return model


@pytest.mark.parametrize("dims", [[10**6, 10**6], [3, 33], [2**40, 2**40], [0, 32]])
def test_tampered_sizes_are_refused_without_allocating(dims: list[int]) -> None:
    model = tampered(dims)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as caught:
            convnet_onnx.from_onnx(model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    assert "'W'" in str(caught.value) or "W" in str(caught.value)


def test_typed_data_of_the_wrong_length_is_refused() -> None:
    model = image_model(helper.make_node("Relu", ["x"], ["h"]))
    weight = next(t for t in model.graph.initializer if t.name == "W")
    values = numpy_helper.to_array(weight).ravel()[:-1]
    weight.ClearField("raw_data")
    weight.float_data.extend(values.tolist())
    refuses(model, "W", "95")


def test_folding_cannot_blow_up(tmp_path: Any) -> None:
    nodes = [helper.make_node("Shape", ["x"], ["s0"])]
    for step in range(60):  # each Concat doubles: 4 * 2**60 entries if nothing stopped it
        nodes.append(helper.make_node("Concat", [f"s{step}", f"s{step}"], [f"s{step + 1}"], axis=0))
    nodes.append(helper.make_node("Reshape", ["x", "s60"], ["h"], name="reshape"))
    head, weights = dense()
    message = refuses(make_model(nodes + head, weights), "elements")
    assert "Concat" in message


# -- external data
def external_model(tmp_path: Any, location: str, **entries: str) -> Any:
    model = image_model(helper.make_node("Relu", ["x"], ["h"]))
    weight = next(t for t in model.graph.initializer if t.name == "W")
    data = weight.raw_data
    (tmp_path / "weights.bin").write_bytes(data)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, **entries}.items():
        weight.external_data.add(key=key, value=value)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_the_folder_loads(tmp_path: Any, rng: np.random.Generator) -> None:
    model = convnet_onnx.load(external_model(tmp_path, "weights.bin"))
    plain = convnet_onnx.from_onnx(image_model(helper.make_node("Relu", ["x"], ["h"])))
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.loss(x), plain.loss(x))


@pytest.mark.parametrize(
    ("location", "entries", "fragment"),
    [
        ("../weights.bin", {}, "inside"),
        ("/etc/passwd", {}, "inside"),
        ("absent.bin", {}, "not a regular file"),
        ("weights.bin", {"offset": "8"}, "has 384 bytes"),
        ("weights.bin", {"length": "10"}, "needs 384 bytes"),
        ("weights.bin", {"offset": "x"}, "malformed"),
    ],
)
def test_external_data_is_bounded(
    tmp_path: Any, location: str, entries: dict, fragment: str
) -> None:
    path = external_model(tmp_path, location, **entries)
    with pytest.raises(ValueError, match="initializer 'W'") as caught:
        convnet_onnx.load(path)
    assert fragment in str(caught.value)


def test_external_data_through_a_symlink_out_of_the_folder(tmp_path: Any) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    path = external_model(tmp_path, "weights.bin")
    (inner / "model.onnx").write_bytes(path.read_bytes())
    (inner / "weights.bin").symlink_to(tmp_path / "weights.bin")
    with pytest.raises(ValueError, match="not a regular file inside"):
        convnet_onnx.load(inner / "model.onnx")


def test_in_memory_models_have_no_external_data(tmp_path: Any) -> None:
    model = onnx.load(external_model(tmp_path, "weights.bin"), load_external_data=False)
    refuses(model, "external data")


# -- tampering anywhere: refused, or computed exactly as ONNX Runtime does
MUTATED_VALUES = [0, 1, -1, 2, 3, -7, 2**31, 2**40, 10**6]
OPERATORS = ["Relu", "Conv", "Add", "Flatten", "Reshape", "Gemm", "MaxPool", "AveragePool", "Pad"]


def _base_models() -> list[Any]:
    from test_nn_padding_layers import padded_net

    from convnet import nn
    from convnet.models import resnet, vgg

    return [
        convnet_onnx.to_onnx(resnet((2, 6, 6), seed=0)),
        convnet_onnx.to_onnx(vgg((1, 8, 8), seed=0)),
        convnet_onnx.to_onnx(nn.Classifier(padded_net(), (2, 5, 4), seed=0)),
    ]


BASES = _base_models()


@st.composite
def tampered_models(draw: Any) -> Any:
    """An exported model with one to three fields changed: an attribute, an operator, an
    input, a dimension, a byte of data, an element type, the input's shape; or a node gone."""
    model = onnx.ModelProto()
    model.CopyFrom(draw(st.sampled_from(BASES)))
    graph = model.graph
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 7))
        node = graph.node[draw(st.integers(0, len(graph.node) - 1))]
        tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        if kind == 0 and node.attribute:
            attribute = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
            if attribute.type == onnx.AttributeProto.INTS and attribute.ints:
                position = draw(st.integers(0, len(attribute.ints) - 1))
                attribute.ints[position] = draw(st.sampled_from(MUTATED_VALUES))
            elif attribute.type == onnx.AttributeProto.INT:
                attribute.i = draw(st.sampled_from(MUTATED_VALUES))
            elif attribute.type == onnx.AttributeProto.FLOAT:
                attribute.f = draw(st.sampled_from([0.0, -1.0, 1e30, float("nan"), 2.0]))
        elif kind == 1:
            node.op_type = draw(st.sampled_from(OPERATORS))
        elif kind == 2 and node.input:
            names = [name for other in graph.node for name in other.output] + ["input"]
            node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(names))
        elif kind == 3 and tensor.dims:
            tensor.dims[draw(st.integers(0, len(tensor.dims) - 1))] = draw(
                st.sampled_from(MUTATED_VALUES)
            )
        elif kind == 4 and len(graph.node) > 1:
            del graph.node[draw(st.integers(0, len(graph.node) - 1))]
        elif kind == 5 and tensor.raw_data:
            data = bytearray(tensor.raw_data)
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            tensor.raw_data = bytes(data)
        elif kind == 6:
            tensor.data_type = draw(st.sampled_from([1, 2, 6, 7, 9, 10, 11]))
        elif kind == 7:
            dims = graph.input[0].type.tensor_type.shape.dim
            dims[draw(st.integers(1, len(dims) - 1))].dim_value = draw(
                st.sampled_from([1, 2, 3, 7, 100000])
            )
    return model


@given(model=tampered_models())
@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
def test_tampered_graphs_are_refused_or_computed_right(model: Any) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    try:
        loaded = convnet_onnx.from_onnx(model)
    except ValueError:
        return
    if np.prod(loaded.input_dim) > 10**5:
        return
    x = np.random.default_rng(0).standard_normal((2, *loaded.input_dim)).astype(np.float32)
    try:
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        expected = session.run(None, {"input": x})[0]
    except Exception:  # a graph ONNX Runtime refuses: no reference to hold it to
        return
    with np.errstate(all="ignore"):  # tampered weights may be NaN or huge
        scores = loaded.loss(x)
    assert_scores_close(scores, expected)


def test_arithmetic_inside_the_network_is_refused() -> None:
    """Mul and Sub are preprocessing on the graph input (see test_onnx_export) or refused."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sub", ["r", "c"], ["h"], name="shift"),
    ]
    head, weights = dense()
    offset = np.ones((2, 4, 4), np.float32)
    refuses(make_model(nodes + head, {**weights, "c": offset}), "node 'shift'", "Sub")
    nodes[1] = helper.make_node("Mul", ["r", "c"], ["h"], name="scale")
    scalar = np.array(2.0, np.float32)
    refuses(make_model(nodes + head, {**weights, "c": scalar}), "node 'scale'", "multiplies")


@pytest.mark.parametrize("op_type", ["Mul", "Sub", "Mul then Sub"])
def test_preprocessing_on_one_branch_is_refused(op_type: str) -> None:
    """Mul or Sub on the input is not preprocessing when the raw input feeds a branch too."""
    rng = np.random.default_rng(0)
    constants = {
        "s": np.array(2.0, np.float32),
        "m": rng.standard_normal((2, 4, 4)).astype(np.float32),
        "wa": rng.standard_normal((2, 2, 1, 1)).astype(np.float32),
        "wb": rng.standard_normal((2, 2, 1, 1)).astype(np.float32),
    }
    if op_type == "Mul then Sub":  # the scaled input feeds the Sub and a branch
        front = [
            helper.make_node("Mul", ["x", "s"], ["xs"], name="scale"),
            helper.make_node("Sub", ["xs", "m"], ["p"], name="shift"),
        ]
        branch, expected = "xs", "node 'shift'"
    else:
        name, constant = ("scale", "s") if op_type == "Mul" else ("shift", "m")
        front = [helper.make_node(op_type, ["x", constant], ["p"], name=name)]
        branch, expected = "x", f"node '{name}'"
    nodes = [
        *front,
        helper.make_node("Conv", ["p", "wa"], ["a"], name="conv_a"),
        helper.make_node("Conv", [branch, "wb"], ["b"], name="conv_b"),
        helper.make_node("Add", ["a", "b"], ["h"], name="join"),
    ]
    head, weights = dense()
    refuses(make_model(nodes + head, {**weights, **constants}), expected, "sole consumer")


@pytest.mark.parametrize("pads", [None, [1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]])
def test_conv_transpose_output_shape_places_the_crop_as_onnx_runtime(
    pads: list[int] | None, rng: np.random.Generator
) -> None:
    """With ``output_shape`` ONNX Runtime recomputes the pads, the odd one at the start."""
    onnxruntime = pytest.importorskip("onnxruntime")
    options = {} if pads is None else {"pads": pads}
    nodes = [
        helper.make_node(
            "ConvTranspose",
            ["x", "k"],
            ["h"],
            name="up",
            strides=[2, 2],
            output_shape=[8, 8],
            **options,
        )
    ]
    head, weights = dense(features=3 * 8 * 8)
    kernel = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    model = make_model(nodes + head, {**weights, "k": kernel})
    if pads is not None and pads != [1, 1, 0, 0]:
        refuses(model, "node 'up'", "output_shape")
        return
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    expected = session.run(None, {"x": x})[0]
    assert_scores_close(convnet_onnx.from_onnx(model).loss(x), expected)


def test_arithmetic_on_the_batch_size_is_refused() -> None:
    """Shape entries other than the batch size fold (see test_onnx_torch); it does not."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Mul", ["s", "two"], ["t"], name="double"),
        helper.make_node("Reshape", ["x", "t"], ["h"]),
    ]
    head, weights = dense()
    two = np.array([2, 1, 1, 1], np.int64)
    refuses(make_model(nodes + head, {**weights, "two": two}), "node 'double'", "batch size")
