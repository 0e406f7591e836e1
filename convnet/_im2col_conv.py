"""A convolution by im2col and one GEMM per group, on cache-sized chunks of images over
the worker threads.

The convolution copies receptive fields into a column matrix (im2col) and multiplies it by
the filters with numpy's BLAS, one GEMM per group; its gradients multiply the same columns
(recomputed chunk by chunk) and scatter the input gradient back by col2im. A 1x1
convolution with stride 1 and no padding needs no im2col at all.
:mod:`convnet._depthwise_conv` offers the same two functions for the depthwise loops.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from convnet._channel_sums import channel_sums
from convnet._conv_work import conv_workers, images_per_chunk
from convnet._parallel import map_groups
from convnet._validation import ConvGeometry, check_allocation


class Columns:
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
        self.per_chunk = images_per_chunk(self.rows * self.pixels * np.dtype(dtype).itemsize)
        self.dtype = dtype
        if not self.pointwise:  # one image is the smallest chunk: refuse it before any worker
            check_allocation((self.rows, self.pixels), dtype, "the im2col columns of one image")

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


def correlate(
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

    Im2col and one GEMM per group on cache-sized chunks of images.
    """
    dtype = x_c.dtype
    num, num_filters = x_c.shape[0], w.shape[0]
    out = np.empty((num, num_filters, geo.out_h, geo.out_w), dtype=dtype)
    bias = np.zeros(num_filters, dtype) if b is None else b.astype(dtype, copy=False)
    columns = Columns(kernel, x_c.shape, dtype, w.shape, geo, x_c)
    workers = conv_workers(x_c.shape, w.shape, geo)
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


def gradients(
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
    columns = Columns(kernel, x_shape, dtype, w.shape, geo, x_c)
    workers = conv_workers(x_shape, w.shape, geo)
    dx = np.empty(x_shape, dtype=dtype) if compute_dx else None
    bias_planes = None if dx_bias is None else dx_bias.astype(dtype)[:, None, None]
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
        return dw_by_column, channel_sums(dout_c[start:stop]) if compute_db else None

    dw_by_column = np.zeros((geo.groups, columns.depth, w_groups.shape[1]), dtype=dtype)
    db = np.zeros(num_filters, dtype=dtype) if compute_db else None
    for dw_group, db_group in map_groups(backward_group, num, workers):
        dw_by_column += dw_group
        if db is not None:
            db += db_group
    dw = np.ascontiguousarray(dw_by_column.transpose(0, 2, 1)).reshape(w.shape)
    return dx, (dw if compute_dw else None), db
