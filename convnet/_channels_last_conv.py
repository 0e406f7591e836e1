"""Convolution of channels-last float32 images: fused Winograd F(4x4, 3x3), or im2col with
pixel-major rows.

Every array here is NHWC, (N, H, W, C) C-contiguous, and every pass is one call into the
compiled kernels (:mod:`convnet._channels_last`), which split it over their own threads
(``parts`` shares; see ``_cl_threads.h``):

- **Winograd** (3x3 filters, stride 1, no dilation or groups): a block of tiles is
  transformed, multiplied by the transformed filters and transformed back while it is in
  cache, one share of the tiles per thread. The input gradient is the same pass on dout
  with the flipped, transposed filters and the padding ``2 - pad``; the filter gradient
  adds up per share in the transformed domain and is transformed back once.
- **direct**: the same products as im2col's, reading each output pixel's kh*kw*C values
  in place from a zero-padded copy of the band of input rows its band of output rows
  needs (a filter row's kw taps are kw*C adjacent values there), so no column matrix is
  written (dilation 1 along the width); the input gradient goes through the columns as in
  im2col.
- **im2col**: one row of kh*kw*C values per output pixel, multiplied by the filters
  arranged (kh*kw*C, F), chunk by chunk of rows, so the output rows are NHWC as they come
  out. A 1x1 convolution with stride 1 and no padding uses x's own rows.

Each share's workspace stays under its part of the convolution's byte budget
(:func:`convnet.fast_layers.set_workspace_limit`), so memory does not grow with the batch.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from convnet._conv_work import chunk_bytes
from convnet._validation import ConvGeometry

WINOGRAD_BLOCK_BYTES = 2**18
# The filter gradient adds each block's products into its share's transformed gradient
# (36 x C x F): larger blocks read and write that sum fewer times (measured: 16 to 64
# channels 10-40% faster with 1 MiB blocks than with 256 KiB; the forward pass is not).
WINOGRAD_GRADIENT_BLOCK_BYTES = 2**20
IM2COL_CHUNK_BYTES = 2**19
DIRECT_BAND_PIXELS = 128
DIRECT_BAND_BYTES = 2**18
MIN_WINOGRAD_BLOCK = 16
_LANES = 16


def _lanes(count: int) -> int:
    """``count`` rounded up to whole vectors of 16 floats (rows of the transformed arrays)."""
    return -(-count // _LANES) * _LANES


def _winograd_workspace(
    kernel: ModuleType,
    in_channels: int,
    out_channels: int,
    parts: int,
    block_bytes: int = WINOGRAD_BLOCK_BYTES,
) -> tuple[np.ndarray, int]:
    """The workspace of ``parts`` shares and the tiles per block: a block's transformed
    tiles and products fit ``block_bytes`` (``WINOGRAD_BLOCK_BYTES``, about half of a
    core's L2 cache, unless given) and the share of the workspace limit, but hold at least
    ``MIN_WINOGRAD_BLOCK`` tiles."""
    per_tile = kernel.winograd_workspace(in_channels, out_channels, 1) * 4
    block = max(MIN_WINOGRAD_BLOCK, chunk_bytes(block_bytes) // per_tile)
    size = parts * kernel.winograd_workspace(in_channels, out_channels, block)
    return np.empty(size, dtype=np.float32), block


def _float32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def winograd_forward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    pad: tuple[int, int],
    parts: int,
) -> np.ndarray | None:
    """The convolution of NHWC ``x`` with 3x3 filters ``w`` (F, C, 3, 3), plus ``b``.

    Returns
    -------
    ndarray, shape (N, H + 2 pad_h - 2, W + 2 pad_w - 2, F), or None
        None when some output is not finite (Winograd's transforms spread a NaN or an
        infinity over whole tiles: the caller computes the call again by im2col).
    """
    num, height, width, channels = x.shape
    filters = w.shape[0]
    u = np.empty((36, channels, _lanes(filters)), dtype=np.float32)
    taps = _float32(w.transpose(1, 2, 3, 0)).reshape(channels, 9, filters)
    kernel.winograd_filters(taps, u, False)
    out = np.empty((num, height + 2 * pad[0] - 2, width + 2 * pad[1] - 2, filters), np.float32)
    bias = None if b is None else _float32(b)
    work, block = _winograd_workspace(kernel, channels, filters, parts)
    return out if kernel.winograd4_forward(x, u, bias, out, *pad, work, block, parts) else None


def winograd_backward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    dout: np.ndarray,
    pad: tuple[int, int],
    compute_dx: bool,
    parts: int,
) -> tuple[np.ndarray | None, np.ndarray] | None:
    """The gradients of :func:`winograd_forward` for NHWC ``dout``.

    Returns
    -------
    (dx, dw) or None
        dx NHWC like x (None without ``compute_dx``), dw (F, C, 3, 3); None when some
        value is not finite.
    """
    channels, filters = x.shape[3], w.shape[0]
    dx = None
    if compute_dx:
        flipped = np.empty((36, filters, _lanes(channels)), dtype=np.float32)
        taps = _float32(w.transpose(0, 2, 3, 1)).reshape(filters, 9, channels)
        kernel.winograd_filters(taps, flipped, True)
        dx = np.empty(x.shape, dtype=np.float32)
        work, block = _winograd_workspace(kernel, filters, channels, parts)
        if not kernel.winograd4_forward(
            dout, flipped, None, dx, 2 - pad[0], 2 - pad[1], work, block, parts
        ):
            return None
    du = np.empty((parts, 36, channels, _lanes(filters)), dtype=np.float32)
    work, block = _winograd_workspace(
        kernel, channels, filters, parts, WINOGRAD_GRADIENT_BLOCK_BYTES
    )
    kernel.winograd4_filter_gradient(x, dout, du, *pad, work, block, parts)
    taps = np.empty((channels, 9, filters), dtype=np.float32)
    kernel.winograd_filter_gradient(du[0], taps)
    dw = np.ascontiguousarray(taps.transpose(2, 0, 1)).reshape(w.shape)
    return (dx, dw) if np.isfinite(dw).all() else None


def _taps(w_shape: tuple[int, ...], geo: ConvGeometry) -> tuple[int, ...]:
    """(kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w), as the compiled im2col takes them."""
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
    """The column buffers of ``parts`` shares and their rows: at most
    ``IM2COL_CHUNK_BYTES`` (and the share of the workspace limit), at least one row."""
    rows = max(1, chunk_bytes(IM2COL_CHUNK_BYTES) // (4 * depth))
    return np.empty(parts * kernel.conv_workspace(depth, rows), np.float32), rows


def im2col_forward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    geo: ConvGeometry,
    parts: int,
) -> np.ndarray:
    """The convolution of NHWC ``x`` with filters ``w`` (F, C, kh, kw) plus ``b``: NHWC
    (N, out_h, out_w, F)."""
    filters = w.shape[0]
    wk = _float32(w.transpose(2, 3, 1, 0)).reshape(-1, filters)
    out = np.empty((x.shape[0], geo.out_h, geo.out_w, filters), dtype=np.float32)
    bias = None if b is None else _float32(b)
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
    """The gradients of :func:`im2col_forward`: dx NHWC (None without ``compute_dx``)
    and dw (F, C, kh, kw)."""
    filters, channels, kh, kw = w.shape
    depth = kh * kw * channels
    taps = _taps(w.shape, geo)
    work, rows = _im2col_workspace(kernel, depth, parts)
    dx = _input_gradient(kernel, x.shape, w, dout, taps, work, rows, parts) if compute_dx else None
    dwk = np.zeros((parts, depth, filters), dtype=np.float32)
    kernel.conv_filter_gradient(x, dout, dwk, taps, work, rows, parts)
    return dx, _filters(dwk[0], w.shape)


def _input_gradient(
    kernel: ModuleType,
    x_shape: tuple[int, ...],
    w: np.ndarray,
    dout: np.ndarray,
    taps: tuple[int, ...],
    work: np.ndarray,
    rows: int,
    parts: int,
) -> np.ndarray:
    """dx (NHWC, ``x_shape``) through the columns and col2im, in the column buffers
    ``work`` of ``rows`` rows (:func:`_im2col_workspace`)."""
    filters = w.shape[0]
    wt = _float32(w.transpose(0, 2, 3, 1)).reshape(filters, -1)
    dx = np.empty(x_shape, dtype=np.float32)
    kernel.conv_input_gradient(dout, wt, dx, taps, work, rows, parts)
    return dx


def _filters(columns: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
    """Filters (F, C, kh, kw) from their (kh * kw * C, F) column layout."""
    filters, channels, kh, kw = w_shape
    return np.ascontiguousarray(columns.reshape(kh, kw, channels, filters).transpose(3, 2, 0, 1))


def bias_gradient(kernel: ModuleType, dout: np.ndarray, parts: int) -> np.ndarray:
    """Sum of NHWC ``dout`` over images and pixels, per channel: (F,) float32."""
    sums = np.zeros((parts, 2, dout.shape[3]))
    rows = dout.reshape(-1, dout.shape[3])
    kernel.shifted_column_sums(rows, np.zeros(rows.shape[1], np.float32), sums, parts)
    return sums[:, 0].sum(axis=0).astype(np.float32)


def _direct_bands(
    kernel: ModuleType, x_shape: tuple[int, ...], taps: tuple[int, ...], parts: int
) -> tuple[np.ndarray, int]:
    """The band buffers of ``parts`` shares and their output rows: about
    ``DIRECT_BAND_PIXELS`` output pixels a band (a band of dy stays in cache through the
    filter gradient's products), fewer when the band's input rows would outgrow the
    share of the workspace limit, at least one row."""
    out_h, out_w = taps[-2:]
    rows = max(1, min(out_h, -(-DIRECT_BAND_PIXELS // out_w)))
    while rows > 1 and 4 * kernel.direct_workspace(*x_shape[2:], taps, rows) > chunk_bytes(
        DIRECT_BAND_BYTES
    ):
        rows //= 2
    size = parts * kernel.direct_workspace(*x_shape[2:], taps, rows)
    return np.empty(size, dtype=np.float32), rows


def direct_forward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    geo: ConvGeometry,
    parts: int,
) -> np.ndarray:
    """The convolution of NHWC ``x`` with ``w`` (F, C, kh, kw) plus ``b``, its columns read
    in place from zero-padded bands of input rows: NHWC (N, out_h, out_w, F)."""
    filters = w.shape[0]
    wk = _float32(w.transpose(2, 3, 1, 0)).reshape(-1, filters)
    out = np.empty((x.shape[0], geo.out_h, geo.out_w, filters), dtype=np.float32)
    bias = None if b is None else _float32(b)
    taps = _taps(w.shape, geo)
    work, rows = _direct_bands(kernel, x.shape, taps, parts)
    kernel.conv_direct_forward(x, wk, bias, out, taps, work, rows, parts)
    return out


def direct_backward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    dout: np.ndarray,
    geo: ConvGeometry,
    compute_dx: bool,
    compute_db: bool,
    parts: int,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """The gradients of :func:`direct_forward`: dw read in place like the forward pass
    (and db in the same pass over dout, unless ``compute_db`` is False), dx (None without
    ``compute_dx``) through the columns and col2im."""
    filters, channels, kh, kw = w.shape
    depth = kh * kw * channels
    taps = _taps(w.shape, geo)
    dx = None
    if compute_dx:
        work, rows = _im2col_workspace(kernel, depth, parts)
        dx = _input_gradient(kernel, x.shape, w, dout, taps, work, rows, parts)
    dwk = np.empty((parts, depth, filters), dtype=np.float32)
    db = np.zeros((parts, filters)) if compute_db else None
    work, rows = _direct_bands(kernel, x.shape, taps, parts)
    kernel.conv_direct_filter_gradient(x, dout, dwk, db, taps, work, rows, parts)
    dw = _filters(dwk[0], w.shape)
    return dx, dw, None if db is None else db.sum(axis=0).astype(np.float32)
