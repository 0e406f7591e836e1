"""Convolution of channels-last float32 images: fused Winograd F(4x4, 3x3) or im2col + GEMM.

The arrays here are NHWC: (N, H, W, C) C-contiguous, a pixel's channels adjacent. Two
algorithms, both on one worker thread per core, each worker on its own images:

- **Winograd** (3x3 filters, stride 1, no dilation or groups): the compiled kernel
  (:mod:`convnet._channels_last`) transforms a block of tiles, multiplies them by the
  transformed filters and transforms the products back while the block is in cache. The
  input gradient is the same kernel run on dout with the flipped, transposed filters and
  the padding ``2 - pad``; the filter gradient accumulates per worker in the transformed
  domain and is transformed back once.
- **im2col**: rows of ``kh*kw*C`` values per output pixel (a filter row's taps are one
  contiguous run of the input), multiplied by the filters as (kh*kw*C, F) with numpy's
  BLAS, chunk by chunk so the columns stay within a byte budget. A 1x1 convolution with
  stride 1 and no padding multiplies x itself.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from convnet import winograd
from convnet._validation import ConvGeometry

WINOGRAD_BLOCK_BYTES = 2**18
IM2COL_CHUNK_BYTES = 2**19
_LANES = 16


def _round_up(count: int) -> int:
    return -(-count // _LANES) * _LANES


def _padded_columns(matrix: np.ndarray, width: int) -> np.ndarray:
    """(36, K, n) float32 -> (36, K, width) with zero columns beyond n."""
    out = np.zeros((*matrix.shape[:2], width), dtype=np.float32)
    out[:, :, : matrix.shape[2]] = matrix
    return out


def _winograd_block(in_channels: int, out_channels: int) -> int:
    """Tiles per block: the block's transformed tiles and products fit WINOGRAD_BLOCK_BYTES."""
    per_tile = 36 * 4 * (_round_up(in_channels) + _round_up(out_channels))
    return max(16, WINOGRAD_BLOCK_BYTES // per_tile)


def _workspace(kernel: ModuleType, in_channels: int, out_channels: int, parts: int):
    block = _winograd_block(in_channels, out_channels)
    size = parts * kernel.winograd_workspace(in_channels, out_channels, block)
    return np.empty(size, dtype=np.float32), block


def winograd_forward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    pad: tuple[int, int],
    parts: int,
) -> np.ndarray | None:
    """NHWC output (N, H + 2 pad_h - 2, W + 2 pad_w - 2, F) of NHWC ``x`` and filters
    ``w`` (F, C, 3, 3), or None if some output is not finite."""
    num, height, width, channels = x.shape
    filters = w.shape[0]
    u = np.empty((36, channels, _round_up(filters)), np.float32)
    kernel.winograd_filters(np.ascontiguousarray(w, dtype=np.float32), u, False)
    out = np.empty((num, height + 2 * pad[0] - 2, width + 2 * pad[1] - 2, filters), np.float32)
    bias = None if b is None else np.ascontiguousarray(b, dtype=np.float32)
    work, block = _workspace(kernel, channels, filters, parts)
    finite = kernel.winograd4_forward(x, u, bias, out, *pad, work, block, parts)
    return out if finite else None


def winograd_backward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    dout: np.ndarray,
    pad: tuple[int, int],
    compute_dx: bool,
    parts: int,
) -> tuple[np.ndarray | None, np.ndarray] | None:
    """(dx NHWC or None, dw (F, C, 3, 3)) of :func:`winograd_forward`, or None if some
    value is not finite."""
    num, height, width, channels = x.shape
    filters = w.shape[0]
    dx = None
    if compute_dx:
        flipped = np.empty((36, filters, _round_up(channels)), np.float32)
        kernel.winograd_filters(np.ascontiguousarray(w, dtype=np.float32), flipped, True)
        dx = np.empty(x.shape, dtype=np.float32)
        work, block = _workspace(kernel, filters, channels, parts)
        if not kernel.winograd4_forward(
            dout, flipped, None, dx, 2 - pad[0], 2 - pad[1], work, block, parts
        ):
            return None
    du = np.zeros((parts, 36, channels, _round_up(filters)), dtype=np.float32)
    work, block = _workspace(kernel, channels, filters, parts)
    kernel.winograd4_filter_gradient(x, dout, du, *pad, work, block, parts)
    dw = np.empty(w.shape, np.float32)
    kernel.winograd_filter_gradient(du[0], dw)
    return (dx, dw) if np.isfinite(dw).all() else None


def _taps(w_shape: tuple[int, ...], geo: ConvGeometry) -> tuple[int, ...]:
    """(kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w) as the compiled im2col takes them."""
    return (
        *w_shape[2:],
        geo.stride_h,
        geo.stride_w,
        geo.pad_h,
        geo.pad_w,
        geo.dilation_h,
        geo.dilation_w,
        geo.out_h,
        geo.out_w,
    )


def _im2col_workspace(kernel: ModuleType, depth: int, parts: int) -> tuple[np.ndarray, int]:
    rows = max(1, IM2COL_CHUNK_BYTES // (4 * depth))
    return np.empty(parts * kernel.conv_workspace(depth, rows), np.float32), rows


def im2col_forward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    geo: ConvGeometry,
    parts: int,
) -> np.ndarray:
    """NHWC output (N, out_h, out_w, F) of NHWC ``x`` by im2col and GEMM."""
    filters = w.shape[0]
    wk = np.ascontiguousarray(w.transpose(2, 3, 1, 0), dtype=np.float32).reshape(-1, filters)
    out = np.empty((x.shape[0], geo.out_h, geo.out_w, filters), dtype=np.float32)
    bias = None if b is None else np.ascontiguousarray(b, dtype=np.float32)
    work, rows = _im2col_workspace(kernel, wk.shape[0], parts)
    kernel.conv_forward(x, wk, bias, out, _taps(w.shape, geo), work, rows, parts)
    return out


def im2col_backward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    dout: np.ndarray,
    geo: ConvGeometry,
    compute_dx: bool,
    parts: int,
) -> tuple[np.ndarray | None, np.ndarray]:
    """(dx NHWC or None, dw (F, C, kh, kw)) of :func:`im2col_forward`."""
    filters, channels, kh, kw = w.shape
    depth = kh * kw * channels
    taps = _taps(w.shape, geo)
    work, rows = _im2col_workspace(kernel, depth, parts)
    dx = None
    if compute_dx:
        wt = np.ascontiguousarray(w.transpose(0, 2, 3, 1), dtype=np.float32).reshape(filters, -1)
        dx = np.empty(x.shape, dtype=np.float32)
        kernel.conv_input_gradient(dout, wt, dx, taps, work, rows, parts)
    dwk = np.zeros((parts, depth, filters), dtype=np.float32)
    kernel.conv_filter_gradient(x, dout, dwk, taps, work, rows, parts)
    dw = dwk[0].reshape(kh, kw, channels, filters).transpose(3, 2, 0, 1)
    return dx, np.ascontiguousarray(dw)
