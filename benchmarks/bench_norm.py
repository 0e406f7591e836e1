"""Normalization, ReLU and dropout benchmark: convnet against PyTorch.

Forward + backward (train mode) on one activation shape, float32 by default: the median
and the minimum of interleaved samples (the minimum is the steadier figure on a loaded
machine). The "copy of x" row times one ``x.copy()``, a single pass over memory, to read
the other rows against. Spatial batch norm and ReLU run twice: the numpy layers
(``convnet.normalization``, ``convnet.layers``) and the compiled ones
(``convnet.fast_normalization``, ``convnet.fast_activation``), which make one or two
passes over each array where numpy makes several.

    python benchmarks/bench_norm.py [--shape 64,64,16,16] [--dtype float32] [--threads 2]
"""

from __future__ import annotations

import argparse

import numpy as np

from convnet._blas_core import cpu_name
from convnet._memory import keep_freed_memory
from convnet._parallel import get_num_threads
from convnet.bench.harness import interleaved_medians
from convnet.dropout import dropout_backward, dropout_forward
from convnet.fast_activation import relu_backward_fast, relu_forward_fast
from convnet.fast_normalization import (
    spatial_batchnorm_backward_fast,
    spatial_batchnorm_forward_fast,
)
from convnet.layers import relu_backward, relu_forward
from convnet.normalization import (
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)


def convnet_candidates(x, dout, groups):
    channels = x.shape[1]
    gamma = np.ones(channels, dtype=x.dtype)
    beta = np.zeros(channels, dtype=x.dtype)
    features = x[0].size
    rows, drows = x.reshape(x.shape[0], features), dout.reshape(x.shape[0], features)
    gamma_ln, beta_ln = np.ones(features, dtype=x.dtype), np.zeros(features, dtype=x.dtype)
    bn_param = {"mode": "train"}
    generator = np.random.default_rng(0)

    def batchnorm():
        _, cache = spatial_batchnorm_forward(x, gamma, beta, bn_param)
        return spatial_batchnorm_backward(dout, cache)

    def batchnorm_compiled():
        _, cache = spatial_batchnorm_forward_fast(x, gamma, beta, bn_param)
        return spatial_batchnorm_backward_fast(dout, cache)

    def relu():
        _, cache = relu_forward(x)
        return relu_backward(dout, cache)

    def relu_compiled():
        _, cache = relu_forward_fast(x)
        return relu_backward_fast(dout, cache)

    def groupnorm():
        _, cache = spatial_groupnorm_forward(x, gamma, beta, groups, {})
        return spatial_groupnorm_backward(dout, cache)

    def layernorm():
        _, cache = layernorm_forward(rows, gamma_ln, beta_ln, {})
        return layernorm_backward(drows, cache)

    def dropout():
        _, cache = dropout_forward(x, {"mode": "train", "p": 0.5, "seed": generator})
        return dropout_backward(dout, cache)

    return {
        "spatial batch norm": batchnorm,
        "spatial batch norm, compiled": batchnorm_compiled,
        f"group norm G={groups}": groupnorm,
        "layer norm (N, C*H*W)": layernorm,
        "ReLU": relu,
        "ReLU, compiled": relu_compiled,
        "dropout p=0.5": dropout,
        "copy of x": x.copy,
    }


def torch_candidates(torch, x, dout, groups):
    functional = torch.nn.functional
    channels = x.shape[1]
    x_t = torch.from_numpy(x).requires_grad_(True)
    dout_t = torch.from_numpy(dout)
    weight = torch.ones(channels, dtype=x_t.dtype, requires_grad=True)
    bias = torch.zeros(channels, dtype=x_t.dtype, requires_grad=True)
    features = x[0].size
    weight_ln = torch.ones(features, dtype=x_t.dtype, requires_grad=True)
    bias_ln = torch.zeros(features, dtype=x_t.dtype, requires_grad=True)
    running_mean = torch.zeros(channels, dtype=x_t.dtype)
    running_var = torch.ones(channels, dtype=x_t.dtype)

    def backward(out):
        out.backward(dout_t.reshape(out.shape))
        x_t.grad = weight.grad = bias.grad = weight_ln.grad = bias_ln.grad = None

    def batchnorm():
        backward(functional.batch_norm(x_t, running_mean, running_var, weight, bias, training=True))

    def groupnorm():
        backward(functional.group_norm(x_t, groups, weight, bias))

    def layernorm():
        rows = x_t.reshape(x.shape[0], features)
        backward(functional.layer_norm(rows, (features,), weight_ln, bias_ln))

    def dropout():
        backward(functional.dropout(x_t, 0.5, training=True))

    def relu():
        backward(functional.relu(x_t))

    return {
        "spatial batch norm": batchnorm,
        f"group norm G={groups}": groupnorm,
        "layer norm (N, C*H*W)": layernorm,
        "ReLU": relu,
        "dropout p=0.5": dropout,
        "copy of x": x_t.detach().clone,
    }


def interleaved_samples(candidates, repeats: int, pause: float, calls: int):
    """Milliseconds per call of each candidate: ``repeats`` samples taken in interleaved
    rounds by :func:`convnet.bench.harness.interleaved_medians` (one round each, so every sample
    is kept: the median of one sample is that sample)."""
    rounds = [interleaved_medians(candidates, 1, pause, calls) for _ in range(repeats)]
    return {name: [medians[name] for medians in rounds] for name in candidates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,64,16,16", help="N,C,H,W")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--groups", type=int, default=8, help="G of the group norm")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5, help="back-to-back calls a sample")
    args = parser.parse_args(argv)
    shape = tuple(int(size) for size in args.shape.split(","))
    keep_freed_memory()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(args.dtype)
    dout = rng.standard_normal(shape).astype(args.dtype)
    ours = convnet_candidates(x, dout, args.groups)
    try:
        import torch
    except ImportError:
        torch = None
    candidates = {f"convnet {name}": run for name, run in ours.items()}
    if torch is not None:
        torch.set_num_threads(args.threads)
        theirs = torch_candidates(torch, x, dout, args.groups)
        candidates.update({f"torch {name}": run for name, run in theirs.items()})
    samples = interleaved_samples(candidates, args.repeats, pause=0.2, calls=args.calls)

    print(f"{cpu_name()}; x {shape} {args.dtype}; f+b, ms")
    print(
        f"median (min) of the samples; numpy runs on one thread, the compiled layers on "
        f"{get_num_threads()}"
    )
    print(f"| layer | convnet | PyTorch ({args.threads} threads) | ratio of medians |")
    print("|---|---|---|---|")
    for name in ours:
        mine = samples[f"convnet {name}"]
        other = samples.get(f"torch {name.removesuffix(', compiled')}")
        row = f"| {name} | {np.median(mine):.2f} ({min(mine):.2f}) |"
        if other:
            ratio = np.median(mine) / np.median(other)
            row += f" {np.median(other):.2f} ({min(other):.2f}) | {ratio:.2f}x |"
        else:
            row += " - | - |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
