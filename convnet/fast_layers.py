"""Fast convolution (dilated, grouped, transposed), max and average pooling: validate in
Python, then compiled kernel + BLAS GEMM.

The convolution copies receptive fields into a column matrix (im2col) and multiplies it by
the filters with numpy's BLAS, one GEMM per group. One worker per core
(:mod:`convnet._parallel`) takes a contiguous group of images and works through it in
cache-sized chunks whose workspace stays under a byte budget (:func:`set_workspace_limit`),
so memory does not grow with the batch beyond the output and gradients themselves. A 1x1
convolution with stride 1 and no padding needs no im2col at all; a depthwise convolution
(one input channel per group) runs compiled direct loops. A transposed convolution is the
convolution's input-gradient pass, and its backward pass the convolution's forward and
filter-gradient passes, on the same code.

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
from convnet._parallel import blas_on_one_thread, get_num_threads, map_groups
from convnet._validation import (
    ConvGeometry,
    PoolGeometry,
    check_affine_arrays,
    check_affine_cache,
    check_allocation,
    check_avg_pool_cache,
    check_conv_arrays,
    check_conv_cache,
    check_conv_transpose_arrays,
    check_conv_transpose_backward,
    check_dout,
    check_float_array,
    check_pool_cache,
    common_dtype,
    conv_algorithm,
    pool_geometry,
)
from convnet.layers import (
    ConvCache,
    ConvTransposeCache,
    PoolCache,
    avg_pool_backward_naive,
    avg_pool_forward_naive,
    conv_backward_naive,
    conv_forward_naive,
    conv_transpose_backward_naive,
    conv_transpose_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)

DEFAULT_WORKSPACE_BYTES = 64 * 2**20
CHUNK_TARGET_BYTES = 2**20
SMALL_CONV_MULTIPLY_ADDS = 2**22
SMALL_POOL_ELEMENTS = 2**16
SMALL_VECTORIZED_POOL_ELEMENTS = 2**21
SMALL_GEMM = 2**20
SMALL_PHASE_COPY_ELEMENTS = 2**18
DEPTHWISE_SCRATCH_RATIO = 4
SMALL_DEPTHWISE_SCRATCH = 2**16
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_PIXELS = 256
WINOGRAD_MIN_PIXEL_CHANNELS = 2**14
WINOGRAD_MIN_PIXELS_PER_CHANNEL = 2
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
    return (
        w_shape[2:] == (3, 3)
        and (geo.stride_h, geo.stride_w) == (1, 1)
        and (geo.dilation_h, geo.dilation_w, geo.groups) == (1, 1, 1)
    )


def _auto_prefers_winograd(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> bool:
    """The measured rule of ``algorithm='auto'`` for a convolution Winograd can do.

    Winograd needs at least ``WINOGRAD_MIN_CHANNELS`` input channels and filters (with
    fewer its transforms cost more than the multiplies they save), and enough output
    pixels in the batch to repay its per-call work (transforming the filters):
    ``WINOGRAD_MIN_PIXEL_CHANNELS / min(C, F)``, at least ``WINOGRAD_MIN_PIXELS``, and
    for wide layers ``WINOGRAD_MIN_PIXELS_PER_CHANNEL * min(C, F)`` (their transformed
    filters, 4 times the filters' size, outgrow the caches: 256 channels broke even at
    300-400 pixels, 512 at about 480). ``python benchmarks/bench_algorithms.py`` prints
    the measurements behind the rule (``--by-batch`` the batch-size table).
    """
    narrowest = min(x_shape[1], w_shape[0])
    pixels = x_shape[0] * geo.out_h * geo.out_w
    return narrowest >= WINOGRAD_MIN_CHANNELS and pixels >= max(
        WINOGRAD_MIN_PIXELS,
        WINOGRAD_MIN_PIXEL_CHANNELS // narrowest,
        WINOGRAD_MIN_PIXELS_PER_CHANNEL * narrowest,
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
    (name, tile) : ('im2col', 0); ('direct', 0), a grouped convolution with one input
        channel per group (depthwise), run by a compiled direct loop; ('winograd', m) for
        Winograd F(m x m, 3x3); or ('winograd-phases', m), a dilated 3x3 stride-1
        convolution run, under ``'auto'``, as Winograd F(m x m, 3x3) on the phases of its
        input (see ``_phases``).
    """
    # Validation needs arrays of these shapes, not their memory: zero-stride views.
    x, w, b = (np.broadcast_to(np.float32(0), shape) for shape in (x_shape, w_shape, w_shape[:1]))
    _, _, _, geo = check_conv_arrays(x, w, b, conv_param)
    requested = conv_algorithm(conv_param)
    choice = _choose_algorithm(requested, x_shape, w_shape, geo)
    if _depthwise(x_shape, w_shape, geo):
        return "direct", 0
    dilation = _phases(requested, x_shape, w_shape, geo) if choice[0] == "im2col" else 0
    if not dilation:
        return choice
    phase_geo = ConvGeometry(1, 1, 0, 0, geo.out_h // dilation, geo.out_w // dilation)
    return "winograd-phases", _winograd_tile(phase_geo)


def _choose_algorithm(
    requested: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> tuple[str, int]:
    applies = _winograd_applies(w_shape, geo)
    if requested == "winograd":
        if not applies:
            raise ValueError(
                "algorithm 'winograd' needs 3x3 filters and stride 1 (dilation 1, groups 1), "
                f"got filters {w_shape[2]}x{w_shape[3]}, stride ({geo.stride_h}, "
                f"{geo.stride_w}), dilation ({geo.dilation_h}, {geo.dilation_w}) and groups "
                f"{geo.groups}; use 'auto' or 'im2col'"
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


def _channel_sums(images: np.ndarray) -> np.ndarray:
    """``images.sum(axis=(0, 2, 3))`` of a contiguous (N, C, H, W) array, the bias gradient:
    each plane summed by one matrix-vector product with ones (numpy's reduction over the
    outer axes is 5x slower: 0.19 -> 0.035 ms on (64,64,16,16) float32). A NaN reaches
    only its own channel's sum."""
    num, channels, height, width = images.shape
    ones = np.ones(height * width, dtype=images.dtype)
    planes = images.reshape(num * channels, height * width) @ ones
    return planes.reshape(num, channels).sum(axis=0)


class _Columns:
    """The im2col columns of a convolution, chunk by chunk: (count, groups, C*HH*WW //
    groups, out_h*out_w); group g's rows are the contiguous block of its channels.

    A 1x1 convolution with stride 1 and no padding needs no im2col: x itself is its
    columns, and its input gradient needs no col2im. ``x_c`` may be None when only the
    input gradient is wanted (the columns are then never filled).
    """

    def __init__(
        self,
        kernel: ModuleType,
        x_shape: tuple[int, ...],
        dtype: np.dtype,
        w_shape: tuple[int, ...],
        geo: ConvGeometry,
        x_c: np.ndarray | None = None,
    ) -> None:
        self.kernel = kernel
        self.x_c = x_c
        self.num = x_shape[0]
        self.groups = geo.groups
        self.rows = x_shape[1] * w_shape[2] * w_shape[3]
        self.depth = self.rows // geo.groups
        self.pixels = geo.out_h * geo.out_w
        self.pointwise = (
            w_shape[2:] == (1, 1)
            and geo[:4] == (1, 1, 0, 0)
            and (geo.out_h, geo.out_w) == tuple(x_shape[2:])
        )
        self.kernel_args = (
            w_shape[2],
            w_shape[3],
            geo.stride_h,
            geo.stride_w,
            geo.pad_h,
            geo.pad_w,
            geo.out_h,
            geo.out_w,
            geo.dilation_h,
            geo.dilation_w,
        )
        self.per_chunk = _images_per_chunk(self.rows * self.pixels * np.dtype(dtype).itemsize)
        self.dtype = dtype

    def check_image_fits(self) -> None:
        """Refuse (``ValueError``) columns of one image (the smallest chunk) that no
        allocation here could hold, before any worker starts."""
        if not self.pointwise:
            check_allocation(
                (self.rows, self.pixels), self.dtype, "the im2col columns of one image"
            )

    def worker_count(self, num_filters: int) -> int | None:
        """One worker for a convolution too small to repay handing out work."""
        work = self.num * num_filters * self.depth * self.pixels
        return _worker_count(work, SMALL_CONV_MULTIPLY_ADDS)

    def chunks(self, start: int, stop: int) -> Iterator[tuple[int, int]]:
        """Consecutive (first, last) chunks of images in ``range(start, stop)``."""
        for first in range(start, stop, self.per_chunk):
            yield first, min(stop, first + self.per_chunk)

    def buffer(self, images: int) -> np.ndarray:
        """Scratch for the columns of one chunk of a group of ``images`` images."""
        count = 0 if self.pointwise else min(self.per_chunk, images)
        return np.empty(count * self.rows * self.pixels, dtype=self.dtype)

    def _shape(self, first: int, last: int) -> tuple[int, int, int, int]:
        return (last - first, self.groups, self.depth, self.pixels)

    def fill(self, buffer: np.ndarray, first: int, last: int) -> np.ndarray:
        """The columns of images ``first:last``, written into ``buffer`` if need be."""
        shape = self._shape(first, last)
        if self.pointwise:
            return self.x_c[first:last].reshape(shape)
        cols = buffer[: math.prod(shape)].reshape(shape)
        self.kernel.im2col(
            self.x_c[first:last], cols.reshape(shape[0], self.rows, shape[3]), *self.kernel_args
        )
        return cols

    def add_input_gradient(
        self,
        w_groups: np.ndarray,
        dout_chunk: np.ndarray,
        buffer: np.ndarray,
        dx: np.ndarray,
        first: int,
        last: int,
    ) -> None:
        """Add to ``dx[first:last]`` the gradient ``w_groups^T @ dout_chunk`` per group.

        ``buffer`` (this chunk's columns, no longer needed) holds the product before
        col2im; a pointwise convolution writes it straight into ``dx`` (its columns are x).
        """
        shape = self._shape(first, last)
        w_t = w_groups.transpose(0, 2, 1)
        if self.pointwise:
            np.matmul(w_t, dout_chunk, out=dx[first:last].reshape(shape))
        else:
            cols = buffer[: math.prod(shape)].reshape(shape)
            np.matmul(w_t, dout_chunk, out=cols)
            self.kernel.col2im(
                cols.reshape(shape[0], self.rows, shape[3]), dx[first:last], *self.kernel_args
            )


def _depthwise_scratch(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> int:
    """Values of scratch the compiled depthwise loops allocate (``_FlatPlanes`` in
    ``_im2col.pyx``: a zero-padded plane, a flat output plane and a shifted gradient
    plane), computed here with Python's integers, which cannot overflow."""
    kernel_h, kernel_w = w_shape[2:]
    padded_width = x_shape[3] + 2 * geo.pad_w
    padded = (x_shape[2] + 2 * geo.pad_h) * padded_width + geo.dilation_w * (kernel_w - 1) + 1
    flat_out = geo.out_h * padded_width + 1
    max_shift = (kernel_h - 1) * geo.dilation_h * padded_width + (kernel_w - 1) * geo.dilation_w
    return 2 * padded + max_shift + flat_out


def _depthwise(x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry) -> bool:
    """A grouped convolution with one input channel per group runs straight from x, by
    loops over zero-padded copies of whole planes; unless those copies would be more
    than ``DEPTHWISE_SCRATCH_RATIO`` times the input and output planes (pads far beyond
    the image, up to 2**31 - 1 by the rules): im2col, whose padding is virtual, runs
    those."""
    if not (geo.groups > 1 and w_shape[1] == 1):
        return False
    planes = x_shape[2] * x_shape[3] + geo.out_h * geo.out_w
    bound = DEPTHWISE_SCRATCH_RATIO * planes + SMALL_DEPTHWISE_SCRATCH
    return _depthwise_scratch(x_shape, w_shape, geo) <= bound


def _depthwise_args(geo: ConvGeometry) -> tuple[int, ...]:
    return geo.stride_h, geo.stride_w, geo.pad_h, geo.pad_w, geo.dilation_h, geo.dilation_w


def _correlate(
    kernel: ModuleType,
    x_c: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    geo: ConvGeometry,
    upstream: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The convolution of contiguous ``x_c`` with ``w`` (plus ``b`` if given), in x_c's
    dtype; and, given an ``upstream`` gradient of the output's shape, the filter gradient
    for it from the same columns (a transposed convolution's backward pass needs both).

    Im2col and one GEMM per group on cache-sized chunks of images; with one input
    channel per group, the compiled depthwise loops.
    """
    dtype = x_c.dtype
    num, num_filters = x_c.shape[0], w.shape[0]
    out = np.empty((num, num_filters, geo.out_h, geo.out_w), dtype=dtype)
    bias = np.zeros(num_filters, dtype) if b is None else b.astype(dtype, copy=False)
    columns = _Columns(kernel, x_c.shape, dtype, w.shape, geo, x_c)
    workers = columns.worker_count(num_filters)
    if _depthwise(x_c.shape, w.shape, geo):
        w_taps = np.ascontiguousarray(w, dtype=dtype).reshape(num_filters, *w.shape[2:])
        bias_c = np.ascontiguousarray(bias)

        def depthwise_group(start: int, stop: int) -> np.ndarray | None:
            kernel.depthwise_forward(
                x_c[start:stop], w_taps, bias_c, out[start:stop], *_depthwise_args(geo)
            )
            if upstream is None:
                return None
            dw_taps = np.zeros(w_taps.shape, dtype=dtype)
            kernel.depthwise_backward_weight(
                x_c[start:stop], upstream[start:stop], dw_taps, *_depthwise_args(geo)
            )
            return dw_taps

        parts = map_groups(depthwise_group, num, workers)
        if upstream is None:
            return out, None
        return out, sum(parts, np.zeros(w_taps.shape, dtype=dtype)).reshape(w.shape)
    columns.check_image_fits()
    per_group = num_filters // geo.groups
    w_groups = np.ascontiguousarray(w, dtype=dtype).reshape(geo.groups, per_group, columns.depth)
    out_rows = out.reshape(num, geo.groups, per_group, columns.pixels)
    bias_rows = bias.reshape(geo.groups, per_group, 1)
    upstream_rows = None
    if upstream is not None:
        upstream_rows = upstream.reshape(out_rows.shape)

    def forward_group(start: int, stop: int) -> np.ndarray:
        dw_by_column = np.zeros((geo.groups, columns.depth, per_group), dtype=dtype)
        buffer = columns.buffer(stop - start)
        for first, last in columns.chunks(start, stop):
            out_chunk = out_rows[first:last]
            cols = columns.fill(buffer, first, last)
            np.matmul(w_groups, cols, out=out_chunk)
            if b is not None:
                out_chunk += bias_rows
            if upstream_rows is not None:
                for image_cols, image_up in zip(cols, upstream_rows[first:last], strict=True):
                    dw_by_column += np.matmul(image_cols, image_up.transpose(0, 2, 1))
        return dw_by_column

    parts = map_groups(forward_group, num, workers)
    if upstream is None:
        return out, None
    dw_by_column = sum(parts, np.zeros((geo.groups, columns.depth, per_group), dtype=dtype))
    return out, np.ascontiguousarray(dw_by_column.transpose(0, 2, 1)).reshape(w.shape)


def _conv_gradients(
    kernel: ModuleType,
    geo: ConvGeometry,
    x_shape: tuple[int, ...],
    x_c: np.ndarray | None,
    w: np.ndarray,
    dout_c: np.ndarray,
    *,
    compute_dx: bool,
    compute_dw: bool,
    compute_db: bool = True,
    dx_bias: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """A convolution's gradients dx (shape ``x_shape``), dw and db from contiguous
    ``dout_c``; ``x_c`` (contiguous, dout's dtype) is needed only for dw.

    dW is a GEMM per group with the columns, recomputed chunk by chunk rather than kept
    from the forward pass, so memory stays bounded; dX is a GEMM per group and col2im,
    plus ``dx_bias`` (C,) if given (a transposed convolution's bias); db is None without
    ``compute_db`` (a transposed convolution's forward pass). Each worker zeroes and
    finishes its own images of dx. Deterministic for a given thread count and
    workspace limit.
    """
    dtype = dout_c.dtype
    num, num_filters = x_shape[0], w.shape[0]
    columns = _Columns(kernel, x_shape, dtype, w.shape, geo, x_c)
    dx = np.empty(x_shape, dtype=dtype) if compute_dx else None
    bias_planes = None if dx_bias is None else dx_bias.astype(dtype)[:, None, None]
    if _depthwise(x_shape, w.shape, geo):
        w_taps = np.ascontiguousarray(w, dtype=dtype).reshape(num_filters, *w.shape[2:])
        finite = bool(np.isfinite(w_taps).all())

        def depthwise_group(start: int, stop: int) -> tuple[np.ndarray | None, np.ndarray]:
            dw_taps = None
            if compute_dw:
                dw_taps = np.zeros(w_taps.shape, dtype=dtype)
                kernel.depthwise_backward_weight(
                    x_c[start:stop], dout_c[start:stop], dw_taps, *_depthwise_args(geo)
                )
            if dx is not None:
                kernel.depthwise_backward_input(
                    dout_c[start:stop], w_taps, dx[start:stop], *_depthwise_args(geo), finite
                )
                if bias_planes is not None:
                    dx[start:stop] += bias_planes
            return dw_taps, _channel_sums(dout_c[start:stop]) if compute_db else None

        results = map_groups(depthwise_group, num, columns.worker_count(num_filters))
        db = np.zeros(num_filters, dtype=dtype) if compute_db else None
        dw = np.zeros(w_taps.shape, dtype=dtype) if compute_dw else None
        for dw_group, db_group in results:
            if db is not None:
                db += db_group
            if dw is not None:
                dw += dw_group
        return dx, (None if dw is None else dw.reshape(w.shape)), db

    columns.check_image_fits()
    per_group = num_filters // geo.groups
    w_groups = np.ascontiguousarray(w, dtype=dtype).reshape(geo.groups, per_group, columns.depth)
    dout_rows = dout_c.reshape(num, geo.groups, per_group, columns.pixels)

    def backward_group(start: int, stop: int) -> tuple[np.ndarray | None, np.ndarray]:
        dw_by_column = np.zeros((geo.groups, columns.depth, w_groups.shape[1]), dtype=dtype)
        buffer = columns.buffer(stop - start)
        if dx is not None:
            dx[start:stop] = 0
        for first, last in columns.chunks(start, stop):
            dout_chunk = dout_rows[first:last]
            if compute_dw:
                cols = columns.fill(buffer, first, last)
                for image_cols, image_dout in zip(cols, dout_chunk, strict=True):
                    dw_by_column += np.matmul(image_cols, image_dout.transpose(0, 2, 1))
            if dx is not None:
                columns.add_input_gradient(w_groups, dout_chunk, buffer, dx, first, last)
        if bias_planes is not None:
            dx[start:stop] += bias_planes
        return dw_by_column, _channel_sums(dout_c[start:stop]) if compute_db else None

    dw_by_column = np.zeros((geo.groups, columns.depth, w_groups.shape[1]), dtype=dtype)
    db = np.zeros(num_filters, dtype=dtype) if compute_db else None
    for dw_group, db_group in map_groups(backward_group, num, columns.worker_count(num_filters)):
        dw_by_column += dw_group
        if db is not None:
            db += db_group
    dw = np.ascontiguousarray(dw_by_column.transpose(0, 2, 1)).reshape(w.shape)
    return dx, (dw if compute_dw else None), db


def _phases(
    requested: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> int:
    """The dilation d when a dilated 3x3 stride-1 convolution runs as Winograd on its d*d
    phases (else 0).

    With stride 1, output (d*i + r, d*j + s) reads only padded input (d*(i+a) + r,
    d*(j+e) + s): each of the d*d phases of the padded input, convolved with the
    undilated filters, gives one phase of the output. When the phases have one shape they
    run as one batch of d*d*N images (see :func:`_phase_pads` for their two layouts;
    measured on (32,64,16,16), dilation 2, one thread: 18.7 -> 12.6 ms forward +
    backward). Only under ``algorithm='auto'``, where its rule picks Winograd.
    """
    dilation = geo.dilation_h
    padded_h, padded_w = x_shape[2] + 2 * geo.pad_h, x_shape[3] + 2 * geo.pad_w
    if (
        requested != "auto"
        or dilation == 1
        or geo.dilation_w != dilation
        or (geo.stride_h, geo.stride_w, geo.groups) != (1, 1, 1)
        or w_shape[2:] != (3, 3)
        or (
            _phase_pads(x_shape, geo, dilation) is None
            and (padded_h % dilation or padded_w % dilation)
        )
        or _backend.winograd_kernel is None
    ):
        return 0
    phase_geo = ConvGeometry(1, 1, 0, 0, geo.out_h // dilation, geo.out_w // dilation)
    stacked = (x_shape[0] * dilation**2, x_shape[1], padded_h // dilation, padded_w // dilation)
    return dilation if _auto_prefers_winograd(stacked, w_shape, phase_geo) else 0


def _phase_pads(
    x_shape: tuple[int, ...], geo: ConvGeometry, dilation: int
) -> tuple[int, int] | None:
    """The padding of the phase convolution when its phases come from x itself, else None.

    When x's height and width and both pads are multiples of d, phase (r, s) of the
    padded input is phase (r, s) of x padded by pad / d: the phases are taken from x and
    the Winograd convolution pads them, so its input gradient is x's phases themselves
    (no cropping) and covers fewer tiles (on (32,64,16,16) with dilation 2 and pad 2, 4
    instead of 9 per phase). Otherwise the phases are those of the zero-padded input,
    convolved without padding.
    """
    sizes = (x_shape[2], x_shape[3], geo.pad_h, geo.pad_w)
    if any(size % dilation for size in sizes):
        return None
    return geo.pad_h // dilation, geo.pad_w // dilation


def _split_phases(images: np.ndarray, dilation: int) -> np.ndarray:
    """(N, C, d*h, d*w) -> (d*d*N, C, h, w): phase (r, s) of image n at (r*d + s)*N + n.

    ``images`` is contiguous; the compiled copy runs on the workers, images split.
    """
    num, channels, height, width = images.shape
    phases = np.empty(
        (dilation**2 * num, channels, height // dilation, width // dilation), images.dtype
    )

    def split_group(start: int, stop: int) -> None:
        _backend.kernel.split_phases(images, phases, dilation, start, stop)

    map_groups(split_group, num, _worker_count(images.size, SMALL_PHASE_COPY_ELEMENTS))
    return phases


def _merge_phases(stacked: np.ndarray, dilation: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_split_phases`: a new array of ``shape`` (N, C, d*h, d*w)."""
    stacked_c = np.ascontiguousarray(stacked)
    out = np.empty(shape, dtype=stacked.dtype)

    def merge_group(start: int, stop: int) -> None:
        _backend.kernel.merge_phases(stacked_c, out, dilation, start, stop)

    map_groups(merge_group, shape[0], _worker_count(stacked.size, SMALL_PHASE_COPY_ELEMENTS))
    return out


def _phase_input(
    x_c: np.ndarray, geo: ConvGeometry, dilation: int
) -> tuple[np.ndarray, ConvGeometry, bool]:
    """The stacked phases of a dilated convolution, the geometry of their undilated
    convolution, and whether the phases are x's own (else the padded input's)."""
    out_h, out_w = geo.out_h // dilation, geo.out_w // dilation
    pads = _phase_pads(x_c.shape, geo, dilation)
    if pads is not None:
        return _split_phases(x_c, dilation), ConvGeometry(1, 1, *pads, out_h, out_w), True
    padded = np.pad(x_c, ((0, 0), (0, 0), (geo.pad_h,) * 2, (geo.pad_w,) * 2))
    return _split_phases(padded, dilation), ConvGeometry(1, 1, 0, 0, out_h, out_w), False


@blas_on_one_thread
def conv_forward_fast(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> tuple[np.ndarray, ConvCache]:
    """Convolution by im2col and GEMM on cache-sized chunks of images, one worker per core.

    Computes what :func:`convnet.layers.conv_forward_naive` computes, dilation and groups
    included. Each chunk's columns are multiplied by each group's filters (numpy's BLAS)
    and written straight into the NCHW output; a 1x1 convolution with stride 1 and no
    padding multiplies ``x`` itself; a convolution with one input channel per group
    (depthwise) runs a compiled direct loop instead.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    w : ndarray, shape (F, C // groups, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'``: int or pair (sh, sw), >= 1; ``'pad'``: int or pair (ph, pw), >= 0;
        optional ``'dilation'`` (int or pair >= 1, default 1), ``'groups'`` (int >= 1
        dividing C and F, default 1) and ``'algorithm'`` (see
        :func:`conv_algorithm_choice`; Winograd serves 3x3, stride 1, dilation 1, groups 1).

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = (H + 2*ph - dh*(HH-1) - 1) // sh + 1``, likewise ``W_out``;
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
    x_c = np.ascontiguousarray(x, dtype=dtype)
    dilation = _phases(requested, x.shape, w.shape, geo)
    if dilation:
        phases, phase_geo, _ = _phase_input(x_c, geo, dilation)
        pads = (phase_geo.pad_h, phase_geo.pad_w)
        phase_out, _ = conv_forward_fast(phases, w, b, {"stride": 1, "pad": pads})
        out_shape = (x.shape[0], w.shape[0], geo.out_h, geo.out_w)
        return _merge_phases(phase_out, dilation, out_shape), cache
    out, _ = _correlate(kernel, x_c, w, b, geo)
    return out, cache


@blas_on_one_thread
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
    dw : ndarray, shape (F, C // groups, HH, WW)
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
            return gradients[0], gradients[1], _channel_sums(dout_c)
    dilation = _phases(requested, x.shape, w.shape, geo)
    if dilation:
        phases, phase_geo, own = _phase_input(np.ascontiguousarray(x, dtype=dtype), geo, dilation)
        phase_cache = ConvCache(phases, w, b, phase_geo, "auto")
        dout_phases = _split_phases(np.ascontiguousarray(dout, dtype=dtype), dilation)
        dx_phases, dw, db = conv_backward_fast(dout_phases, phase_cache, compute_dx=compute_dx)
        if dx_phases is None:
            return None, dw, db
        if own:
            return _merge_phases(dx_phases, dilation, x.shape), dw, db
        num, channels, height, width = x.shape
        padded_shape = (num, channels, height + 2 * geo.pad_h, width + 2 * geo.pad_w)
        dx_pad = _merge_phases(dx_phases, dilation, padded_shape)
        dx = dx_pad[:, :, geo.pad_h : geo.pad_h + height, geo.pad_w : geo.pad_w + width]
        return np.ascontiguousarray(dx), dw, db
    return _conv_gradients(
        kernel,
        geo,
        x.shape,
        np.ascontiguousarray(x, dtype=dtype),
        w,
        np.ascontiguousarray(dout, dtype=dtype),
        compute_dx=compute_dx,
        compute_dw=True,
    )


@blas_on_one_thread
def conv_transpose_forward_fast(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> tuple[np.ndarray, ConvTransposeCache]:
    """Transposed convolution: the input-gradient pass of :func:`conv_backward_fast`.

    Computes what :func:`convnet.layers.conv_transpose_forward_naive` computes: ``x``
    plays the convolution's upstream gradient and ``w`` its filters, so the output comes
    from a GEMM per group and col2im on chunks of images (or the depthwise loop).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    w : ndarray, shape (C, F // groups, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'``, ``'pad'``, optional ``'output_pad'`` (int or pair >= 0, default 0,
        each smaller than the stride or the dilation), ``'dilation'``, ``'groups'``.

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = (H - 1)*sh - 2*ph + dh*(HH - 1) + output_pad_h + 1``, likewise ``W_out``.
    cache : ConvTransposeCache
    """
    x, w, b, geo = check_conv_transpose_arrays(x, w, b, conv_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return conv_transpose_forward_naive(x, w, b, conv_param)
    dtype = common_dtype(x, w, b)
    out_shape = (x.shape[0], b.shape[0], geo.out_h, geo.out_w)
    x_c = np.ascontiguousarray(x, dtype=dtype)
    out, _, _ = _conv_gradients(
        kernel,
        geo.conv,
        out_shape,
        None,
        w,
        x_c,
        compute_dx=True,
        compute_dw=False,
        compute_db=False,
        dx_bias=b,
    )
    return out, ConvTransposeCache(x, w, b, geo)


@blas_on_one_thread
def conv_transpose_backward_fast(
    dout: np.ndarray, cache: ConvTransposeCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of a transposed convolution: ``dx`` is the convolution of ``dout`` with
    ``w`` (:func:`conv_forward_fast`'s path), ``dw`` that convolution's filter gradient
    with input and upstream gradient swapped.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
    cache : ConvTransposeCache
        From :func:`conv_transpose_forward_fast` or
        :func:`convnet.layers.conv_transpose_forward_naive`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (C, F // groups, HH, WW)
    db : ndarray, shape (F,)
    """
    dout, x, w, b, geo = check_conv_transpose_backward(dout, cache)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return conv_transpose_backward_naive(dout, cache)
    dtype = common_dtype(x, w, b, dout)
    dout_c = np.ascontiguousarray(dout, dtype=dtype)
    x_c = np.ascontiguousarray(x, dtype=dtype)
    dx, dw = _correlate(kernel, dout_c, w, None, geo.conv, upstream=x_c)
    return dx, dw, _channel_sums(dout_c)


@blas_on_one_thread
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


@blas_on_one_thread
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


def _small_avg_pool(geo: PoolGeometry) -> int:
    """Input size below which an average pool runs on the calling thread alone: 2x2
    windows are memory-bound, so one thread is faster up to a few MiB."""
    if (geo.pool_h, geo.pool_w) == (2, 2):
        return SMALL_VECTORIZED_POOL_ELEMENTS
    return SMALL_POOL_ELEMENTS


def avg_pool_forward_fast(x: np.ndarray, pool_param: dict) -> tuple[np.ndarray, PoolCache]:
    """Average pooling with the compiled kernel, for any window and stride.

    Computes what :func:`convnet.layers.avg_pool_forward_naive` computes (windows
    entirely inside the input, no padding).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    pool_param : dict
        ``'pool_height'``, ``'pool_width'``: ints >= 1; ``'stride'``: int or pair, >= 1.

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
        ``H_out = (H - pool_height) // sh + 1``, ``W_out = (W - pool_width) // sw + 1``.
    cache : PoolCache (its ``argmax`` is None)
    """
    x = check_float_array(x, "x")
    geo = pool_geometry(x, pool_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return avg_pool_forward_naive(x, pool_param)
    out = np.empty((x.shape[0], x.shape[1], geo.out_h, geo.out_w), dtype=x.dtype)
    x_c = np.ascontiguousarray(x)
    window = (geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w)

    def forward_group(start: int, stop: int) -> None:
        kernel.avg_pool_forward(x_c[start:stop], out[start:stop], *window)

    map_groups(forward_group, x.shape[0], _worker_count(x.size, _small_avg_pool(geo)))
    return out, PoolCache(x, geo, None)


def avg_pool_backward_fast(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Gradient of average pooling: ``dout / (pool_height * pool_width)`` over each window.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out)
    cache : PoolCache
        From :func:`avg_pool_forward_fast` or :func:`convnet.layers.avg_pool_forward_naive`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x, geo = check_avg_pool_cache(cache)
    dout = check_dout(dout, (x.shape[0], x.shape[1], geo.out_h, geo.out_w))
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return avg_pool_backward_naive(dout, cache)
    dtype = common_dtype(x, dout)
    dx = np.empty(x.shape, dtype=dtype)
    dout_c = np.ascontiguousarray(dout, dtype=dtype)
    window = (geo.pool_h, geo.pool_w, geo.stride_h, geo.stride_w)

    def backward_group(start: int, stop: int) -> None:
        kernel.avg_pool_backward(dout_c[start:stop], dx[start:stop], *window)

    map_groups(backward_group, x.shape[0], _worker_count(x.size, _small_avg_pool(geo)))
    return dx
