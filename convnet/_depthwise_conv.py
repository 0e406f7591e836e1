"""A depthwise convolution (one input channel per group) by compiled direct loops,
straight from x (no columns), on groups of images over the worker threads.

The same two functions as :mod:`convnet._im2col_conv`, with the same arguments.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from convnet._channel_sums import channel_sums
from convnet._conv_work import conv_workers
from convnet._parallel import map_groups
from convnet._validation import ConvGeometry


def _loop_args(geo: ConvGeometry) -> tuple[int, ...]:
    return geo.stride_h, geo.stride_w, geo.pad_h, geo.pad_w, geo.dilation_h, geo.dilation_w


def correlate(
    kernel: ModuleType,
    x_c: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    geo: ConvGeometry,
    upstream: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The depthwise convolution of contiguous ``x_c`` with ``w`` (plus ``b`` if given), in
    x_c's dtype; and, given an ``upstream`` gradient of the output's shape, the filter
    gradient for it (a transposed convolution's backward pass needs both)."""
    dtype = x_c.dtype
    num, num_filters = x_c.shape[0], w.shape[0]
    out = np.empty((num, num_filters, geo.out_h, geo.out_w), dtype=dtype)
    bias = np.zeros(num_filters, dtype) if b is None else b.astype(dtype, copy=False)
    workers = conv_workers(x_c.shape, w.shape, geo)
    w_taps = np.ascontiguousarray(w, dtype=dtype).reshape(num_filters, *w.shape[2:])
    bias_c = np.ascontiguousarray(bias)

    def depthwise_group(start: int, stop: int) -> np.ndarray | None:
        kernel.depthwise_forward(x_c[start:stop], w_taps, bias_c, out[start:stop], *_loop_args(geo))
        if upstream is None:
            return None
        dw_taps = np.zeros(w_taps.shape, dtype=dtype)
        kernel.depthwise_backward_weight(
            x_c[start:stop], upstream[start:stop], dw_taps, *_loop_args(geo)
        )
        return dw_taps

    parts = map_groups(depthwise_group, num, workers)
    if upstream is None:
        return out, None
    return out, sum(parts, np.zeros(w_taps.shape, dtype=dtype)).reshape(w.shape)


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
    """A depthwise convolution's gradients dx (shape ``x_shape``, plus ``dx_bias`` (C,) if
    given), dw and db (None without ``compute_db``) from contiguous ``dout_c``; ``x_c``
    (contiguous, dout's dtype) is needed only for dw."""
    dtype = dout_c.dtype
    num, num_filters = x_shape[0], w.shape[0]
    workers = conv_workers(x_shape, w.shape, geo)
    dx = np.empty(x_shape, dtype=dtype) if compute_dx else None
    bias_planes = None if dx_bias is None else dx_bias.astype(dtype)[:, None, None]
    w_taps = np.ascontiguousarray(w, dtype=dtype).reshape(num_filters, *w.shape[2:])
    finite = bool(np.isfinite(w_taps).all())

    def depthwise_group(start: int, stop: int) -> tuple[np.ndarray | None, np.ndarray]:
        dw_taps = None
        if compute_dw:
            dw_taps = np.zeros(w_taps.shape, dtype=dtype)
            kernel.depthwise_backward_weight(
                x_c[start:stop], dout_c[start:stop], dw_taps, *_loop_args(geo)
            )
        if dx is not None:
            kernel.depthwise_backward_input(
                dout_c[start:stop], w_taps, dx[start:stop], *_loop_args(geo), finite
            )
            if bias_planes is not None:
                dx[start:stop] += bias_planes
        return dw_taps, channel_sums(dout_c[start:stop]) if compute_db else None

    results = map_groups(depthwise_group, num, workers)
    db = np.zeros(num_filters, dtype=dtype) if compute_db else None
    dw = np.zeros(w_taps.shape, dtype=dtype) if compute_dw else None
    for dw_group, db_group in results:
        if db is not None:
            db += db_group
        if dw is not None:
            dw += dw_group
    return dx, (None if dw is None else dw.reshape(w.shape)), db
