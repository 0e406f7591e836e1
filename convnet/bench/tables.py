"""The markdown tables ``convnet bench`` prints, one row per case, dtype and thread count,
printed as each row is measured."""

from __future__ import annotations

import numpy as np

from convnet.bench.cases import (
    AVG_POOL_CASES,
    CONV_CASES,
    POOL_CASES,
    TRANSPOSE_CASES,
    avg_pool_candidates,
    conv_algorithm_label,
    conv_candidates,
    peak_extra_mib,
    pool_candidates,
    transpose_candidates,
)
from convnet.bench.harness import interleaved_medians, measurements, thread_limits, time_regimes
from convnet.bench.layer_times import (
    PHASES,
    STEP_ROW,
    SUM_ROW,
    Profile,
    layer_profiles,
    named_layers,
)
from convnet.bench.precision import forced_conv_algorithm, precision_errors
from convnet.bench.train_step import CONVNET, TORCH_STEPS, TRAIN_STEPS, train_step_candidates

# the precision table's convolution algorithms ("default": none forced) -> their label
ALGORITHMS = {"default": "default (auto)", "im2col": "all im2col"}


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None:
        return "-"
    return f"{numerator / denominator:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_table(header: str, rows) -> list[str]:
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    print("\n".join(lines), flush=True)
    for row in rows:
        lines.append(row)
        print(row, flush=True)
    return lines


REGIME_HEADER = (
    "steady: fast f+b | torch f+b | fast/torch | cold: fast f+b | torch f+b | fast/torch"
)


def _regime_cells(steady: dict[str, float], cold: dict[str, float]) -> str:
    return " | ".join(
        f"{_ms(times['fast f+b'])} | {_ms(times.get('torch f+b'))} "
        f"| {_ratio(times['fast f+b'], times.get('torch f+b'))}"
        for times in (steady, cold)
    )


def conv_table(args, torch, rng) -> list[str]:
    header = (
        "| case | dtype | thr | algorithm | naive f+b | GEMM f+b | fast fwd | torch fwd "
        f"| {REGIME_HEADER} | steady f+b/GEMM | GFLOP/s |"
    )
    rows = (
        f"| {name} | {dtype.name} | {threads} | {conv_algorithm_label(case)} "
        f"| {_ms(naive_ms)} | {_ms(steady.get('GEMM f+b'))} | {_ms(steady['fast fwd'])} "
        f"| {_ms(steady.get('torch fwd'))} | {_regime_cells(steady, cold)} "
        f"| {_ratio(steady['fast f+b'], steady.get('GEMM f+b'))} "
        f"| {3 * case.forward_flops() / (steady['fast f+b'] * 1e6):.0f} |"
        for threads, name, case, dtype, steady, cold, naive_ms in measurements(
            args, torch, rng, args.conv_cases, CONV_CASES, conv_candidates
        )
    )
    return _print_table(header, rows)


def pool_table(args, torch, rng) -> list[str]:
    header = f"| case | dtype | thr | window/stride | naive f+b | copy x | {REGIME_HEADER} |"
    rows = (
        f"| {name} {case.x_shape} | {dtype.name} | {threads} "
        f"| {case.window}x{case.window}/{case.stride} | {_ms(naive_ms)} "
        f"| {_ms(steady['copy x'])} | {_regime_cells(steady, cold)} |"
        for threads, name, case, dtype, steady, cold, naive_ms in measurements(
            args, torch, rng, args.pool_cases, POOL_CASES, pool_candidates
        )
    )
    return _print_table(header, rows)


def transpose_table(args, torch, rng) -> list[str]:
    header = (
        "| case | dtype | thr | x, w (C, F, kh, kw), stride, pad | naive f+b | fast fwd "
        f"| torch fwd | {REGIME_HEADER} |"
    )
    rows = (
        f"| {name} | {dtype.name} | {threads} | {case.x_shape} {case.w_shape} s{case.stride} "
        f"p{case.pad} | {_ms(naive_ms)} | {_ms(steady['fast fwd'])} "
        f"| {_ms(steady.get('torch fwd'))} | {_regime_cells(steady, cold)} |"
        for threads, name, case, dtype, steady, cold, naive_ms in measurements(
            args, torch, rng, args.transpose_cases, TRANSPOSE_CASES, transpose_candidates
        )
    )
    return _print_table(header, rows)


def avg_pool_table(args, torch, rng) -> list[str]:
    header = f"| case | dtype | thr | window/stride | naive f+b | copy x | {REGIME_HEADER} |"
    rows = (
        f"| {name} {case.x_shape} | {dtype.name} | {threads} "
        f"| {case.window}x{case.window}/{case.stride} | {_ms(naive_ms)} "
        f"| {_ms(steady['copy x'])} | {_regime_cells(steady, cold)} |"
        for threads, name, case, dtype, steady, cold, naive_ms in measurements(
            args, torch, rng, args.avg_pool_cases, AVG_POOL_CASES, avg_pool_candidates
        )
    )
    return _print_table(header, rows)


def memory_table(args) -> list[str]:
    case = CONV_CASES["b"]
    rows = (
        f"| {batch} | {dtype.name} | {peak:.1f} | {beyond:.1f} |"
        for batch in args.memory_batches
        for dtype in args.dtypes
        for peak, beyond in [peak_extra_mib(case, batch, dtype)]
    )
    return _print_table("| case b, batch | dtype | peak extra MiB | beyond out + grads MiB |", rows)


