"""The benchmark runs and prints every table (no timing asserted); its per-layer timers
measure what each layer's methods take and put everything back; its precision figures are
the errors computed directly."""

from __future__ import annotations

import time

import numpy as np
import pytest

import convnet
from convnet import bench, nn
from convnet._blas_core import cpu_name
from convnet.bench.layer_times import (
    STEP_ROW,
    SUM_ROW,
    LayerClock,
    convnet_timers,
    layer_profiles,
    named_layers,
)
from convnet.bench.precision import forced_conv_algorithm, gradient_error, precision_errors
from convnet.bench.torch_reference import torch_gradients, torch_network
from convnet.bench.train_step import (
    CONVNET,
    TORCH_STEPS,
    TRAIN_STEPS,
    ConvnetStep,
    TorchStep,
    train_step_candidates,
)
from convnet.models import resnet

FAST = ["--repeats", "1", "--pause", "0", "--cold-pause", "0", "--steady-calls", "1"]
QUICK = [*FAST, "--memory", "", "--naive", "none", "--no-torch"]
TINY_STEPS = ["--step-calls", "1", "--layer-calls", "1"]


def torch_or_none(with_torch: bool):
    """torch for the with-torch runs (skipped when it is absent), else None."""
    return pytest.importorskip("torch") if with_torch else None


