"""The layer cases ``convnet bench`` times, and the callables it times for each: fast,
naive, the algorithm's GEMMs alone and PyTorch, plus the peak memory of a convolution."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import numpy as np

from convnet.fast_layers import (
    avg_pool_backward_fast,
    avg_pool_forward_fast,
    conv_algorithm_choice,
    conv_backward_fast,
    conv_forward_fast,
    conv_transpose_backward_fast,
    conv_transpose_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from convnet.layers import (
    avg_pool_backward_naive,
    avg_pool_forward_naive,
    conv_backward_naive,
    conv_forward_naive,
    conv_transpose_backward_naive,
    conv_transpose_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)


@dataclass(frozen=True)
class ConvCase:
    """A convolution to time: input and filter shapes, stride and padding."""

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: int
    pad: int
    dilation: int = 1
    groups: int = 1

    def out_hw(self) -> tuple[int, int]:
        height, width = self.x_shape[2:]
        span_h, span_w = (self.dilation * (k - 1) + 1 for k in self.w_shape[2:])
        return (
            (height + 2 * self.pad - span_h) // self.stride + 1,
            (width + 2 * self.pad - span_w) // self.stride + 1,
        )

    def conv_param(self) -> dict:
        return {
            "stride": self.stride,
            "pad": self.pad,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def forward_flops(self) -> int:
        out_h, out_w = self.out_hw()
        depth = self.w_shape[1] * self.w_shape[2] * self.w_shape[3]
        return 2 * self.x_shape[0] * self.w_shape[0] * depth * out_h * out_w


@dataclass(frozen=True)
class TransposeCase:
    """A transposed convolution to time: input and filter (C, F, kh, kw) shapes."""

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: int
    pad: int


@dataclass(frozen=True)
class PoolCase:
    """A max pool to time: input shape, square window and stride."""

    x_shape: tuple[int, int, int, int]
    window: int
    stride: int


CONV_CASES = {
    "a": ConvCase((100, 3, 31, 31), (25, 3, 3, 3), 2, 1),
    "b": ConvCase((50, 3, 32, 32), (32, 3, 7, 7), 1, 3),
    "c": ConvCase((64, 64, 16, 16), (64, 64, 3, 3), 1, 1),
    "d": ConvCase((32, 128, 8, 8), (128, 128, 3, 3), 1, 1),
    "dil": ConvCase((32, 64, 16, 16), (64, 64, 3, 3), 1, 2, dilation=2),
    "dw": ConvCase((64, 64, 16, 16), (64, 1, 3, 3), 1, 1, groups=64),
}


TRANSPOSE_CASES = {"t1": TransposeCase((32, 64, 8, 8), (64, 32, 4, 4), 2, 1)}


AVG_POOL_CASES = {
    "ap1": PoolCase((100, 3, 32, 32), 2, 2),
    "ap2": PoolCase((64, 64, 16, 16), 2, 2),
}


POOL_CASES = {
    "p1": PoolCase((100, 3, 32, 32), 2, 2),
    "p2": PoolCase((64, 64, 16, 16), 2, 2),
    "p3": PoolCase((64, 64, 16, 16), 3, 2),
}


NAIVE_BY_DEFAULT = ("a", "p1", "ap1")


def conv_algorithm_label(case: ConvCase) -> str:
    """The algorithm ``conv_forward_fast`` runs on the case, as the tables print it."""
    name, tile = conv_algorithm_choice(case.x_shape, case.w_shape, case.conv_param())
    return f"{name} F({tile}x{tile},3x3)" if name.startswith("winograd") else name


def _im2col_gemms(case: ConvCase, dtype: np.dtype, rng: np.random.Generator):
    """The three GEMMs of im2col on the whole batch: forward, dW, dX."""
    out_h, out_w = case.out_hw()
    num_filters, depth = case.w_shape[0], int(np.prod(case.w_shape[1:]))
    columns = case.x_shape[0] * out_h * out_w
    cols = rng.standard_normal((case.groups, depth, columns)).astype(dtype)
    w_rows = rng.standard_normal((case.groups, num_filters // case.groups, depth)).astype(dtype)
    dout_rows = rng.standard_normal((case.groups, num_filters // case.groups, columns)).astype(
        dtype
    )

    def gemms() -> None:
        np.matmul(w_rows, cols)
        np.matmul(dout_rows, cols.transpose(0, 2, 1))
        np.matmul(w_rows.transpose(0, 2, 1), dout_rows)

    return gemms


def _winograd_gemms(case: ConvCase, tile: int, dtype: np.dtype, rng: np.random.Generator):
    """The batched GEMMs of Winograd F(tile x tile, 3x3) on the whole batch (the phases
    of a dilated input stacked in it): forward, dW, dX, one per transformed position."""
    num, channels, height, width = case.x_shape
    num_filters = case.w_shape[0]
    out_h, out_w = case.out_hw()
    if case.dilation > 1:
        num *= case.dilation**2
        out_h, out_w = out_h // case.dilation, out_w // case.dilation
        height, width = out_h + 2, out_w + 2
    alpha2 = (tile + 2) ** 2
    tiles = num * -(-out_h // tile) * -(-out_w // tile)
    dx_tiles = num * -(-height // tile) * -(-width // tile)
    v = rng.standard_normal((alpha2, tiles, channels)).astype(dtype)
    u = rng.standard_normal((alpha2, channels, num_filters)).astype(dtype)
    dv = rng.standard_normal((alpha2, num_filters, tiles)).astype(dtype)
    dv_dx = rng.standard_normal((alpha2, dx_tiles, num_filters)).astype(dtype)

    def gemms() -> None:
        np.matmul(v, u)
        np.matmul(dv, v)
        np.matmul(dv_dx, u.transpose(0, 2, 1))

    return gemms


def conv_candidates(case: ConvCase, dtype: np.dtype, torch, rng: np.random.Generator):
    """The callables timed for one convolution case, and the naive forward+backward.

    ``GEMM f+b`` is the matrix products of the algorithm the case runs (im2col's three,
    or Winograd's batched ones), on the whole batch: the lower bound of the design.
    """
    x = rng.standard_normal(case.x_shape).astype(dtype)
    w = rng.standard_normal(case.w_shape).astype(dtype)
    b = rng.standard_normal(case.w_shape[0]).astype(dtype)
    conv_param = case.conv_param()
    out_h, out_w = case.out_hw()
    num_filters = case.w_shape[0]
    dout = rng.standard_normal((case.x_shape[0], num_filters, out_h, out_w)).astype(dtype)
    algorithm, tile = conv_algorithm_choice(case.x_shape, case.w_shape, conv_param)

    def fast_forward_backward() -> None:
        _, cache = conv_forward_fast(x, w, b, conv_param)
        conv_backward_fast(dout, cache)

    def naive_forward_backward() -> None:
        _, cache = conv_forward_naive(x, w, b, conv_param)
        conv_backward_naive(dout, cache)

    candidates = {
        "fast fwd": lambda: conv_forward_fast(x, w, b, conv_param),
        "fast f+b": fast_forward_backward,
    }
    if algorithm == "im2col":
        candidates["GEMM f+b"] = _im2col_gemms(case, dtype, rng)
    elif algorithm.startswith("winograd"):  # on x itself or on its phases
        candidates["GEMM f+b"] = _winograd_gemms(case, tile, dtype, rng)
    if torch is not None:
        import torch.nn.functional as functional

        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        tb = torch.from_numpy(b).requires_grad_()
        tdout = torch.from_numpy(dout)

        torch_param = {
            "stride": case.stride,
            "padding": case.pad,
            "dilation": case.dilation,
            "groups": case.groups,
        }

        def torch_forward() -> None:
            with torch.no_grad():
                functional.conv2d(tx, tw, tb, **torch_param)

        def torch_forward_backward() -> None:
            functional.conv2d(tx, tw, tb, **torch_param).backward(tdout)

        candidates["torch fwd"] = torch_forward
        candidates["torch f+b"] = torch_forward_backward
    return candidates, naive_forward_backward


def pool_candidates(case: PoolCase, dtype: np.dtype, torch, rng: np.random.Generator):
    """The callables timed for one pooling case, and the naive forward+backward."""
    x = rng.standard_normal(case.x_shape).astype(dtype)
    pool_param = {"pool_height": case.window, "pool_width": case.window, "stride": case.stride}
    out, _ = max_pool_forward_fast(x, pool_param)
    dout = rng.standard_normal(out.shape).astype(dtype)

    def fast_forward_backward() -> None:
        _, cache = max_pool_forward_fast(x, pool_param)
        max_pool_backward_fast(dout, cache)

    def naive_forward_backward() -> None:
        _, cache = max_pool_forward_naive(x, pool_param)
        max_pool_backward_naive(dout, cache)

    candidates = {"fast f+b": fast_forward_backward, "copy x": x.copy}
    if torch is not None:
        import torch.nn.functional as functional

        tx = torch.from_numpy(x).requires_grad_()
        tdout = torch.from_numpy(dout)

        def torch_forward_backward() -> None:
            functional.max_pool2d(tx, case.window, case.stride).backward(tdout)

        candidates["torch f+b"] = torch_forward_backward
    return candidates, naive_forward_backward


def transpose_candidates(case: TransposeCase, dtype: np.dtype, torch, rng: np.random.Generator):
    """The callables timed for one transposed convolution, and the naive forward+backward."""
    x = rng.standard_normal(case.x_shape).astype(dtype)
    w = rng.standard_normal(case.w_shape).astype(dtype)
    b = rng.standard_normal(case.w_shape[1]).astype(dtype)
    conv_param = {"stride": case.stride, "pad": case.pad}
    out, _ = conv_transpose_forward_fast(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape).astype(dtype)

    def fast_forward_backward() -> None:
        _, cache = conv_transpose_forward_fast(x, w, b, conv_param)
        conv_transpose_backward_fast(dout, cache)

    def naive_forward_backward() -> None:
        _, cache = conv_transpose_forward_naive(x, w, b, conv_param)
        conv_transpose_backward_naive(dout, cache)

    candidates = {
        "fast fwd": lambda: conv_transpose_forward_fast(x, w, b, conv_param),
        "fast f+b": fast_forward_backward,
    }
    if torch is not None:
        import torch.nn.functional as functional

        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        tdout = torch.from_numpy(dout)

        def torch_forward() -> None:
            with torch.no_grad():
                functional.conv_transpose2d(tx, tw, tb, stride=case.stride, padding=case.pad)

        def torch_forward_backward() -> None:
            out = functional.conv_transpose2d(tx, tw, tb, stride=case.stride, padding=case.pad)
            out.backward(tdout)

        candidates["torch fwd"] = torch_forward
        candidates["torch f+b"] = torch_forward_backward
    return candidates, naive_forward_backward


def avg_pool_candidates(case: PoolCase, dtype: np.dtype, torch, rng: np.random.Generator):
    """The callables timed for one average-pooling case, and the naive forward+backward."""
    x = rng.standard_normal(case.x_shape).astype(dtype)
    pool_param = {"pool_height": case.window, "pool_width": case.window, "stride": case.stride}
    out, _ = avg_pool_forward_fast(x, pool_param)
    dout = rng.standard_normal(out.shape).astype(dtype)

    def fast_forward_backward() -> None:
        _, cache = avg_pool_forward_fast(x, pool_param)
        avg_pool_backward_fast(dout, cache)

    def naive_forward_backward() -> None:
        _, cache = avg_pool_forward_naive(x, pool_param)
        avg_pool_backward_naive(dout, cache)

    candidates = {"fast f+b": fast_forward_backward, "copy x": x.copy}
    if torch is not None:
        import torch.nn.functional as functional

        tx = torch.from_numpy(x).requires_grad_()
        tdout = torch.from_numpy(dout)

        def torch_forward_backward() -> None:
            functional.avg_pool2d(tx, case.window, case.stride).backward(tdout)

        candidates["torch f+b"] = torch_forward_backward
    return candidates, naive_forward_backward


def peak_extra_mib(case: ConvCase, batch: int, dtype: np.dtype) -> tuple[float, float]:
    """Peak memory of a fast conv forward+backward beyond its inputs, in MiB.

    Returns the peak of all allocations, and the part of it beyond the output and the
    three gradients the call must return anyway.
    """
    rng = np.random.default_rng(0)
    shape = (batch, *case.x_shape[1:])
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(case.w_shape).astype(dtype)
    b = np.zeros(case.w_shape[0], dtype=dtype)
    conv_param = {"stride": case.stride, "pad": case.pad}
    out_h, out_w = case.out_hw()
    dout = np.ones((batch, case.w_shape[0], out_h, out_w), dtype=dtype)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    out, cache = conv_forward_fast(x, w, b, conv_param)
    dx, dw, db = conv_backward_fast(dout, cache)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    necessary = out.nbytes + dx.nbytes + dw.nbytes + db.nbytes
    return (peak - base) / 2**20, (peak - base - necessary) / 2**20