def _step_cells(batch: int, times: dict[str, float]) -> str:
    """convnet's ms, PyTorch's in each layout, convnet's images/s and their ratio to the
    faster PyTorch layout's (above 1: convnet is faster)."""
    ours = times[CONVNET]
    theirs = [times[name] for name in TORCH_STEPS if name in times]
    faster = min(theirs) if theirs else None
    torch_cells = " | ".join(_ms(times.get(name)) for name in TORCH_STEPS)
    return f"{_ms(ours)} | {torch_cells} | {batch / ours * 1e3:.0f} | {_ratio(faster, ours)}"


def step_dtypes(network: str, dtypes: list[np.dtype]) -> list[np.dtype]:
    """The dtypes of ``dtypes`` the training-step table times ``network`` in."""
    return [dtype for dtype in dtypes if dtype == np.float32 or TRAIN_STEPS[network].float64]


def train_step_table(args, torch, rng) -> list[str]:
    regime = (
        "convnet ms | PyTorch NCHW ms | PyTorch channels_last ms | images/s "
        "| images/s vs faster PyTorch"
    )
    header = f"| training step | dtype | thr | steady: {regime} | cold: {regime} |"

    def rows():
        for threads in args.threads:
            with thread_limits(threads, torch):
                for network, batch in args.train_steps:
                    for dtype in step_dtypes(network, args.dtypes):
                        candidates = train_step_candidates(network, batch, dtype, torch, rng)
                        times = time_regimes(
                            candidates, args, calls=args.step_calls, cold_names=candidates
                        )
                        yield (
                            f"| {TRAIN_STEPS[network].label} ({batch},3,32,32) | {dtype.name} "
                            f"| {threads} | "
                            + " | ".join(_step_cells(batch, measured) for measured in times)
                            + " |"
                        )

    return _print_table(header, rows())


def _layer_cells(profiles: dict[str, Profile], row: str) -> str:
    """Each library's forward and backward ms of ``row``, and convnet's forward + backward
    relative to the faster PyTorch layout's."""
    cells, totals = [], {}
    for name in (CONVNET, *TORCH_STEPS):
        profile = profiles.get(name)
        times = [None if profile is None else profile[(row, phase)] for phase in PHASES]
        cells += [_ms(value) for value in times]
        if None not in times:
            totals[name] = sum(times)
    theirs = [totals[name] for name in TORCH_STEPS if name in totals]
    ratio = _ratio(totals.get(CONVNET), min(theirs)) if theirs else "-"
    return " | ".join([*cells, ratio])


def layer_table(args, torch, rng, network: str, batch: int, threads: int) -> list[str]:
    """Every layer's forward and backward ms inside a float32 training step of ``network``
    (in forward order; dotted names), convnet beside PyTorch's same module in both layouts,
    then the sum of the layers and the whole step."""
    header = (
        "| layer | type | convnet fwd | bwd | PyTorch NCHW fwd | bwd "
        "| PyTorch channels_last fwd | bwd | f+b vs faster PyTorch |"
    )
    with thread_limits(threads, torch):
        steps = train_step_candidates(network, batch, np.dtype(np.float32), torch, rng)
        layers = named_layers(steps[CONVNET].model.net)
        plain = interleaved_medians(steps, args.repeats, args.pause, args.step_calls)
        profiles = layer_profiles(steps, layers, args.repeats, args.pause, args.layer_calls)
    rows = [
        f"| {name} | {type(layer).__name__} | {_layer_cells(profiles, name)} |"
        for name, layer in layers
    ]
    rows += [f"| *{row}* | | {_layer_cells(profiles, row)} |" for row in (SUM_ROW, STEP_ROW)]
    lines = _print_table(header, rows)
    without = ", ".join(f"{name} {_ms(plain[name])}" for name in plain)
    print(f"The step without timers, ms: {without}", flush=True)
    return lines


def precision_table(args, torch, rng, network: str, batch: int, threads: int) -> list[str]:
    """The float32 step's loss and gradient errors relative to float64, under the default
    convolution algorithm and with every convolution forced to im2col (and PyTorch's
    float32), beside the step's steady time."""
    header = "| library | convolutions | steady ms | loss error | gradient error |"
    build = TRAIN_STEPS[network].build
    float32 = np.dtype(np.float32)
    with thread_limits(threads, torch):
        step = train_step_candidates(network, batch, float32, None, rng)[CONVNET]
        errors = precision_errors(step.model, build, step.X, step.y, tuple(ALGORITHMS), torch)
        forced = train_step_candidates(network, batch, float32, None, rng)[CONVNET]

        def forced_step() -> None:
            with forced_conv_algorithm("im2col"):
                forced()

        times = interleaved_medians(
            {"default": step, "im2col": forced_step}, args.repeats, args.pause, args.step_calls
        )
    rows = [
        f"| convnet | {description} | {_ms(times[algorithm])} "
        f"| {errors[algorithm][0]:.1e} | {errors[algorithm][1]:.1e} |"
        for algorithm, description in ALGORITHMS.items()
    ]
    if "torch" in errors:
        loss, gradient = errors["torch"]
        rows.append(f"| PyTorch NCHW | PyTorch's | - | {loss:.1e} | {gradient:.1e} |")
    return _print_table(header, rows)
