"""The markdown tables ``convnet bench`` prints, one row per case, dtype and thread count,
printed as each row is measured."""

from __future__ import annotations

from threadpoolctl import threadpool_limits

from convnet._parallel import restore_blas_threads, set_num_threads
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
from convnet.bench.harness import measurements, time_regimes
from convnet.bench.train_step import train_step_candidates


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


def _images_per_second(batch: int, times: dict[str, float]) -> str:
    ours, theirs = times["fast f+b"], times.get("torch f+b")
    speed = f"{batch / ours * 1e3:.0f}"
    return f"{speed} | -" if theirs is None else f"{speed} | {theirs / ours:.2f}"


def train_step_table(args, torch, rng) -> list[str]:
    header = (
        "| training step | dtype | thr | steady: convnet ms | torch ms | images/s "
        "| images/s vs torch | cold: convnet ms | torch ms | images/s | images/s vs torch |"
    )
    rows = []
    for threads in args.threads:
        set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        restore_blas_threads()  # else a pending restore could lift the limit below
        with threadpool_limits(threads):
            for network, batch in args.train_steps:
                for dtype in args.dtypes:
                    candidates = train_step_candidates(network, batch, dtype, torch, rng)
                    steady, cold = time_regimes(candidates, args)
                    rows.append(
                        f"| {network} ({batch},3,32,32) | {dtype.name} | {threads} | "
                        + " | ".join(
                            f"{_ms(times['fast f+b'])} | {_ms(times.get('torch f+b'))} "
                            f"| {_images_per_second(batch, times)}"
                            for times in (steady, cold)
                        )
                        + " |"
                    )
    return _print_table(header, rows)
