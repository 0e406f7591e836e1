"""Time one training step of ThreeLayerConvNet: convnet against the same net in PyTorch CPU.

A step is the forward pass, the softmax loss, every gradient and one SGD update. The net is
ThreeLayerConvNet's default (conv 7x7 with 32 filters and pad 3, ReLU, 2x2 max pool,
affine to 100, ReLU, affine to 10) on 3x32x32 images. PyTorch runs when it is installed,
with two threads.

The two libraries are interleaved: before every timed step the script pauses (so the
BLAS and OpenMP threads of the previous call stop spinning) and makes one untimed call.
Medians are reported. Like the Solver, the script first calls
``convnet.keep_freed_memory()``, which applies to both libraries in the process.

    python benchmarks/bench_train_step.py --batch 50 --repeats 20 --dtype float32

(with convnet installed, or from the source tree with ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import convnet
from convnet.models import ThreeLayerConvNet
from convnet.optim import sgd

PAUSE_SECONDS = 0.3
LEARNING_RATE = 1e-2


def convnet_step(X: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    """One convnet training step on (X, y), as a closure over a fresh model."""
    model = ThreeLayerConvNet(dtype=X.dtype, seed=0)
    config = {"learning_rate": LEARNING_RATE}

    def step() -> None:
        _, grads = model.loss(X, y)
        for name, param in model.params.items():
            model.params[name], _ = sgd(param, grads[name], config)

    return step


def torch_step(X: np.ndarray, y: np.ndarray) -> Callable[[], None] | None:
    """The same training step in PyTorch, or None when PyTorch is not installed."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    torch.set_num_threads(2)
    torch.manual_seed(0)
    dtype = {np.float32: torch.float32, np.float64: torch.float64}[X.dtype.type]
    channels, height, width = X.shape[1:]
    net = nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=7, padding=3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 2) * (width // 2), 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    ).to(dtype)
    optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
    images, labels = torch.from_numpy(X), torch.from_numpy(y)

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()

    return step


def time_interleaved(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each step, the steps taking turns."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            time.sleep(PAUSE_SECONDS)
            step()
            start = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50, help="images per step (default 50)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be positive")
    convnet.keep_freed_memory()

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.batch, 3, 32, 32)).astype(args.dtype)
    y = rng.integers(0, 10, size=args.batch)
    steps = {"convnet": convnet_step(X, y)}
    reference = torch_step(X, y)
    if reference is not None:
        steps["PyTorch"] = reference

    medians = time_interleaved(steps, args.repeats)
    print(
        f"ThreeLayerConvNet training step: batch {args.batch}, 3x32x32, {args.dtype}, "
        f"median of {args.repeats}; convnet backend {convnet.BACKEND}"
    )
    print(f"{'library':<10} {'ms/step':>9} {'images/s':>10} {'convnet/PyTorch':>16}")
    baseline = medians.get("PyTorch")
    for name, seconds in medians.items():
        ratio = "" if baseline is None else f"{seconds / baseline:.2f}"
        print(f"{name:<10} {1e3 * seconds:>9.1f} {args.batch / seconds:>10.0f} {ratio:>16}")
    if reference is None:
        print("PyTorch is not installed: no reference timing")


if __name__ == "__main__":
    main()
