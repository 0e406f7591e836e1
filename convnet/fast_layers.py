"""Fast convolution and max pooling: validate in Python, then compiled kernel + BLAS GEMM.

The convolution copies receptive fields into a column matrix (im2col) and multiplies it by
the filters with numpy's BLAS. One worker per core (:mod:`convnet._parallel`) takes a
contiguous group of images and works through it in cache-sized chunks whose workspace
stays under a byte budget (:func:`set_workspace_limit`), so memory does not grow with the
batch beyond the output and gradients themselves. A 1x1 convolution with stride 1 and no padding
needs no im2col at all.

Without the compiled kernel every function falls back to the naive layers of
:mod:`convnet.layers` and warns once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from convnet import _backend, winograd
from convnet._parallel import get_num_threads, map_groups
from convnet._validation import (
    ConvGeometry,
    PoolGeometry,
    check_affine_arrays,
    check_affine_cache,
    check_conv_arrays,
    check_conv_cache,
    check_dout,
    check_float_array,
    check_pool_cache,
    common_dtype,
    conv_algorithm,
    pool_geometry,
)
from convnet.layers import (
    ConvCache,
    PoolCache,
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)

DEFAULT_WORKSPACE_BYTES = 64 * 2**20
CHUNK_TARGET_BYTES = 2**20
SMALL_CONV_MULTIPLY_ADDS = 2**22
SMALL_POOL_ELEMENTS = 2**16
SMALL_VECTORIZED_POOL_ELEMENTS = 2**21
SMALL_GEMM = 2**20
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_PIXELS = 256
WINOGRAD_MIN_PIXEL_CHANNELS = 2**14
# The weight gradient's GEMMs sum over the tiles of a chunk into an (alpha^2, F, C) array:
# larger chunks than the forward pass's make them longer and the sums fewer (measured).
WINOGRAD_BACKWARD_CHUNK_BYTES = 4 * 2**20
_workspace_bytes = DEFAULT_WORKSPACE_BYTES


def set_workspace_limit(nbytes: int) -> int:
    """Bound the chunks a convolution call works in; return the previous bound.

    Parameters
    ----------
    nbytes : int
        Bytes for the column matrices of all worker threads together. Each worker
        processes chunks of as many images as fit in its share (and in the cache-sized
        ``CHUNK_TARGET_BYTES``); one image always fits, whatever its size. Beyond the
        chunks a call allocates only its outputs, its gradients and two (F, C*HH*WW)
        dW arrays per worker.
    """
    global _workspace_bytes
    if isinstance(nbytes, (bool, np.bool_)) or not isinstance(nbytes, numbers.Integral):
        raise TypeError(f"workspace limit must be an int of bytes, got {nbytes!r}")
    if nbytes < 1:
        raise ValueError(f"workspace limit must be at least 1 byte, got {nbytes}")
    previous, _workspace_bytes = _workspace_bytes, int(nbytes)
    return previous


def get_workspace_limit() -> int:
    """The current scratch-memory bound of one convolution call, in bytes."""
    return _workspace_bytes


def _images_per_chunk(bytes_per_image: int) -> int:
    return max(1, _chunk_bytes() // max(1, bytes_per_image))


def _worker_count(amount: int, small: int) -> int | None:
    """One worker for a call too small (``amount < small``) to repay handing out work."""
    return 1 if amount < small else None


def _small_pool(geo: PoolGeometry) -> int:
    """Input size below which a pool runs on the calling thread alone.

    The 2x2 stride-2 loop is vectorized and memory-bound in both dtypes: one thread is
    faster up to a few MiB (measured). Other windows do several times more work per
    element, so a second thread repays itself sooner.
    """
    if geo[:4] == (2, 2, 2, 2):
        return SMALL_VECTORIZED_POOL_ELEMENTS
    return SMALL_POOL_ELEMENTS


def _winograd_tile(geo: ConvGeometry) -> int:
    """The Winograd output tile needing the fewest multiplies, edge tiles' waste included;
    a tie goes to 2x2, the more accurate."""

    def multiplies(m: int) -> int:
        return (m + 2) ** 2 * -(-geo.out_h // m) * -(-geo.out_w // m)

    return min(winograd.TILE_SIZES, key=multiplies)


def _winograd_applies(w_shape: tuple[int, ...], geo: ConvGeometry) -> bool:
    return w_shape[2:] == (3, 3) and (geo.stride_h, geo.stride_w) == (1, 1)


def _auto_prefers_winograd(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> bool:
    """The measured rule of ``algorithm='auto'`` for a convolution Winograd can do.

    Winograd needs at least ``WINOGRAD_MIN_CHANNELS`` input channels and filters (with
    fewer its transforms cost more than the multiplies they save), and enough output
    pixels in the batch to repay its per-call work (transforming the filters):
    ``WINOGRAD_MIN_PIXEL_CHANNELS / min(C, F)`` and at least ``WINOGRAD_MIN_PIXELS``.
    ``python benchmarks/bench_algorithms.py`` prints the measurements behind both.
    """
    narrowest = min(x_shape[1], w_shape[0])
    pixels = x_shape[0] * geo.out_h * geo.out_w
    return narrowest >= WINOGRAD_MIN_CHANNELS and pixels >= max(
        WINOGRAD_MIN_PIXELS, WINOGRAD_MIN_PIXEL_CHANNELS // narrowest
    )


def conv_algorithm_choice(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], conv_param: dict
) -> tuple[str, int]:
    """The algorithm :func:`conv_forward_fast` runs for these shapes and parameters.

    Parameters
    ----------
    x_shape : (N, C, H, W)
    w_shape : (F, C, HH, WW)
    conv_param : dict
        As for :func:`conv_forward_fast`, including the optional ``'algorithm'``:
        ``'im2col'``, ``'winograd'`` (3x3 filters with stride 1 only: anything else is a
        ``ValueError``) or ``'auto'`` (the default: Winograd where it applies and the
        measured rule of ``_auto_prefers_winograd`` expects it to be faster).

    Returns
    -------
    (name, tile) : ('im2col', 0) or ('winograd', m) for Winograd F(m x m, 3x3)
    """
    x = np.empty(x_shape, dtype=np.float32)
    w = np.empty(w_shape, dtype=np.float32)
    _, _, _, geo = check_conv_arrays(x, w, np.empty(w_shape[0], dtype=np.float32), conv_param)
    return _choose_algorithm(conv_algorithm(conv_param), x_shape, w_shape, geo)


def _choose_algorithm(
    requested: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> tuple[str, int]:
    applies = _winograd_applies(w_shape, geo)
    if requested == "winograd":
        if not applies:
            raise ValueError(
                "algorithm 'winograd' needs 3x3 filters and stride 1, got filters "
                f"{w_shape[2]}x{w_shape[3]} and stride ({geo.stride_h}, {geo.stride_w}); "
                "use 'auto' or 'im2col'"
            )
        if _backend.winograd_kernel is None:
            raise ValueError("algorithm 'winograd' needs the compiled kernel convnet._winograd")
        return "winograd", _winograd_tile(geo)
    if (
        requested == "auto"
        and applies
        and _backend.winograd_kernel is not None
        and _auto_prefers_winograd(x_shape, w_shape, geo)
    ):
        return "winograd", _winograd_tile(geo)
    return "im2col", 0


def _chunk_bytes(target: int = CHUNK_TARGET_BYTES) -> int:
    """One worker's share of the workspace, at most ``target``."""
    return min(target, _workspace_bytes // get_num_threads())


def _conv_workers(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> int | None:
    work = x_shape[0] * w_shape[0] * math.prod(w_shape[1:]) * geo.out_h * geo.out_w
    return _worker_count(work, SMALL_CONV_MULTIPLY_ADDS)


class _Columns:
    """The im2col columns of a convolution, chunk by chunk: (count, C*HH*WW, out_h*out_w).

    A 1x1 convolution with stride 1 and no padding needs no im2col: x itself is its
    columns, and its input gradient needs no col2im.
    """

    def __init__(
        self, kernel: ModuleType, x_c: np.ndarray, w: np.ndarray, geo: ConvGeometry
    ) -> None:
        self.kernel = kernel
        self.x_c = x_c
        self.depth = x_c.shape[1] * w.shape[2] * w.shape[3]
        self.pixels = geo.out_h * geo.out_w
        self.pointwise = w.shape[2:] == (1, 1) and geo[:4] == (1, 1, 0, 0)
        self.kernel_args = (w.shape[2], w.shape[3], *geo)
        self.per_chunk = _images_per_chunk(self.depth * self.pixels * x_c.itemsize)

    def worker_count(self, num_filters: int) -> int | None:
        """One worker for a convolution too small to repay handing out work."""
        work = self.x_c.shape[0] * num_filters * self.depth * self.pixels
        return _worker_count(work, SMALL_CONV_MULTIPLY_ADDS)

    def chunks(self, start: int, stop: int) -> Iterator[tuple[int, int]]:
        """Consecutive (first, last) chunks of images in ``range(start, stop)``."""
        for first in range(start, stop, self.per_chunk):
            yield first, min(stop, first + self.per_chunk)

    def buffer(self, images: int) -> np.ndarray:
        """Scratch for the columns of one chunk of a group of ``images`` images."""
        count = 0 if self.pointwise else min(self.per_chunk, images)
        return np.empty(count * self.depth * self.pixels, dtype=self.x_c.dtype)

    def fill(self, buffer: np.ndarray, first: int, last: int) -> np.ndarray:
        """The columns of images ``first:last``, written into ``buffer`` if need be."""
        shape = (last - first, self.depth, self.pixels)
        if self.pointwise:
            return self.x_c[first:last].reshape(shape)
        cols = buffer[: math.prod(shape)].reshape(shape)
        self.kernel.im2col(self.x_c[first:last], cols, *self.kernel_args)
        return cols

    def add_input_gradient(
        self,
        w_rows: np.ndarray,
        dout_chunk: np.ndarray,
        cols: np.ndarray,
        dx: np.ndarray,
        first: int,
        last: int,
    ) -> None:
        """Add to ``dx[first:last]`` the gradient ``w_rows.T @ dout_chunk`` in columns.

        ``cols`` (this chunk's columns, no longer needed) holds the product before col2im;
        a pointwise convolution writes it straight into ``dx`` (its columns are x).
        """
        if self.pointwise:
            np.matmul(w_rows.T, dout_chunk, out=dx[first:last].reshape(cols.shape))
        else:
            np.matmul(w_rows.T, dout_chunk, out=cols)
            self.kernel.col2im(cols, dx[first:last], *self.kernel_args)


def conv_forward_fast(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> tuple[np.ndarray, ConvCache]:
    """Convolution by im2col and GEMM on cache-sized chunks of images, one worker per core.

    Computes what :func:`convnet.layers.conv_forward_naive` computes. Each chunk's
    columns are multiplied by the filters (numpy's BLAS) and written straight into the
    NCHW output; a 1x1 convolution with stride 1 and no padding multiplies ``x`` itself.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'``: int or pair (sh, sw), >= 1; ``'pad'``: int or pair (ph, pw), >= 0.

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = (H + 2*ph - HH) // sh + 1``, ``W_out = (W + 2*pw - WW) // sw + 1``;
        float64 if any input is float64, else float32.
    cache : ConvCache
        For :func:`conv_backward_fast` (or :func:`convnet.layers.conv_backward_naive`).
    """
    x, w, b, geo = check_conv_arrays(x, w, b, conv_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return conv_forward_naive(x, w, b, conv_param)
    requested = conv_algorithm(conv_param)
    dtype = common_dtype(x, w, b)
    cache = ConvCache(x, w, b, geo, requested)
    algorithm, tile = _choose_algorithm(requested, x.shape, w.shape, geo)
    if algorithm == "winograd":
        out = winograd.forward(
            _backend.winograd_kernel,
            np.ascontiguousarray(x, dtype=dtype),
            w.astype(dtype, copy=False),
            b.astype(dtype, copy=False),
            (geo.pad_h, geo.pad_w),
            tile,
            _chunk_bytes(),
            _chunk_bytes(_workspace_bytes),
            _conv_workers(x.shape, w.shape, geo),
        )
        if out is not None:
            return out, cache
    num, num_filters = x.shape[0], w.shape[0]
    columns = _Columns(kernel, np.ascontiguousarray(x, dtype=dtype), w, geo)
    w_rows = np.ascontiguousarray(w, dtype=dtype).reshape(num_filters, columns.depth)
    bias = b.astype(dtype, copy=False)[:, None]
    out = np.empty((num, num_filters, geo.out_h, geo.out_w), dtype=dtype)
    out_rows = out.reshape(num, num_filters, columns.pixels)

    def forward_group(start: int, stop: int) -> None:
        buffer = columns.buffer(stop - start)
        for first, last in columns.chunks(start, stop):
            out_chunk = out_rows[first:last]
            np.matmul(w_rows, columns.fill(buffer, first, last), out=out_chunk)
            out_chunk += bias

    map_groups(forward_group, num, columns.worker_count(num_filters))
    return out, cache


def conv_backward_fast(
    dout: np.ndarray, cache: ConvCache, *, compute_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of a convolution: dW by GEMM with the columns, dX by GEMM and col2im.

    The columns are recomputed chunk by chunk rather than kept from the forward pass,
    so memory stays bounded. Results are deterministic for a given thread count and
    workspace limit.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
        Upstream gradient.
    cache : ConvCache
        From :func:`conv_forward_fast` or :func:`convnet.layers.conv_forward_naive`.
    compute_dx : bool, default True
        Pass ``False`` when nobody needs the input gradient (the first layer of a
        network): ``dx`` is then ``None`` and its GEMM and col2im are skipped.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), or None if ``compute_dx`` is False
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    x, w, b, geo, requested = check_conv_cache(cache)
    num, num_filters = x.shape[0], w.shape[0]
    dout = check_dout(dout, (num, num_filters, geo.out_h, geo.out_w))
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        dx, dw, db = conv_backward_naive(dout, cache)
        return (dx if compute_dx else None), dw, db
    dtype = common_dtype(x, w, b, dout)
    algorithm, tile = _choose_algorithm(requested, x.shape, w.shape, geo)
    if algorithm == "winograd":
        dout_c = np.ascontiguousarray(dout, dtype=dtype)
        gradients = winograd.backward(
            _backend.winograd_kernel,
            dout_c,
            np.ascontiguousarray(x, dtype=dtype),
            w.astype(dtype, copy=False),
            (geo.pad_h, geo.pad_w),
            tile,
            _chunk_bytes(WINOGRAD_BACKWARD_CHUNK_BYTES),
            _chunk_bytes(_workspace_bytes),
            _conv_workers(x.shape, w.shape, geo),
            compute_dx,
        )
        if gradients is not None:
            return gradients[0], gradients[1], dout_c.sum(axis=(0, 2, 3))
    columns = _Columns(kernel, np.ascontiguousarray(x, dtype=dtype), w, geo)
    depth = columns.depth
    w_rows = np.ascontiguousarray(w, dtype=dtype).reshape(num_filters, depth)
    dout_rows = np.ascontiguousarray(dout, dtype=dtype).reshape(num, num_filters, columns.pixels)
    dx = np.zeros(x.shape, dtype=dtype) if compute_dx else None

    def backward_group(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        dw_by_column = np.zeros((depth, num_filters), dtype=dtype)
        buffer = columns.buffer(stop - start)
        for first, last in columns.chunks(start, stop):
            cols = columns.fill(buffer, first, last)
            dout_chunk = dout_rows[first:last]
            for image_cols, image_dout in zip(cols, dout_chunk, strict=True):
                dw_by_column += image_cols @ image_dout.T
            if dx is not None:
                columns.add_input_gradient(w_rows, dout_chunk, cols, dx, first, last)
        return dw_by_column, dout_rows[start:stop].sum(axis=(0, 2))

    dw_by_column = np.zeros((depth, num_filters), dtype=dtype)
    db = np.zeros(num_filters, dtype=dtype)
    for dw_group, db_group in map_groups(backward_group, num, columns.worker_count(num_filters)):
        dw_by_column += dw_group
        db += db_group
    dw = np.ascontiguousarray(dw_by_column.T).reshape(w.shape)
    return dx, dw, db


def affine_forward_fast(
    x: np.ndarray, w: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fully connected layer ``out = x.reshape(N, D) @ w + b``, rows split over the workers.

    Computes what :func:`convnet.layers.affine_forward` computes, with the same cache.
    Each worker multiplies its block of rows with single-threaded BLAS, so a network's
    affine layers keep to the same threads as its convolutions.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), with D = d_1 * ... * d_k
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (x, w, b)
    """
    x, w, b = check_affine_arrays(x, w, b)
    dtype = common_dtype(x, w, b)
    rows = x.reshape(x.shape[0], w.shape[0]).astype(dtype, copy=False)
    w_c = w.astype(dtype, copy=False)
    out = np.empty((x.shape[0], w.shape[1]), dtype=dtype)

    def forward_group(start: int, stop: int) -> None:
        np.matmul(rows[start:stop], w_c, out=out[start:stop])

    map_groups(forward_group, x.shape[0], _worker_count(rows.size * w.shape[1], SMALL_GEMM))
    out += b
    return out, (x, w, b)


def affine_backward_fast(
    dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of an affine layer; the dx and dw GEMMs run on two workers at once.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : tuple (x, w, b)
        From :func:`affine_forward_fast` or :func:`convnet.layers.affine_forward`.

    Returns
    -------
    dx : ndarray, shape of x
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)
    """
    x, w, b = check_affine_cache(cache)
    dout = check_dout(dout, (x.shape[0], w.shape[1]))
    dtype = common_dtype(x, w, b, dout)
    rows = x.reshape(x.shape[0], w.shape[0]).astype(dtype, copy=False)
    dout = dout.astype(dtype, copy=False)
    w_c = w.astype(dtype, copy=False)
    products = (lambda: dout @ w_c.T, lambda: rows.T @ dout)

    def backward_group(start: int, stop: int) -> list[np.ndarray]:
        return [product() for product in products[start:stop]]

    groups = map_groups(backward_group, 2, _worker_count(rows.size * w.shape[1], SMALL_GEMM))
    dx, dw = (gradient for group in groups for gradient in group)
    return dx.reshape(x.shape), dw, dout.sum(axis=0)


def max_pool_forward_fast(x: np.ndarray, pool_param: dict) -> tuple[np.ndarray, PoolCache]:
    """Max pooling with the compiled kernel, for any window and stride.

    Computes exactly what :func:`convnet.layers.max_pool_forward_naive` computes and
    remembers each window's first maximum for the backward pass.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    pool_param : dict
        ``'pool_height'``, ``'pool_width'``: ints >= 1; ``'stride'``: int or pair, >= 1.

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
        ``H_out = (H - pool_height) // sh + 1``, ``W_out = (W - pool_width) // sw + 1``.
    cache : PoolCache
    """
    x = check_float_array(x, "x")
    geo = pool_geometry(x, pool_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return max_pool_forward_naive(x, pool_param)
    num, channels, height, width = x.shape
    if height * width > np.iinfo(np.intc).max:
        raise ValueError(f"an input plane of {height}x{width} is too large to pool")
    out = np.empty((num, channels, geo.out_h, geo.out_w), dtype=x.dtype)
    argmax = np.empty(out.shape, dtype=np.intc)
    x_c = np.ascontiguousarray(x)
    window = (geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w)

    def forward_group(start: int, stop: int) -> None:
        kernel.max_pool_forward(x_c[start:stop], out[start:stop], argmax[start:stop], *window)

    map_groups(forward_group, num, _worker_count(x.size, _small_pool(geo)))
    return out, PoolCache(x, geo, argmax)


def max_pool_backward_fast(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Gradient of max pooling: each window's gradient goes to its first maximum.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache
        From :func:`max_pool_forward_fast` or :func:`convnet.layers.max_pool_forward_naive`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x, geo, argmax = check_pool_cache(cache)
    dout = check_dout(dout, (x.shape[0], x.shape[1], geo.out_h, geo.out_w))
    kernel = _backend.kernel
    if kernel is None or argmax is None:
        _backend.warn_if_naive()
        return max_pool_backward_naive(dout, cache)
    if argmax.shape != dout.shape or argmax.dtype != np.intc or not argmax.flags.c_contiguous:
        raise ValueError(
            f"the pooling cache's argmax (shape {argmax.shape}, dtype {argmax.dtype}) does not "
            f"belong to a forward pass with output shape {dout.shape}"
        )
    dtype = common_dtype(x, dout)
    dx = np.empty(x.shape, dtype=dtype)
    dout_c = np.ascontiguousarray(dout, dtype=dtype)

    def backward_group(start: int, stop: int) -> None:
        kernel.max_pool_backward(dout_c[start:stop], argmax[start:stop], dx[start:stop])

    map_groups(backward_group, x.shape[0], _worker_count(x.size, _small_pool(geo)))
    return dx
