"""Fast convolution (dilated, grouped): validate in Python, choose the algorithm, then run
it on compiled kernels and BLAS GEMMs.

The algorithms: im2col and one GEMM per group (:mod:`convnet._im2col_conv`), compiled
direct loops for a depthwise convolution, Winograd F(m x m, 3x3) for 3x3 stride-1 filters
(:mod:`convnet.winograd`), and Winograd on the phases of a dilated input
(:mod:`convnet._phases`); on channels-last float32 images, fused Winograd and pixel-major
im2col written for that layout (:mod:`convnet._channels_last_conv`).
:mod:`convnet.conv_plan` chooses. Work is split over one worker per core in chunks under
a byte budget (:mod:`convnet._conv_work`).

Without the compiled kernel every function falls back to the naive layers of
:mod:`convnet.layers` and warns once.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from convnet import _backend, _channels_last_conv, _phases, winograd
from convnet._channel_sums import channel_sums
from convnet._conv_work import chunk_bytes, conv_workers, get_workspace_limit
from convnet._layout import from_nhwc, is_channels_last, nhwc, to_channels_last
from convnet._parallel import blas_on_one_thread, pool_threads
from convnet._validation import (
    ConvGeometry,
    check_conv_arrays,
    check_conv_cache,
    check_dout,
    check_memory_format,
    common_dtype,
    conv_algorithm,
    conv_memory_format,
)
from convnet.conv_plan import (
    ConvPlan,
    default_algorithm,
    direct_or_im2col,
    memory_format_of,
    plan_convolution,
)
from convnet.layers import ConvCache, conv_backward_naive, conv_forward_naive

# The weight gradient's GEMMs sum over the tiles of a chunk into an (alpha^2, F, C) array:
# larger chunks than the forward pass's make them longer and the sums fewer (measured).
WINOGRAD_BACKWARD_CHUNK_BYTES = 4 * 2**20


def conv_algorithm_choice(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    conv_param: dict,
    *,
    memory_format: str = "contiguous",
    dtype: np.dtype | type = np.float32,
) -> ConvPlan:
    """The algorithm :func:`conv_forward_fast` and :func:`conv_backward_fast` run for these
    shapes and parameters.

    Parameters
    ----------
    x_shape : (N, C, H, W)
    w_shape : (F, C // groups, HH, WW)
    conv_param : dict
        As for :func:`conv_forward_fast`, including the optional ``'algorithm'``:
        ``'im2col'``, ``'winograd'`` (3x3 filters with stride 1 only: anything else is a
        ``ValueError``) or ``'auto'`` (Winograd where it applies and the measured rules
        of :mod:`convnet.conv_plan` expect it to be faster); without it, the process-wide
        choice of :func:`convnet.set_conv_algorithm`. And the optional
        ``'memory_format'``.
    memory_format : {"contiguous", "channels_last"}, default "contiguous"
        The layout of the input (see :mod:`convnet.memory_format`), when ``conv_param``
        names none.
    dtype : float32 or float64, default float32
        The dtype the convolution computes in (the channels-last kernels are float32).

    Returns
    -------
    ConvPlan
        A named tuple (name, tile): ('im2col', 0); ('direct', 0), a grouped convolution
        with one input channel per group (depthwise), run by a compiled direct loop;
        ('winograd', m) for Winograd F(m x m, 3x3); ('winograd-phases', m), a dilated
        3x3 stride-1 convolution run, under ``'auto'``, as Winograd F(m x m, 3x3) on the
        phases of its input (see :mod:`convnet._phases`); or in channels-last memory
        ('winograd-channels-last', 4) and ('im2col-channels-last', 0). Chosen by
        :func:`convnet.conv_plan.plan_convolution`.
    """
    # Validation needs arrays of these shapes, not their memory: zero-stride views.
    x, w, b = (np.broadcast_to(np.float32(0), shape) for shape in (x_shape, w_shape, w_shape[:1]))
    _, _, _, geo = check_conv_arrays(x, w, b, conv_param)
    wanted = conv_memory_format(conv_param) or check_memory_format(memory_format, "memory_format")
    requested = conv_algorithm(conv_param, None) or default_algorithm(w_shape, geo)
    runs_in = memory_format_of(wanted, np.dtype(dtype), geo, w_shape)
    return plan_convolution(requested, x_shape, w_shape, geo, runs_in)


@blas_on_one_thread
def conv_forward_fast(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> tuple[np.ndarray, ConvCache]:
    """Convolution by the algorithm :func:`conv_algorithm_choice` names, one worker per core.

    Computes what :func:`convnet.layers.conv_forward_naive` computes, dilation and groups
    included. By im2col, each chunk's columns are multiplied by each group's filters
    (numpy's BLAS) and written straight into the NCHW output; a 1x1 convolution with
    stride 1 and no padding multiplies ``x`` itself; a convolution with one input channel
    per group (depthwise) runs a compiled direct loop instead.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    w : ndarray, shape (F, C // groups, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'``: int or pair (sh, sw), >= 1; ``'pad'``: int or pair (ph, pw), >= 0;
        optional ``'dilation'`` (int or pair >= 1, default 1), ``'groups'`` (int >= 1
        dividing C and F, default 1), ``'algorithm'`` (see :func:`conv_algorithm_choice`;
        Winograd serves 3x3, stride 1, dilation 1, groups 1) and ``'memory_format'``
        (``'contiguous'`` or ``'channels_last'``: the output's layout and the kernels'
        where they apply; default: the input's layout, see :mod:`convnet.memory_format`).

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = (H + 2*ph - dh*(HH-1) - 1) // sh + 1``, likewise ``W_out``;
        float64 if any input is float64, else float32. Channels-last when the
        channels-last kernels ran it (float32, one group, a channels-last input or
        ``'memory_format': 'channels_last'``), else C-contiguous.
    cache : ConvCache
        For :func:`conv_backward_fast` (or :func:`convnet.layers.conv_backward_naive`).
    """
    x, w, b, geo = check_conv_arrays(x, w, b, conv_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return conv_forward_naive(x, w, b, conv_param)
    requested = conv_algorithm(conv_param, None) or default_algorithm(w.shape, geo)
    dtype = common_dtype(x, w, b)
    wanted = conv_memory_format(conv_param) or _layout_of(x)
    runs_in = memory_format_of(wanted, dtype, geo, w.shape)
    plan = plan_convolution(requested, x.shape, w.shape, geo, runs_in)
    if runs_in == "channels_last":
        x_cl = to_channels_last(x, np.float32)
        out = _channels_last_forward(plan, nhwc(x_cl), w, b, geo)
        return from_nhwc(out), ConvCache(x_cl, w, b, geo, requested, runs_in)
    x_c = np.ascontiguousarray(x, dtype=dtype)
    return _forward(kernel, plan, x_c, w, b, geo), ConvCache(x, w, b, geo, requested)


@blas_on_one_thread
def conv_backward_fast(
    dout: np.ndarray, cache: ConvCache, *, compute_dx: bool = True, compute_db: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of a convolution, by the algorithm its forward pass ran.

    By im2col, dW is a GEMM with the columns and dX a GEMM and col2im; the columns are
    recomputed chunk by chunk rather than kept from the forward pass, so memory stays
    bounded. Results are deterministic for a given thread count and
    workspace limit.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
        Upstream gradient, in either memory format.
    cache : ConvCache
        From :func:`conv_forward_fast` or :func:`convnet.layers.conv_forward_naive`.
    compute_dx : bool, default True
        Pass ``False`` when nobody needs the input gradient (the first layer of a
        network): ``dx`` is then ``None`` and its GEMM and col2im are skipped.
    compute_db : bool, default True
        Pass ``False`` for a convolution without bias: ``db`` is then ``None``.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), or None if ``compute_dx`` is False
        In the memory format of the forward pass's output.
    dw : ndarray, shape (F, C // groups, HH, WW)
    db : ndarray, shape (F,), or None if ``compute_db`` is False
    """
    x, w, b, geo, requested, runs_in = check_conv_cache(cache)
    num, num_filters = x.shape[0], w.shape[0]
    dout = check_dout(dout, (num, num_filters, geo.out_h, geo.out_w))
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        dx, dw, db = conv_backward_naive(dout, cache)
        return (dx if compute_dx else None), dw, (db if compute_db else None)
    dtype = common_dtype(x, w, b, dout)
    runs_in = memory_format_of(runs_in, dtype, geo, w.shape)
    plan = plan_convolution(requested, x.shape, w.shape, geo, runs_in)
    if runs_in == "channels_last":
        return _channels_last_gradients(plan, x, w, dout, geo, compute_dx, compute_db)
    x_c = np.ascontiguousarray(x, dtype=dtype)
    dout_c = np.ascontiguousarray(dout, dtype=dtype)
    dx, dw, db = _gradients(kernel, plan, x_c, w, dout_c, geo, compute_dx)
    return dx, dw, (db if compute_db else None)


def _layout_of(x: np.ndarray) -> str:
    return "channels_last" if is_channels_last(x) else "contiguous"


def _parts(x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry) -> int:
    """The threads a channels-last call splits into: one for a call too small to repay
    handing out work (:func:`convnet._conv_work.conv_workers`); at most the pool's
    ``POOL_MAX_PARTS``."""
    return conv_workers(x_shape, w_shape, geo) or pool_threads()


def _channels_last_forward(
    plan: ConvPlan, x_n: np.ndarray, w: np.ndarray, b: np.ndarray, geo: ConvGeometry
) -> np.ndarray:
    """The NHWC output for NHWC float32 ``x_n``, by ``plan``; im2col where Winograd meets
    a value that is not finite."""
    kernel = _backend.channels_last_kernel
    parts = _parts(from_nhwc(x_n).shape, w.shape, geo)
    if plan.name == "winograd-channels-last":
        out = _channels_last_conv.winograd_forward(kernel, x_n, w, b, (geo.pad_h, geo.pad_w), parts)
        if out is not None:
            return out
    if plan.name == "direct-channels-last":
        return _channels_last_conv.direct_forward(kernel, x_n, w, b, geo, parts)
    return _channels_last_conv.im2col_forward(kernel, x_n, w, b, geo, parts)


def _channels_last_gradients(
    plan: ConvPlan,
    x: np.ndarray,
    w: np.ndarray,
    dout: np.ndarray,
    geo: ConvGeometry,
    compute_dx: bool,
    compute_db: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """The gradients for float32 ``x`` and ``dout`` (any layout; NHWC views of
    channels-last ones), by ``plan``; dx channels-last."""
    kernel = _backend.channels_last_kernel
    parts = _parts(x.shape, w.shape, geo)
    x_n, dout_n = nhwc(x, np.float32), nhwc(dout, np.float32)
    if plan.name == "direct-channels-last":
        dx, dw, db = _channels_last_conv.direct_backward(
            kernel, x_n, w, dout_n, geo, compute_dx, compute_db, parts
        )
        return (None if dx is None else from_nhwc(dx)), dw, db
    result = None
    if plan.name == "winograd-channels-last":
        result = _channels_last_conv.winograd_backward(
            kernel, x_n, w, dout_n, (geo.pad_h, geo.pad_w), compute_dx, parts
        )
    if result is None:
        result = _channels_last_conv.im2col_backward(kernel, x_n, w, dout_n, geo, compute_dx, parts)
    dx, dw = result
    db = _channels_last_conv.bias_gradient(kernel, dout_n, parts) if compute_db else None
    return (None if dx is None else from_nhwc(dx)), dw, db


def _forward(
    kernel: ModuleType,
    plan: ConvPlan,
    x_c: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    geo: ConvGeometry,
) -> np.ndarray:
    """The convolution of contiguous ``x_c`` with ``w`` plus ``b`` in x_c's dtype, by
    ``plan``. Winograd that meets a NaN or an infinity returns None (see
    :mod:`convnet.winograd`): im2col then computes the call again."""
    if plan.name == "winograd-phases":
        dilation = geo.dilation_h
        phases, phase_geo, _ = _phases.phase_input(x_c, geo, dilation)
        phase_out = _forward(kernel, ConvPlan("winograd", plan.tile), phases, w, b, phase_geo)
        out_shape = (x_c.shape[0], w.shape[0], geo.out_h, geo.out_w)
        return _phases.merge_phases(phase_out, dilation, out_shape)
    if plan.name == "winograd":
        out = winograd.forward(
            _backend.winograd_kernel,
            x_c,
            w.astype(x_c.dtype, copy=False),
            b.astype(x_c.dtype, copy=False),
            (geo.pad_h, geo.pad_w),
            plan.tile,
            chunk_bytes(),
            chunk_bytes(get_workspace_limit()),
            conv_workers(x_c.shape, w.shape, geo),
        )
        if out is not None:
            return out
    return direct_or_im2col(plan).correlate(kernel, x_c, w, b, geo)[0]


def _gradients(
    kernel: ModuleType,
    plan: ConvPlan,
    x_c: np.ndarray,
    w: np.ndarray,
    dout_c: np.ndarray,
    geo: ConvGeometry,
    compute_dx: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """dx (None without ``compute_dx``), dw and db of the convolution of contiguous
    ``x_c`` for contiguous ``dout_c`` (both in one dtype), by ``plan``; im2col again
    where Winograd meets a value that is not finite."""
    if plan.name == "winograd-phases":
        dilation = geo.dilation_h
        phases, phase_geo, own = _phases.phase_input(x_c, geo, dilation)
        dout_phases = _phases.split_phases(dout_c, dilation)
        phase_plan = ConvPlan("winograd", plan.tile)
        dx_phases, dw, db = _gradients(
            kernel, phase_plan, phases, w, dout_phases, phase_geo, compute_dx
        )
        if dx_phases is None:
            return None, dw, db
        if own:
            return _phases.merge_phases(dx_phases, dilation, x_c.shape), dw, db
        num, channels, height, width = x_c.shape
        padded_shape = (num, channels, height + 2 * geo.pad_h, width + 2 * geo.pad_w)
        dx_pad = _phases.merge_phases(dx_phases, dilation, padded_shape)
        dx = dx_pad[:, :, geo.pad_h : geo.pad_h + height, geo.pad_w : geo.pad_w + width]
        return np.ascontiguousarray(dx), dw, db
    if plan.name == "winograd":
        gradients = winograd.backward(
            _backend.winograd_kernel,
            dout_c,
            x_c,
            w.astype(x_c.dtype, copy=False),
            (geo.pad_h, geo.pad_w),
            plan.tile,
            chunk_bytes(WINOGRAD_BACKWARD_CHUNK_BYTES),
            chunk_bytes(get_workspace_limit()),
            conv_workers(x_c.shape, w.shape, geo),
            compute_dx,
        )
        if gradients is not None:
            return gradients[0], gradients[1], channel_sums(dout_c)
    return direct_or_im2col(plan).gradients(
        kernel, geo, x_c.shape, x_c, w, dout_c, compute_dx=compute_dx, compute_dw=True
    )
