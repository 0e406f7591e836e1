"""How far a float32 training step of the resnet preset is from float64, per algorithm.

For each batch size and several image seeds, one training step (loss and every gradient)
of ``convnet.models.resnet()`` in float32 against the same step in float64 (the same
weights and images, widened): the gradient error is the largest difference relative to
each parameter's largest gradient, the maximum over the parameters
(:func:`convnet.bench.precision.gradient_error`). Rows: convnet's default algorithms
("auto", Winograd on most 3x3 layers), every convolution by im2col
(``convnet.set_conv_algorithm("im2col")``), each in channels-last and contiguous memory,
and PyTorch's float32 (NCHW) when it is installed. The median and the largest error over
the seeds are printed: a single ReLU whose input is within float32 rounding of 0 changes
sign between the two precisions now and then, and moves that step's gradients by ~1e-3
whatever the algorithm.

Run: ``python benchmarks/network_precision.py [--batches 8,16,64] [--seeds 5]``.
"""

from __future__ import annotations

import argparse

import numpy as np

from convnet import models
from convnet._blas_core import cpu_name
from convnet.bench.precision import precision_errors


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    return torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="8,16,64")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch = _torch()
    batches = [int(batch) for batch in args.batches.split(",")]
    rows: dict[tuple[str, int], list[float]] = {}
    for batch in batches:
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            X = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
            y = rng.integers(0, 10, size=batch)
            for layout in ("channels_last", "contiguous"):
                model = models.resnet(seed=seed)
                model.memory_format = layout

                def build(dtype, layout=layout, seed=seed):
                    twin = models.resnet(seed=seed, dtype=dtype)
                    twin.memory_format = "contiguous" if dtype == np.float64 else layout
                    return twin

                use_torch = torch if layout == "contiguous" else None
                errors = precision_errors(model, build, X, y, ("default", "im2col"), use_torch)
                for name, (_, gradient) in errors.items():
                    label = name if name == "torch" else f"{name}, {layout}"
                    rows.setdefault((label, batch), []).append(gradient)
    print(
        f"Gradient error of a float32 resnet() step against float64 ({cpu_name()}); "
        f"median / largest over {args.seeds} image seeds"
    )
    print("| convolutions, memory | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|" + "---|" * len(batches))
    for label in dict.fromkeys(label for label, _ in rows):
        cells = []
        for batch in batches:
            values = rows[(label, batch)]
            cells.append(f"{np.median(values):.1e} / {max(values):.1e}")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
