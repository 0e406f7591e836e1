"""Winograd convolution F(m x m, 3x3): 3x3 filters, stride 1, dilation 1, any padding.

A direct 3x3 convolution spends 9 multiplies on each output per input channel. Winograd's
minimal filtering (Lavin & Gray 2016) computes an m x m block of outputs from an
alpha x alpha input tile (alpha = m + 2) with alpha^2 multiplies::

    y = A^T [ (G g G^T) .* (B^T d B) ] A

F(2x2, 3x3) does 16 multiplies where direct convolution does 36 (2.25x fewer), F(4x4,
3x3) 36 instead of 144 (4x fewer). Summed over input channels, the elementwise products
become alpha^2 independent GEMMs ``(tiles x C) @ (C x F)``, run by numpy's BLAS, between
compiled transforms (:mod:`convnet._winograd`). The gradients reuse the same pieces:

- dX is itself a stride-1 3x3 convolution of dout, padded by ``2 - pad``, with the
  flipped, transposed filters;
- dW accumulates, per xi, transformed dout tiles ``A dy A^T`` times transformed input
  tiles ``B^T d B``, then one inverse transform ``G^T dU G``.

The transforms trade multiplies for additions and scale values up (by up to 8 in
F(4x4)), so rounding errors grow: measured float32 errors, relative to the largest
output, are in ``docs/winograd.md``. NaN and infinity spread over whole tiles in Winograd's
transforms, beyond the outputs they touch; so each function returns ``None`` when any
value it produced is not finite, and the caller recomputes that call by im2col, whose
results keep every NaN where it belongs. Work goes over the batch in chunks of images
whose transformed tiles fit a byte budget, one worker thread per group of images.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

import numpy as np

from convnet._parallel import map_groups

TILE_SIZES = (2, 4)
MIN_CHUNK_TILES = 128
Result = TypeVar("Result")

# (B^T, G, A^T) of F(m x m, 3x3) from Lavin & Gray 2016: interpolation points 0, 1, -1 and
# infinity for m = 2; 0, 1, -1, 2, -2 and infinity for m = 4. The compiled transforms
# hard-code the same numbers (_winograd_tiles_impl.h); the tests check both against
# direct correlation.
_MATRICES = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}


def transform_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of F(m x m, 3x3), float64, shapes (alpha, alpha), (alpha, 3), (m, alpha)."""
    b_t, g, a_t = _MATRICES[m]
    return np.array(b_t, dtype=float), np.array(g, dtype=float), np.array(a_t, dtype=float)


def _filter_matrix(m: int) -> np.ndarray:
    """kron(G, G): row (k, l), column (a, b) holds G[k, a] * G[l, b], shape (alpha^2, 9)."""
    _, g, _ = transform_matrices(m)
    return np.kron(g, g)


def filter_transform(w: np.ndarray, m: int, dtype: np.dtype) -> np.ndarray:
    """Transformed filters ``u[xi, c, f] = (G w[f, c] G^T)[xi]``, computed in ``dtype``.

    Parameters
    ----------
    w : ndarray, shape (F, C, 3, 3)
    m : int
        Output tile size, 2 or 4.
    dtype : dtype of the result.

    Returns
    -------
    u : ndarray, shape (alpha^2, C, F), C-contiguous
    """
    filters, channels = w.shape[:2]
    by_channel = np.ascontiguousarray(w.transpose(1, 0, 2, 3), dtype=dtype)
    flat = _filter_matrix(m).astype(dtype) @ by_channel.reshape(channels * filters, 9).T
    return flat.reshape((m + 2) ** 2, channels, filters)


def flipped_filter_transform(w: np.ndarray, m: int, dtype: np.dtype) -> np.ndarray:
    """The filters of the input gradient's convolution, transformed:
    ``u[xi, f, c] = (G w[f, c, ::-1, ::-1] G^T)[xi]``.

    Flipping a 3x3 filter reverses its 9 values, so this is ``kron(G, G)`` with its
    columns reversed, applied to ``w`` as it lies.

    Parameters
    ----------
    w : ndarray, shape (F, C, 3, 3)
    m : int
    dtype : dtype of the result.

    Returns
    -------
    u : ndarray, shape (alpha^2, F, C), C-contiguous
    """
    filters, channels = w.shape[:2]
    flat_w = w.astype(dtype, copy=False).reshape(filters * channels, 9)
    flat = _filter_matrix(m)[:, ::-1].astype(dtype) @ flat_w.T
    return flat.reshape((m + 2) ** 2, filters, channels)