def bench_output(argv: list[str], with_torch: bool, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``convnet bench`` prints for tiny steps, with PyTorch or ``--no-torch``."""
    torch_or_none(with_torch)
    argv = [*FAST, *TINY_STEPS, *argv, *([] if with_torch else ["--no-torch"])]
    assert bench.main(argv) == 0
    return capsys.readouterr().out


def table_rows(out: str, first_header_cell: str) -> tuple[list[str], list[list[str]]]:
    """The header cells of the table(s) whose header starts with ``first_header_cell``, and
    their rows' cells (each row as long as the header)."""
    header: list[str] = []
    rows: list[list[str]] = []
    inside = False
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if not line.startswith("|"):
            inside = False
        elif cells[0] == first_header_cell:
            header, inside = cells, True
        elif inside and not line.startswith("|---"):
            assert len(cells) == len(header), line
            rows.append(cells)
    return header, rows


def test_pool_table_prints_steady_and_cold_for_each_dtype(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*QUICK, "--only", "pool", "--pool", "p1,p3", "--steady-calls", "2"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "steady: fast" in out and "cold: fast" in out
    rows = [line for line in out.splitlines() if line.startswith("| p")]
    assert len(rows) == 4
    assert {row.split("|")[2].strip() for row in rows} == {"float32", "float64"}
    assert "OpenBLAS core" in out


def test_every_layer_table_prints_both_regimes_and_the_algorithm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        *QUICK[:-1],
        "--only",
        "conv,transpose,avg-pool",
        "--conv",
        "a,c,dw",
        "--transpose",
        "t1",
        "--avg-pool",
        "ap1",
        "--dtypes",
        "float32",
    ]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    rows = {cells[0]: cells for cells in table_rows(out, "case")[1]}
    assert rows["a"][3] == "im2col"
    assert rows["c"][3].startswith("winograd F(")
    assert rows["dw"][3] == "direct"
    assert {"a", "c", "dw", "t1", "ap1 (100, 3, 32, 32)"} <= set(rows)
    headers = [line for line in out.splitlines() if line.startswith("| ") and "cold:" in line]
    assert len(headers) == 3


@pytest.mark.parametrize("with_torch", [False, True])
def test_training_step_table_has_every_network_in_both_layouts(
    with_torch: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--only", "train-step", "--train-step", "3layer:2,resnet:2,resnet-wide:2,vgg:2"]
    out = bench_output(argv, with_torch, capsys)
    assert f"; {cpu_name()};" in out  # the CPU named with the table
    header, rows = table_rows(out, "training step")
    assert header.count("PyTorch channels_last ms") == 2
    assert header.count("images/s vs faster PyTorch") == 2
    labels = {name: f"{network.label} (2,3,32,32)" for name, network in TRAIN_STEPS.items()}
    assert [(cells[0], cells[1]) for cells in rows] == [
        (labels["3layer"], "float32"),
        (labels["3layer"], "float64"),
        (labels["resnet"], "float32"),
        (labels["resnet"], "float64"),
        (labels["resnet-wide"], "float32"),
        (labels["vgg"], "float32"),
    ]
    for cells in rows:
        assert float(cells[3]) > 0 and float(cells[8]) > 0
        torch_cells = [cells[index] for index in (4, 5, 7, 9, 10, 12)]
        assert all((cell != "-") == with_torch for cell in torch_cells), cells


@pytest.mark.parametrize("with_torch", [False, True])
def test_layer_table_has_every_layer_in_forward_order_and_the_totals(
    with_torch: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    out = bench_output(["--only", "layers", "--layers", "resnet:2,vgg:2"], with_torch, capsys)
    for network in ("resnet", "vgg"):
        assert f"goes: {TRAIN_STEPS[network].label} (2,3,32,32)" in out
        net = TRAIN_STEPS[network].build(np.dtype(np.float32)).net
        table = out.split(f"goes: {TRAIN_STEPS[network].label}")[1].split("without timers")[0]
        header, rows = table_rows(table, "layer")
        assert len(header) == 9
        expected = [(name, type(layer).__name__) for name, layer in named_layers(net)]
        assert [(cells[0], cells[1]) for cells in rows[: len(expected)]] == expected
        assert [cells[0] for cells in rows[len(expected) :]] == [f"*{SUM_ROW}*", f"*{STEP_ROW}*"]
        for cells in rows:
            assert all(cell != "-" for cell in cells[2:4])
            assert all((cell != "-") == with_torch for cell in cells[4:])
        layers, step = rows[-2], rows[-1]
        assert float(step[2]) + float(step[3]) >= float(layers[2]) + float(layers[3])


@pytest.mark.parametrize("with_torch", [False, True])
def test_precision_table_has_the_default_im2col_and_torch_rows(
    with_torch: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    out = bench_output(["--only", "precision", "--precision", "resnet:2"], with_torch, capsys)
    header, rows = table_rows(out, "library")
    assert header[2:] == ["steady ms", "loss error", "gradient error"]
    expected = [("convnet", "default (auto)"), ("convnet", "all im2col")]
    expected += [("PyTorch NCHW", "PyTorch's")] if with_torch else []
    assert [(cells[0], cells[1]) for cells in rows] == expected
    for cells in rows:
        assert 0 <= float(cells[3]) < 1e-3 and 0 < float(cells[4]) < 0.1


def test_the_options_select_and_check_the_networks(capsys: pytest.CaptureFixture[str]) -> None:
    parse = bench.build_parser().parse_args
    assert parse([]).train_steps == [
        ("3layer", 50),
        ("resnet", 64),
        ("resnet-wide", 64),
        ("vgg", 64),
    ]
    assert parse([]).layer_steps == [("resnet", 64), ("vgg", 64)]
    assert parse([]).precision_steps == [("resnet", 64)]
    assert parse(["--layers", "vgg:8,3layer"]).layer_steps == [("vgg", 8), ("3layer", 50)]
    for argv in (
        ["--train-step", "alexnet"],
        ["--layers", "resnet:0"],
        ["--layers", "resnet:x"],
        ["--precision", "vgg"],  # dropout: the libraries' masks differ
        ["--only", "everything"],
    ):
        with pytest.raises(SystemExit):
            parse(argv)
    with pytest.raises(SystemExit):
        bench.main(["--step-calls", "0"])
    assert "--step-calls must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("network", list(TRAIN_STEPS))
def test_the_benchmarked_training_steps_run_in_both_layouts(network: str) -> None:
    try:
        import torch
    except ImportError:
        torch = None
    candidates = train_step_candidates(
        network, 2, np.dtype(np.float32), torch, np.random.default_rng(0)
    )
    assert set(candidates) == ({CONVNET, *TORCH_STEPS} if torch else {CONVNET})
    before = {name: value.copy() for name, value in candidates[CONVNET].model.params.items()}
    for step in candidates.values():
        step()
    after = candidates[CONVNET].model.params
    assert any(not np.array_equal(before[name], after[name]) for name in before)  # updated
    if torch:
        channels_last = candidates["torch channels_last"]
        assert channels_last.images.is_contiguous(memory_format=torch.channels_last)
        convolutions = [m for m in channels_last.net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convolutions[-1].weight.is_contiguous(memory_format=torch.channels_last)
        assert candidates["torch NCHW"].images.is_contiguous()


def test_layer_clock_counts_nested_and_overlapping_time_once() -> None:
    ticks = iter(range(100))
    clock = LayerClock(timer=lambda: float(next(ticks)))
    clock.begin("bn", "forward")  # 0
    clock.begin("relu", "forward")  # 1: run inside bn's method (a fused pass)
    clock.end("relu", "forward")  # 2
    clock.end("bn", "forward")  # 3
    clock.begin("conv", "backward")  # 4
    clock.end("conv", "backward")  # 5
    clock.end("conv", "backward")  # 6: a later end extends it (a parameter's hook)
    clock.end("fc", "backward")  # 7: never begun, ignored
    assert clock.seconds("bn", "forward") == 3
    assert clock.seconds("relu", "forward") == 1
    assert clock.seconds("conv", "backward") == 2
    assert clock.seconds("fc", "backward") is None
    assert clock.covered_seconds("forward") == 3  # not 3 + 1
    assert clock.covered_seconds("backward") == 2
    clock.reset()
    assert clock.seconds("bn", "forward") is None and clock.covered_seconds("forward") == 0


def tiny_resnet(dtype=np.float32):
    return resnet((3, 8, 8), widths=(4, 8), dtype=dtype, seed=0)


def tiny_step(model) -> ConvnetStep:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 3, 8, 8)).astype(model.dtype)
    return ConvnetStep(model, X, rng.integers(0, 10, size=2))


def test_layer_times_are_what_each_layer_method_takes_even_when_one_runs_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch norm that runs the next ReLU itself (as a fused pass would) holds the
    ReLU's time; the ReLU then does nothing; the sum counts the time once."""
    step = tiny_step(tiny_resnet())
    net = step.model.net
    stem_bn, stem_relu = net["stem"]["bn"], net["stem"]["relu"]
    relu_forward = type(stem_relu).forward

    def slow_relu(self, x):
        time.sleep(0.05)
        return relu_forward(self, x)

    def bn_fused_with_relu(x):
        return stem_relu.forward(nn.BatchNorm2d.forward(stem_bn, x))

    stem_conv = net["stem"]["conv"]
    monkeypatch.setattr(stem_relu, "forward", slow_relu.__get__(stem_relu))
    monkeypatch.setattr(stem_bn, "forward", bn_fused_with_relu)
    monkeypatch.setattr(net["stem"], "forward", lambda x: stem_bn.forward(stem_conv.forward(x)))
    layers = named_layers(net)
    profile = layer_profiles({"convnet": step}, layers, repeats=1, pause=0, calls=1)["convnet"]
    assert profile[("stem.relu", "forward")] >= 50
    assert profile[("stem.bn", "forward")] >= profile[("stem.relu", "forward")]
    others = sum(
        profile[(name, "forward")] for name, _ in layers if name not in ("stem.bn", "stem.relu")
    )
    covered = profile[(SUM_ROW, "forward")]
    assert covered == pytest.approx(profile[("stem.bn", "forward")] + others, rel=1e-6)
    assert profile[(STEP_ROW, "forward")] >= covered
    assert profile[("fc", "backward")] is not None


def test_a_layer_whose_methods_are_not_called_has_no_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    step = tiny_step(tiny_resnet())
    stem = step.model.net["stem"]
    conv, bn = stem["conv"], stem["bn"]

    def backward(dout, *, compute_dx=True):
        return conv.backward(bn.backward(dout), compute_dx=compute_dx)

    monkeypatch.setattr(stem, "forward", lambda x: bn.forward(conv.forward(x)))
    monkeypatch.setattr(stem, "backward", backward)  # the stem's ReLU left out
    profile = layer_profiles({"convnet": step}, named_layers(step.model.net), 1, 0, 1)["convnet"]
    assert profile[("stem.relu", "forward")] is None
    assert profile[("stem.relu", "backward")] is None
    assert profile[("stem.bn", "forward")] is not None


class Failure(Exception):
    pass


def test_convnet_timers_restore_every_method_when_a_step_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    step = tiny_step(tiny_resnet())
    net = step.model.net
    layers = named_layers(net)
    own_forward = net["fc"].forward
    net["fc"].forward = own_forward  # an instance attribute of its own, kept as it was

    def failing_backward(self, dout, *, compute_dx=True):
        raise Failure

    monkeypatch.setattr(nn.ReLU, "backward", failing_backward)
    with pytest.raises(Failure), convnet_timers(net, layers, LayerClock()):
        assert "forward" in vars(layers[0][1])
        step()
    for _, layer in layers:
        expected = {"forward"} if layer is net["fc"] else set()
        assert {"forward", "backward"} & set(vars(layer)) == expected
    assert net["fc"].forward is own_forward
    assert "forward" not in vars(net)


def test_torch_timers_remove_every_hook_when_a_step_raises() -> None:
    torch = pytest.importorskip("torch")
    model = tiny_resnet()
    convnet_step = tiny_step(model)
    step = TorchStep(model, convnet_step.X, convnet_step.y, torch, "channels_last")
    layers = named_layers(model.net)
    fc = step.counterparts[model.net["fc"]]
    fc.forward = lambda x: (_ for _ in ()).throw(Failure())
    with pytest.raises(Failure), step.instrument(layers, LayerClock()):
        assert step.counterparts[layers[0][1]]._forward_pre_hooks
        step()
    del fc.forward
    step()
    for module in step.net.modules():
        for hooks in ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks"):
            assert not getattr(module, hooks), (module, hooks)
        assert not module._backward_hooks
    for parameter in step.net.parameters():
        assert not getattr(parameter, "_post_accumulate_grad_hooks", None)


def test_torch_layer_times_cover_the_first_layers_weight_gradient() -> None:
    """The first convolution's inputs need no gradient: its backward still ends after its
    weight gradient, not when its outputs' gradient arrives."""
    torch = pytest.importorskip("torch")
    model = tiny_resnet()
    convnet_step = tiny_step(model)
    step = TorchStep(model, convnet_step.X, convnet_step.y, torch, "NCHW")
    weight = step.counterparts[model.net["stem"]["conv"]].weight
    accumulated = []
    weight.register_post_accumulate_grad_hook(lambda _: accumulated.append(time.perf_counter()))
    clock = LayerClock()
    with step.instrument(named_layers(model.net), clock):
        step()
    [(start, end)] = clock.intervals[("stem.conv", "backward")]
    assert start < accumulated[0] <= end


def test_forced_conv_algorithm_sets_the_global_choice_and_restores_it() -> None:
    previous = convnet.set_conv_algorithm("winograd")
    try:
        with pytest.raises(Failure), forced_conv_algorithm("im2col"):
            assert convnet.get_conv_algorithm() == "im2col"
            raise Failure
        assert convnet.get_conv_algorithm() == "winograd"
    finally:
        convnet.set_conv_algorithm(previous)


def test_gradient_error_is_relative_to_each_parameters_largest_gradient() -> None:
    reference = {"a.w": np.array([10.0, -20.0]), "b.w": np.array([0.5, 0.0]), "c.b": np.zeros(2)}
    grads = {"a.w": np.array([10.0, -19.0]), "b.w": np.array([0.5, 0.1]), "c.b": np.zeros(2)}
    assert gradient_error(grads, reference) == pytest.approx(0.2)  # b.w: 0.1 / 0.5
    grads["c.b"] = np.array([0.0, 0.3])  # a zero reference: the absolute error
    assert gradient_error(grads, reference) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="reference"):
        gradient_error({"a.w": grads["a.w"]}, reference)


@pytest.mark.parametrize("with_torch", [False, True])
def test_precision_errors_equal_a_direct_computation(with_torch: bool) -> None:
    torch = torch_or_none(with_torch)
    model = tiny_resnet()
    step = tiny_step(model)
    X, y = step.X, step.y
    errors = precision_errors(model, tiny_resnet, X, y, ("default", "im2col"), torch)

    twin = tiny_resnet(np.float64)
    for name in model.params:
        twin.params[name] = model.params[name].astype(np.float64)
    loss64, _ = twin.loss(X.astype(np.float64), y)
    grads64 = twin.net.grads

    def direct(loss, grads):
        relative = max(
            np.max(np.abs(grads[name].astype(np.float64) - grads64[name]))
            / np.max(np.abs(grads64[name]))
            for name in grads64
        )
        return abs(loss - loss64) / abs(loss64), relative

    loss32, _ = model.loss(X, y)
    assert errors["default"] == pytest.approx(direct(loss32, model.net.grads), rel=1e-12)
    for layer in model.net.layers():
        if isinstance(layer, nn.Conv2d):
            layer.conv_param["algorithm"] = "im2col"
    loss32, _ = model.loss(X, y)
    assert errors["im2col"] == pytest.approx(direct(loss32, model.net.grads), rel=1e-12)
    assert 0 < errors["im2col"][1] < 1e-4
    if torch is not None:
        net = torch_network(model.net, torch).train()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
        loss.backward()
        grads = {}
        for name, parameter in zip(model.net.params, net.parameters(), strict=True):
            grad = parameter.grad.numpy()
            grads[name] = grad.T if grad.ndim == 2 else grad
        assert errors["torch"] == pytest.approx(direct(loss.item(), grads), rel=1e-12)
    else:
        assert "torch" not in errors


def test_torch_gradients_are_keyed_and_shaped_like_convnets() -> None:
    torch = pytest.importorskip("torch")
    model = tiny_resnet(np.float64)
    step = tiny_step(model)
    counterparts: dict = {}
    net = torch_network(model.net, torch, counterparts).train()
    torch.nn.functional.cross_entropy(
        net(torch.from_numpy(step.X)), torch.from_numpy(step.y)
    ).backward()
    model.loss(step.X, step.y)
    grads = torch_gradients(model.net, counterparts)
    assert list(grads) == list(model.net.params)
    for name, grad in model.net.grads.items():
        np.testing.assert_allclose(grads[name], grad, rtol=1e-8, atol=1e-10, err_msg=name)


def test_the_three_layer_net_translates_to_the_same_torch_network() -> None:
    torch = pytest.importorskip("torch")

    from convnet.models import ThreeLayerConvNet

    model = ThreeLayerConvNet(input_dim=(3, 8, 8), dtype=np.float64, seed=3, weight_scale=0.1)
    X = np.random.default_rng(0).standard_normal((4, 3, 8, 8))
    net = torch_network(model.net, torch)
    expected = net(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(model.loss(X), expected, rtol=1e-10, atol=1e-12)
