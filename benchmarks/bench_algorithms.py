"""Winograd against im2col on 3x3 stride-1 convolutions: the table behind ``algorithm='auto'``.

For each channel count (C in = F out) and image size, times a forward + backward pass of
the fast layers with each algorithm (float32 by default, pad 1) and prints the ratio
winograd / im2col: below 1 Winograd is faster. Every time is the smallest CPU time of the
calling process over several samples of a few back-to-back calls, with one thread (the
ratio does not depend on the thread count: both split the batch the same way), so a
loaded machine disturbs it less than wall-clock medians. A first row uses C = 3 input
channels (a network's first layer).

    python benchmarks/bench_algorithms.py [--dtype float32] [--samples 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from convnet import keep_freed_memory, set_num_threads
from convnet._blas_core import cpu_name
from convnet.fast_layers import conv_backward_fast, conv_forward_fast

CHANNELS = (4, 8, 16, 32, 64, 128, 256)
SIZES = (4, 8, 16, 32)
MULTIPLY_ADDS_PER_CASE = 2e8


def _pass(x, w, b, algorithm: str) -> Callable[[], None]:
    param = {"stride": 1, "pad": 1, "algorithm": algorithm}

    def forward_backward() -> None:
        out, cache = conv_forward_fast(x, w, b, param)
        conv_backward_fast(out, cache)

    return forward_backward


def _cpu_seconds(run: Callable[[], None], samples: int, calls: int) -> float:
    run()
    best = float("inf")
    for _ in range(samples):
        start = time.process_time()
        for _ in range(calls):
            run()
        best = min(best, (time.process_time() - start) / calls)
    return best


def ratio(channels_in: int, channels_out: int, size: int, dtype, samples: int) -> float:
    """CPU time of Winograd over im2col for one forward + backward pass."""
    per_image = channels_in * channels_out * 9 * size * size
    num = max(1, min(256, int(MULTIPLY_ADDS_PER_CASE / per_image)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((num, channels_in, size, size)).astype(dtype)
    w = rng.standard_normal((channels_out, channels_in, 3, 3)).astype(dtype)
    b = np.zeros(channels_out, dtype)
    calls = 3
    winograd = _cpu_seconds(_pass(x, w, b, "winograd"), samples, calls)
    im2col = _cpu_seconds(_pass(x, w, b, "im2col"), samples, calls)
    return winograd / im2col


BY_BATCH = ((16, 8), (16, 16), (64, 4), (64, 8), (64, 16), (256, 4), (256, 8), (256, 16), (512, 8))
BATCHES = (1, 2, 4, 8, 16)


def batch_ratio(channels: int, size: int, num: int, dtype, samples: int) -> float:
    """CPU time of Winograd over im2col for one forward + backward pass of ``num`` images
    with C = F = ``channels``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((num, channels, size, size)).astype(dtype)
    w = rng.standard_normal((channels, channels, 3, 3)).astype(dtype)
    b = np.zeros(channels, dtype)
    winograd = _cpu_seconds(_pass(x, w, b, "winograd"), samples, 3)
    return winograd / _cpu_seconds(_pass(x, w, b, "im2col"), samples, 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--samples", type=int, default=5, help="samples per time (default 5)")
    parser.add_argument("--by-batch", action="store_true", help="the ratio by batch size N instead")
    args = parser.parse_args(argv)
    keep_freed_memory()
    set_num_threads(1)
    print(f"winograd / im2col CPU time, forward + backward, {args.dtype}, 1 thread, {cpu_name()}")
    if args.by_batch:
        print(f"{'C = F':>6} {'image':>6} " + " ".join(f"{f'N={n}':>6}" for n in BATCHES))
        with threadpool_limits(limits=1, user_api="blas"):
            for channels, size in BY_BATCH:
                cells = [batch_ratio(channels, size, n, args.dtype, args.samples) for n in BATCHES]
                print(
                    f"{channels:>6} {f'{size}x{size}':>6} "
                    + " ".join(f"{cell:6.2f}" for cell in cells),
                    flush=True,
                )
        return
    print(f"{'C -> F':>10} " + " ".join(f"{f'{s}x{s}':>7}" for s in SIZES))
    rows = [(3, 32)] + [(c, c) for c in CHANNELS]
    with threadpool_limits(limits=1, user_api="blas"):
        for channels_in, channels_out in rows:
            cells = [ratio(channels_in, channels_out, s, args.dtype, args.samples) for s in SIZES]
            label = f"{channels_in} -> {channels_out}"
            print(f"{label:>10} " + " ".join(f"{cell:7.2f}" for cell in cells), flush=True)


if __name__ == "__main__":
    main()