def filter_gradient(du: np.ndarray, m: int) -> np.ndarray:
    """The filter gradient ``dw[f, c] = G^T du[:, f, c] G`` from the transformed gradient.

    Parameters
    ----------
    du : ndarray, shape (alpha^2, F, C)

    Returns
    -------
    dw : ndarray, shape (F, C, 3, 3), du's dtype
    """
    alpha2, filters, channels = du.shape
    flat = du.reshape(alpha2, filters * channels).T @ _filter_matrix(m).astype(du.dtype)
    return flat.reshape(filters, channels, 3, 3)


def _tiles(size: int, m: int) -> int:
    return -(-size // m)


class _Workspace:
    """One worker's scratch: flat buffers reshaped for each chunk of images."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape))
        buffer = self.buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self.buffers[name] = np.empty(size, dtype=self.dtype)
        return buffer[:size].reshape(shape)

    def planes(self, name: str, alpha2: int, count: int, width: int) -> np.ndarray:
        """An (alpha2, rows, width) array for ``count`` tiles, ``rows`` = ``count`` rounded
        up to an odd number: the transforms write (or read) all alpha2 planes of a tile at
        once, and planes a multiple of 4 KiB apart would all map to the same L1 cache sets
        (measured: 32x32 images with 16 channels, whose planes are, transformed at half
        the speed of 34x34 ones). The tiles are ``[:, :count]``."""
        return self.get(name, (alpha2, count | 1, width))


def _quiet(work: Callable[[int, int], Result]) -> Callable[[int, int], Result]:
    """Run a worker's share without floating-point warnings (numpy keeps one error state
    per thread): values that are not finite make the call fall back to im2col, which
    warns as it always does."""

    @functools.wraps(work)
    def quiet_work(start: int, stop: int) -> Result:
        with np.errstate(all="ignore"):
            return work(start, stop)

    return quiet_work


def images_per_chunk(
    tiles_per_image: int,
    bytes_per_image: int,
    chunk_bytes: int,
    max_chunk_bytes: int,
    min_tiles: int = MIN_CHUNK_TILES,
) -> int:
    """Images per chunk: enough for ``chunk_bytes`` and for ``min_tiles`` tiles (the GEMMs'
    rows, or their inner dimension for dW: with fewer, moving the (alpha^2, C, F)
    filter-sized arrays dominates the GEMMs), but at most ``max_chunk_bytes`` worth, and
    at least one image."""
    per_image = max(1, bytes_per_image)
    wanted = max(chunk_bytes // per_image, -(-min_tiles // max(1, tiles_per_image)))
    return max(1, min(wanted, max_chunk_bytes // per_image))


def _chunks(start: int, stop: int, per_chunk: int) -> list[tuple[int, int]]:
    return [(first, min(stop, first + per_chunk)) for first in range(start, stop, per_chunk)]


def forward(
    kernel: ModuleType,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    pad: tuple[int, int],
    m: int,
    chunk_bytes: int,
    max_chunk_bytes: int,
    max_groups: int | None,
) -> np.ndarray | None:
    """Convolution of ``x`` with 3x3 filters ``w``, stride 1, by Winograd F(m x m, 3x3).

    Parameters
    ----------
    kernel : module
        The compiled :mod:`convnet._winograd`.
    x : ndarray, shape (N, C, H, W), C-contiguous
    w : ndarray, shape (F, C, 3, 3)
    b : ndarray, shape (F,), of x's dtype
    pad : (pad_h, pad_w)
        Zero padding; may be negative (the input is then cropped).
    m : int
        Output tile size, 2 or 4.
    chunk_bytes, max_chunk_bytes : int
        Target and bound, in bytes, of one worker's chunk of transformed tiles (see
        :func:`images_per_chunk`).
    max_groups : int or None
        At most this many worker groups (None: one per thread).

    Returns
    -------
    out : ndarray, shape (N, F, H + 2*pad_h - 2, W + 2*pad_w - 2), or None
        None if some output is not finite (the caller recomputes the call another way).
    """
    num, channels, height, width = x.shape
    filters = w.shape[0]
    alpha2 = (m + 2) ** 2
    out_h, out_w = height + 2 * pad[0] - 2, width + 2 * pad[1] - 2
    tiles_h, tiles_w = _tiles(out_h, m), _tiles(out_w, m)
    tiles = tiles_h * tiles_w
    u = filter_transform(w, m, x.dtype)
    out = np.empty((num, filters, out_h, out_w), dtype=x.dtype)
    scratch_size = ((tiles_h * m + 2) * (tiles_w * m + 2) + alpha2) * max(channels, filters)
    per_chunk = images_per_chunk(
        tiles, alpha2 * tiles * (channels + filters) * x.itemsize, chunk_bytes, max_chunk_bytes
    )

    @_quiet
    def forward_group(start: int, stop: int) -> bool:
        space = _Workspace(x.dtype)
        scratch = space.get("scratch", (scratch_size,))
        finite = True
        for first, last in _chunks(start, stop, per_chunk):
            count = (last - first) * tiles
            v = space.planes("v", alpha2, count, channels)
            kernel.transform_tiles(x[first:last], v, scratch, m, tiles_h, tiles_w, *pad, False)
            products = space.planes("m", alpha2, count, filters)
            np.matmul(v[:, :count], u, out=products[:, :count])
            finite &= kernel.untransform_tiles(
                products, out[first:last], b, scratch, m, tiles_h, tiles_w
            )
        return finite

    return out if all(map_groups(forward_group, num, max_groups)) else None


def backward(
    kernel: ModuleType,
    dout: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    pad: tuple[int, int],
    m: int,
    chunk_bytes: int,
    max_chunk_bytes: int,
    max_groups: int | None,
    compute_dx: bool,
) -> tuple[np.ndarray | None, np.ndarray] | None:
    """Gradients (dx, dw) of :func:`forward` by Winograd F(m x m, 3x3).

    Parameters
    ----------
    kernel, pad, m, chunk_bytes, max_chunk_bytes, max_groups
        As in :func:`forward`.
    dout : ndarray, shape (N, F, H_out, W_out), C-contiguous, x's dtype
    x : ndarray, shape (N, C, H, W), C-contiguous
    w : ndarray, shape (F, C, 3, 3)
    compute_dx : bool
        False skips the input gradient (dx is then None).

    Returns
    -------
    (dx, dw) or None
        dx (N, C, H, W) or None, dw (F, C, 3, 3); None if some value is not finite.
    """
    num, channels, height, width = x.shape
    filters, out_h, out_w = dout.shape[1:]
    alpha2 = (m + 2) ** 2
    dtype = x.dtype
    tiles_h, tiles_w = _tiles(out_h, m), _tiles(out_w, m)
    tiles = tiles_h * tiles_w
    dx_tiles_h, dx_tiles_w = _tiles(height, m), _tiles(width, m)
    dx_tiles = dx_tiles_h * dx_tiles_w if compute_dx else 0
    flipped = flipped_filter_transform(w, m, dtype) if compute_dx else None
    dx = np.empty(x.shape, dtype=dtype) if compute_dx else None
    no_bias = np.zeros(channels, dtype=dtype)
    dx_pad = (2 - pad[0], 2 - pad[1])
    most_tiles = max(tiles_h, dx_tiles_h) * m + 2, max(tiles_w, dx_tiles_w) * m + 2
    scratch_size = (most_tiles[0] * most_tiles[1] + alpha2) * max(channels, filters)
    per_image = alpha2 * (tiles + dx_tiles) * (channels + filters) * dtype.itemsize
    # dW's GEMMs sum over the chunk's tiles into an (alpha^2, F, C) array: with as many tiles
    # as filters and channels together, writing that array costs less than the product.
    min_tiles = max(MIN_CHUNK_TILES, channels + filters)
    per_chunk = images_per_chunk(tiles, per_image, chunk_bytes, max_chunk_bytes, min_tiles)

    @_quiet
    def backward_group(start: int, stop: int) -> tuple[np.ndarray, bool]:
        space = _Workspace(dtype)
        scratch = space.get("scratch", (scratch_size,))
        du = np.empty((alpha2, filters, channels), dtype=dtype)
        du_chunk = None
        finite = True
        for first, last in _chunks(start, stop, per_chunk):
            count = (last - first) * tiles
            v = space.planes("v", alpha2, count, channels)
            kernel.transform_tiles(x[first:last], v, scratch, m, tiles_h, tiles_w, *pad, False)
            dv = space.planes("dv", alpha2, count, filters)
            kernel.transform_tiles(dout[first:last], dv, scratch, m, tiles_h, tiles_w, 0, 0, True)
            gradient_tiles = dv[:, :count].transpose(0, 2, 1)
            if first == start:
                np.matmul(gradient_tiles, v[:, :count], out=du)
            else:
                du_chunk = np.matmul(gradient_tiles, v[:, :count], out=du_chunk)
                du += du_chunk
            if dx is None:
                continue
            count = (last - first) * dx_tiles
            v = space.planes("v", alpha2, count, filters)
            kernel.transform_tiles(
                dout[first:last], v, scratch, m, dx_tiles_h, dx_tiles_w, *dx_pad, False
            )
            products = space.planes("dv", alpha2, count, channels)
            np.matmul(v[:, :count], flipped, out=products[:, :count])
            finite &= kernel.untransform_tiles(
                products, dx[first:last], no_bias, scratch, m, dx_tiles_h, dx_tiles_w
            )
        return du, finite

    du = np.zeros((alpha2, filters, channels), dtype=dtype)
    for du_group, finite in map_groups(backward_group, num, max_groups):
        if not finite:
            return None
        du += du_group
    with np.errstate(all="ignore"):
        dw = filter_gradient(du, m)
    return (dx, dw) if np.isfinite(dw).all() else None
