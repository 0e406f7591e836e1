"""Time one training step of ThreeLayerConvNet: convnet against the same net in PyTorch CPU.

A step is the forward pass, the softmax loss, every gradient and one SGD update. The net is
ThreeLayerConvNet's default (conv 7x7 with 32 filters and pad 3, ReLU, 2x2 max pool,
affine to 100, ReLU, affine to 10) on 3x32x32 images. PyTorch runs when it is installed,
with two threads.

The two libraries are interleaved: before every sample the script pauses (so the BLAS and
OpenMP threads of the previous call stop spinning) and makes one untimed call; a sample is
the mean of several back-to-back steps, as in training. Medians are reported. Like
``convnet train``, the script first calls ``convnet.keep_freed_memory()``, which applies to
both libraries in the process (``--default-malloc`` leaves malloc alone, to measure what
that costs).

    python benchmarks/bench_train_step.py --batch 50 --repeats 20 --dtype float32

(with convnet installed, or from the source tree with ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

import convnet
from convnet._blas_core import use_fast_core
from convnet.bench import interleaved_medians
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50, help="images per step (default 50)")
    parser.add_argument("--repeats", type=int, default=15, help="samples (default 15)")
    parser.add_argument(
        "--steps", type=int, default=10, help="back-to-back steps per sample (default 10)"
    )
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (skip keep_freed_memory), to measure its effect",
    )
    args = parser.parse_args(argv)
    if min(args.batch, args.repeats, args.steps) < 1:
        parser.error("--batch, --repeats and --steps must be positive")
    if not args.default_malloc:
        convnet.keep_freed_memory()

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.batch, 3, 32, 32)).astype(args.dtype)
    y = rng.integers(0, 10, size=args.batch)
    steps = {"convnet": convnet_step(X, y)}
    reference = torch_step(X, y)
    if reference is not None:
        steps["PyTorch"] = reference

    medians = {
        name: milliseconds / 1e3
        for name, milliseconds in interleaved_medians(
            steps, args.repeats, PAUSE_SECONDS, args.steps
        ).items()
    }
    print(
        f"ThreeLayerConvNet training step: batch {args.batch}, 3x32x32, {args.dtype}, "
        f"median of {args.repeats} samples of {args.steps} back-to-back steps; "
        f"convnet backend {convnet.BACKEND}; "
        f"malloc {'as glibc sets it' if args.default_malloc else 'keeping freed memory'}"
    )
    print(f"{'library':<10} {'ms/step':>9} {'images/s':>10} {'convnet/PyTorch':>16}")
    baseline = medians.get("PyTorch")
    for name, seconds in medians.items():
        ratio = "" if baseline is None else f"{seconds / baseline:.2f}"
        print(f"{name:<10} {1e3 * seconds:>9.1f} {args.batch / seconds:>10.0f} {ratio:>16}")
    if reference is None:
        print("PyTorch is not installed: no reference timing")


if __name__ == "__main__":
    use_fast_core()
    main()
