"""Worst float32 error of Winograd convolution, per tile size and layer width.

For random inputs, filters and upstream gradients (standard normal) of 3x3 stride-1 pad-1
convolutions, prints the largest ``max|fast - exact| / max|exact|`` over several seeds of
the forward output, dX and dW, where ``exact`` is the float64 im2col result (itself
tested against the naive reference within 1e-10). The project's float32 standard is 1e-4.

    python benchmarks/winograd_accuracy.py [--seeds 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from convnet import conv_plan
from convnet.fast_layers import conv_backward_fast, conv_forward_fast

WIDTHS = (16, 64, 128, 256)


def _pass(x, w, b, dout, algorithm: str) -> tuple[np.ndarray, ...]:
    out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1, "algorithm": algorithm})
    dx, dw, _ = conv_backward_fast(dout, cache)
    return out, dx, dw


def worst_errors(tile: int, width: int, dtype: np.dtype, seeds: int, size: int = 12) -> list[float]:
    """Largest relative error of (out, dx, dw) over ``seeds`` random problems."""
    worst = [0.0, 0.0, 0.0]
    original = conv_plan.winograd_tile
    conv_plan.winograd_tile = lambda geo: tile
    try:
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            x = rng.standard_normal((4, width, size, size))
            w = rng.standard_normal((width, width, 3, 3))
            b = rng.standard_normal(width)
            dout = rng.standard_normal((4, width, size, size))
            exact = _pass(x, w, b, dout, "im2col")
            cast = [a.astype(dtype) for a in (x, w, b, dout)]
            fast = _pass(*cast, "winograd")
            for i, (value, reference) in enumerate(zip(fast, exact, strict=True)):
                error = np.max(np.abs(value - reference)) / np.max(np.abs(reference))
                worst[i] = max(worst[i], float(error))
    finally:
        conv_plan.winograd_tile = original
    return worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    print("worst max|error| / max|exact| of Winograd (standard 1e-4 float32, 1e-10 float64)")
    print(f"{'tile':>5} {'dtype':>8} {'C = F':>6} {'forward':>9} {'dX':>9} {'dW':>9}")
    for tile in (2, 4):
        for dtype in (np.float32, np.float64):
            for width in WIDTHS:
                errors = worst_errors(tile, width, np.dtype(dtype), args.seeds)
                cells = " ".join(f"{error:9.1e}" for error in errors)
                print(f"{tile}x{tile:<3} {np.dtype(dtype).name:>8} {width:>6} {cells}", flush=True)


if __name__ == "__main__":
    main()
