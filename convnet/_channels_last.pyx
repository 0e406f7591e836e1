"""Compiled kernels for channels-last (NHWC) images: fused Winograd F(4x4, 3x3).

The entry points check every size they rely on (a wrong call is a ``ValueError``, never
an access outside an array), release the GIL and run single-threaded: the Python layer
calls them from one worker thread per core, each on its own images and workspace.
"""


cdef extern from "_cl_kernels.h" nogil:
    ctypedef struct cl_wino_job:
        const float* x
        const float* u
        const float* dy
        const float* bias
        float* y
        float* du
        float* work
        Py_ssize_t num, h, w, c, pad_h, pad_w, f, frow, out_h, out_w
        Py_ssize_t part_size, v_size, du_size, vplane, vrow, mplane, mrow, block
    int cl_wino4_forward_all(cl_wino_job* job, int parts)
    void cl_wino4_filter_gradient_all(cl_wino_job* job, int parts)
    int cl_isa()
    int cl_set_isa(int level)


cdef extern from "_cl_kernels.h" nogil:
    void cl_set_placement(int place)


def set_worker_placement(bint place) -> None:
    """Whether a call keeps its thread on the CPU it started on and the pool's workers off
    that CPU (Linux; ``CONVNET_PLACE_WORKERS``, default on)."""
    cl_set_placement(place)


def instruction_set() -> int:
    """0 (portable C), 1 (AVX2 with FMA) or 2 (AVX-512): what the kernels run."""
    return cl_isa()


def set_instruction_set(int level) -> int:
    """Run ``level`` or the best the CPU has below it; returns the level now in use."""
    return cl_set_isa(level)


cdef inline Py_ssize_t _row(Py_ssize_t n) noexcept nogil:
    return (n + 15) // 16 * 16


def winograd_workspace(Py_ssize_t in_channels, Py_ssize_t out_channels, Py_ssize_t block) -> int:
    """Values of workspace one part needs for blocks of ``block`` tiles: the transformed
    inputs (36 vectors of ``in_channels`` rounded up to 16 per tile), then the products
    (36 of ``out_channels`` rounded up)."""
    return 36 * block * (_row(in_channels) + _row(out_channels))


cdef cl_wino_job _job(const float[:, :, :, ::1] x, Py_ssize_t f, Py_ssize_t frow,
                      Py_ssize_t pad_h, Py_ssize_t pad_w, float[::1] work, Py_ssize_t block,
                      int parts) except *:
    """The sizes of a Winograd call on x, checked: every index the kernels touch lies in
    the arrays they are given."""
    cdef cl_wino_job job
    job.num, job.h, job.w, job.c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    job.pad_h, job.pad_w, job.f, job.frow = pad_h, pad_w, f, frow
    job.out_h, job.out_w = job.h + 2 * pad_h - 2, job.w + 2 * pad_w - 2
    if job.out_h < 1 or job.out_w < 1:
        raise ValueError(f"padding ({pad_h}, {pad_w}) leaves no output for a "
                         f"{job.h}x{job.w} image")
    if frow < f or frow % 16:
        raise ValueError(f"rows of {frow} values cannot hold {f} channels in vectors of 16")
    if block < 1 or parts < 1 or parts > 256:
        raise ValueError(f"block ({block}) and parts ({parts}) must be in 1..256 for parts")
    job.vrow, job.mrow = _row(job.c), frow
    job.vplane, job.mplane = job.vrow, job.mrow
    job.vrow, job.mrow = 36 * job.vplane, 36 * job.mplane
    job.block = block
    job.v_size = job.vrow * block
    job.part_size = job.v_size + job.mrow * block
    if work.shape[0] < parts * job.part_size:
        raise ValueError(f"the workspace holds {work.shape[0]} values, {parts} parts need "
                         f"{parts * job.part_size}")
    job.work = &work[0]
    job.x = &x[0, 0, 0, 0]
    job.bias = NULL
    job.dy = NULL
    job.du = NULL
    job.du_size = 0
    return job


def winograd4_forward(const float[:, :, :, ::1] x, const float[:, :, ::1] u, bias,
                      float[:, :, :, ::1] y, Py_ssize_t pad_h, Py_ssize_t pad_w,
                      float[::1] work, Py_ssize_t block, int parts) -> bool:
    """``y = x * w + bias`` for NHWC ``x`` (N, H, W, C) and 3x3 filters transformed into
    ``u`` (36, C, frow), ``y`` (N, H + 2 pad_h - 2, W + 2 pad_w - 2, F) with F <= frow.

    ``bias``: F contiguous float32 values, or None. The tiles go in ``parts`` shares to
    the pool's threads, each share in blocks of ``block`` tiles using its own
    :func:`winograd_workspace` values of ``work``. Returns True if every output is finite.
    """
    cdef cl_wino_job job = _job(x, y.shape[3], u.shape[2], pad_h, pad_w, work, block, parts)
    cdef const float[::1] shift
    cdef int finite
    if y.shape[0] != job.num or y.shape[1] != job.out_h or y.shape[2] != job.out_w:
        raise ValueError(f"y must have shape ({job.num}, {job.out_h}, {job.out_w}, F)")
    if u.shape[0] != 36 or u.shape[1] != job.c:
        raise ValueError(f"u must have shape (36, {job.c}, {job.frow})")
    if bias is not None:
        shift = bias
        if shift.shape[0] != job.f:
            raise ValueError(f"bias must have {job.f} values")
        if job.f:
            job.bias = &shift[0]
    if job.num == 0 or job.c == 0 or job.f == 0:
        return True
    job.u = &u[0, 0, 0]
    job.y = &y[0, 0, 0, 0]
    with nogil:
        finite = cl_wino4_forward_all(&job, parts)
    return finite == 1


def winograd4_filter_gradient(const float[:, :, :, ::1] x, const float[:, :, :, ::1] dy,
                              float[:, :, :, ::1] du, Py_ssize_t pad_h, Py_ssize_t pad_w,
                              float[::1] work, Py_ssize_t block, int parts) -> None:
    """The transformed filter gradient of :func:`winograd4_forward` for ``x`` (N, H, W, C)
    and ``dy`` (N, H_out, W_out, F), added up in ``du[0]`` (36, C, frow).

    ``du`` is (parts, 36, C, frow), overwritten: each part writes its tiles' share into its
    own slice, then the slices are summed into ``du[0]`` (columns beyond F are not
    meaningful).
    """
    cdef cl_wino_job job = _job(x, dy.shape[3], du.shape[3], pad_h, pad_w, work, block, parts)
    if dy.shape[0] != job.num or dy.shape[1] != job.out_h or dy.shape[2] != job.out_w:
        raise ValueError(f"dy must have shape ({job.num}, {job.out_h}, {job.out_w}, F)")
    if du.shape[0] < parts or du.shape[1] != 36 or du.shape[2] != job.c:
        raise ValueError(f"du must have shape (>= {parts}, 36, {job.c}, {job.frow})")
    if job.num == 0 or job.c == 0 or job.f == 0:
        du[...] = 0
        return
    job.dy = &dy[0, 0, 0, 0]
    job.du = &du[0, 0, 0, 0]
    job.du_size = 36 * job.c * job.frow
    with nogil:
        cl_wino4_filter_gradient_all(&job, parts)


cdef extern from "_cl_kernels.h" nogil:
    ctypedef struct cl_conv_geometry:
        Py_ssize_t h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w
    ctypedef struct cl_conv_job:
        const float* x
        const float* wk
        const float* wt
        const float* bias
        const float* dy
        float* y
        float* dx
        float* dwk
        float* work
        cl_conv_geometry g
        Py_ssize_t num, f, rows_per_chunk, part_size, dwk_size
        int pointwise
    void cl_conv_forward_all(cl_conv_job* job, int parts)
    void cl_conv_filter_gradient_all(cl_conv_job* job, int parts)
    void cl_conv_input_gradient_all(cl_conv_job* job, int parts)


def conv_workspace(Py_ssize_t depth, Py_ssize_t rows_per_chunk) -> int:
    """Values of workspace one part of an im2col call needs: a chunk of column rows."""
    return rows_per_chunk * depth


cdef cl_conv_job _conv_job(tuple x_shape, Py_ssize_t f, tuple taps, float[::1] work,
                           Py_ssize_t rows_per_chunk, int parts) except *:
    """The sizes of an im2col call, checked: every index the kernels touch lies inside
    the arrays they are given (the kernels read x only at pixels inside it)."""
    cdef cl_conv_job job
    cdef cl_conv_geometry g
    g.h, g.w, g.c = x_shape[1], x_shape[2], x_shape[3]
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.out_h, g.out_w = taps
    if min(g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.out_h, g.out_w) < 1 or min(g.ph, g.pw) < 0:
        raise ValueError(f"invalid convolution geometry {taps}")
    if rows_per_chunk < 1 or parts < 1 or parts > 256:
        raise ValueError("rows_per_chunk must be >= 1 and parts in 1..256")
    job.g = g
    job.num, job.f, job.rows_per_chunk = x_shape[0], f, rows_per_chunk
    job.pointwise = (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0 and
                     g.pw == 0 and g.out_h == g.h and g.out_w == g.w)
    job.part_size = rows_per_chunk * g.kh * g.kw * g.c
    if work.shape[0] < parts * job.part_size:
        raise ValueError(f"the workspace holds {work.shape[0]} values, {parts} parts need "
                         f"{parts * job.part_size}")
    job.work = &work[0]
    job.bias = NULL
    return job


def _check_rows(tuple shape, tuple expected, str name):
    if shape != expected:
        raise ValueError(f"{name} must have shape {expected}, got {shape}")


def conv_forward(const float[:, :, :, ::1] x, const float[:, ::1] wk, bias,
                 float[:, :, :, ::1] y, tuple taps, float[::1] work, Py_ssize_t rows_per_chunk,
                 int parts) -> None:
    """``y`` (N, out_h, out_w, F) = the convolution of NHWC ``x`` with ``wk`` (kh*kw*C, F),
    the filters in the columns' order, plus ``bias`` (F float32 values or None).

    ``taps`` is (kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w). The output pixels go in
    ``parts`` shares to the pool's threads, each in chunks of ``rows_per_chunk`` rows of
    columns in its own :func:`conv_workspace` values of ``work``.
    """
    cdef cl_conv_job job = _conv_job((x.shape[0], x.shape[1], x.shape[2], x.shape[3]), y.shape[3], taps, work,
                                     rows_per_chunk, parts)
    cdef const float[::1] shift
    _check_rows((y.shape[0], y.shape[1], y.shape[2], y.shape[3]), (job.num, job.g.out_h, job.g.out_w, job.f), "y")
    _check_rows((wk.shape[0], wk.shape[1]), (job.g.kh * job.g.kw * job.g.c, job.f), "wk")
    if bias is not None:
        shift = bias
        _check_rows((shift.shape[0],), (job.f,), "bias")
        if job.f:
            job.bias = &shift[0]
    if y.shape[0] * y.shape[1] * y.shape[2] * y.shape[3] == 0 or wk.shape[0] == 0:
        if wk.shape[0] == 0 and y.shape[0] * y.shape[1] * y.shape[2] * y.shape[3]:
            raise ValueError("a convolution needs at least one input channel")
        return
    job.x = &x[0, 0, 0, 0]
    job.wk = &wk[0, 0]
    job.y = &y[0, 0, 0, 0]
    with nogil:
        cl_conv_forward_all(&job, parts)


def conv_filter_gradient(const float[:, :, :, ::1] x, const float[:, :, :, ::1] dy,
                         float[:, :, ::1] dwk, tuple taps, float[::1] work,
                         Py_ssize_t rows_per_chunk, int parts) -> None:
    """The filter gradient of :func:`conv_forward`, (kh*kw*C, F), summed into ``dwk[0]``.

    ``dwk`` is (parts, kh*kw*C, F), zero on entry: each part adds its pixels' share into
    its own slice, then the slices are summed into ``dwk[0]``.
    """
    cdef cl_conv_job job = _conv_job((x.shape[0], x.shape[1], x.shape[2], x.shape[3]), dy.shape[3], taps, work,
                                     rows_per_chunk, parts)
    _check_rows((dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3]), (job.num, job.g.out_h, job.g.out_w, job.f), "dy")
    if dwk.shape[0] < parts:
        raise ValueError(f"dwk needs {parts} slices")
    _check_rows((dwk.shape[1], dwk.shape[2]), (job.g.kh * job.g.kw * job.g.c, job.f), "a dwk slice")
    if dy.shape[0] * dy.shape[1] * dy.shape[2] * dy.shape[3] == 0 or dwk.shape[1] == 0:
        return
    job.x = &x[0, 0, 0, 0]
    job.dy = &dy[0, 0, 0, 0]
    job.dwk = &dwk[0, 0, 0]
    job.dwk_size = dwk.shape[1] * dwk.shape[2]
    with nogil:
        cl_conv_filter_gradient_all(&job, parts)


def conv_input_gradient(const float[:, :, :, ::1] dy, const float[:, ::1] wt,
                        float[:, :, :, ::1] dx, tuple taps, float[::1] work,
                        Py_ssize_t rows_per_chunk, int parts) -> None:
    """The input gradient of :func:`conv_forward` into ``dx`` (N, H, W, C), overwritten;
    ``wt`` is (F, kh*kw*C), the transpose of ``wk``. Images go in shares to the parts."""
    cdef cl_conv_job job = _conv_job((dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3]), dy.shape[3], taps, work,
                                     rows_per_chunk, parts)
    _check_rows((dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3]), (job.num, job.g.out_h, job.g.out_w, job.f), "dy")
    _check_rows((wt.shape[0], wt.shape[1]), (job.f, job.g.kh * job.g.kw * job.g.c), "wt")
    if dx.shape[0] * dx.shape[1] * dx.shape[2] * dx.shape[3] == 0:
        return
    if dy.shape[0] * dy.shape[1] * dy.shape[2] * dy.shape[3] == 0:
        dx[...] = 0
        return
    job.dy = &dy[0, 0, 0, 0]
    job.wt = &wt[0, 0]
    job.dx = &dx[0, 0, 0, 0]
    with nogil:
        cl_conv_input_gradient_all(&job, parts)


cdef extern from "_cl_kernels.h" nogil:
    ctypedef struct cl_norm_job:
        const float* x
        const float* dy
        const float* shift
        const float* mean
        const float* scale
        const float* offset
        const float* k1
        const float* k2
        const float* k3
        float* out
        double* sums
        Py_ssize_t rows, c
        int relu
    void cl_norm_sums_all(cl_norm_job* job, int parts)
    void cl_norm_scale_all(cl_norm_job* job, int parts)
    void cl_norm_gradient_sums_all(cl_norm_job* job, int parts)
    void cl_norm_input_gradient_all(cl_norm_job* job, int parts)


cdef cl_norm_job _norm_job(const float[:, ::1] x, int parts, bint relu) except *:
    cdef cl_norm_job job
    if parts < 1 or parts > 256:
        raise ValueError(f"parts must be in 1..256, got {parts}")
    job.rows, job.c, job.relu = x.shape[0], x.shape[1], relu
    return job


cdef const float* _channel_vector(const float[::1] values, Py_ssize_t c, str name) except NULL:
    if values.shape[0] != c:
        raise ValueError(f"{name} must have {c} values, got {values.shape[0]}")
    return &values[0]


cdef double* _sums(double[:, :, ::1] sums, int parts, Py_ssize_t c) except NULL:
    if sums.shape[0] < parts or sums.shape[1] != 2 or sums.shape[2] != c:
        raise ValueError(f"sums must have shape (>= {parts}, 2, {c})")
    return &sums[0, 0, 0]


def shifted_column_sums(const float[:, ::1] x, const float[::1] shift, double[:, :, ::1] sums,
              int parts) -> None:
    """Add to ``sums[part]`` (2, C) the column sums of ``x - shift`` and ``(x - shift)**2``
    over each part's share of the rows of ``x`` (rows, C)."""
    cdef cl_norm_job job = _norm_job(x, parts, False)
    if job.rows == 0 or job.c == 0:
        return
    job.x = &x[0, 0]
    job.shift = _channel_vector(shift, job.c, "shift")
    job.sums = _sums(sums, parts, job.c)
    with nogil:
        cl_norm_sums_all(&job, parts)


def scale_rows(const float[:, ::1] x, const float[::1] mean, const float[::1] scale,
               const float[::1] offset, bint relu, float[:, ::1] out, int parts) -> None:
    """``out = (x - mean) * scale + offset`` per column of ``x`` (rows, C), ``max(out, 0)``
    with ``relu`` (NaN stays NaN); ``out`` may be ``x``."""
    cdef cl_norm_job job = _norm_job(x, parts, relu)
    if out.shape[0] != job.rows or out.shape[1] != job.c:
        raise ValueError(f"out must have shape ({job.rows}, {job.c})")
    if job.rows == 0 or job.c == 0:
        return
    job.x = &x[0, 0]
    job.mean = _channel_vector(mean, job.c, "mean")
    job.scale = _channel_vector(scale, job.c, "scale")
    job.offset = _channel_vector(offset, job.c, "offset")
    job.out = &out[0, 0]
    with nogil:
        cl_norm_scale_all(&job, parts)


def norm_gradient_sums(const float[:, ::1] x, const float[:, ::1] dy, const float[::1] mean,
                       const float[::1] scale, const float[::1] offset, bint relu,
                       double[:, :, ::1] sums, int parts) -> None:
    """Add to ``sums[part]`` (2, C) the column sums of ``g`` and ``g * (x - mean)`` over each
    part's rows, ``g`` being ``dy`` where ``(x - mean) * scale + offset > 0`` if ``relu``,
    else dy."""
    cdef cl_norm_job job = _norm_job(x, parts, relu)
    if dy.shape[0] != job.rows or dy.shape[1] != job.c:
        raise ValueError(f"dy must have shape ({job.rows}, {job.c})")
    if job.rows == 0 or job.c == 0:
        return
    job.x, job.dy = &x[0, 0], &dy[0, 0]
    job.mean = _channel_vector(mean, job.c, "mean")
    job.scale = _channel_vector(scale, job.c, "scale")
    job.offset = _channel_vector(offset, job.c, "offset")
    job.sums = _sums(sums, parts, job.c)
    with nogil:
        cl_norm_gradient_sums_all(&job, parts)


def norm_input_gradient(const float[:, ::1] x, const float[:, ::1] dy, const float[::1] mean,
                        const float[::1] scale, const float[::1] offset, bint relu,
                        const float[::1] k1, const float[::1] k2, const float[::1] k3,
                        float[:, ::1] dx, int parts) -> None:
    """``dx = k1 * g + k2 * (x - mean) + k3`` per column, ``g`` as in
    :func:`norm_gradient_sums`."""
    cdef cl_norm_job job = _norm_job(x, parts, relu)
    if dy.shape[0] != job.rows or dy.shape[1] != job.c or dx.shape[0] != job.rows or dx.shape[1] != job.c:
        raise ValueError(f"dy and dx must have shape ({job.rows}, {job.c})")
    if job.rows == 0 or job.c == 0:
        return
    job.x, job.dy, job.out = &x[0, 0], &dy[0, 0], &dx[0, 0]
    job.mean = _channel_vector(mean, job.c, "mean")
    job.scale = _channel_vector(scale, job.c, "scale")
    job.offset = _channel_vector(offset, job.c, "offset")
    job.k1 = _channel_vector(k1, job.c, "k1")
    job.k2 = _channel_vector(k2, job.c, "k2")
    job.k3 = _channel_vector(k3, job.c, "k3")
    with nogil:
        cl_norm_input_gradient_all(&job, parts)


cdef extern from "_cl_kernels.h" nogil:
    ctypedef struct cl_pool_job:
        const float* x
        const float* dy
        float* y
        float* dx
        int* where
        const int* maxima
        Py_ssize_t num, h, w, c, ph, pw, sh, sw, out_h, out_w
    void cl_max_pool_all(cl_pool_job* job, int parts)
    void cl_max_pool_backward_all(cl_pool_job* job, int parts)


cdef cl_pool_job _pool_job(Py_ssize_t num, Py_ssize_t h, Py_ssize_t w, Py_ssize_t c,
                           tuple window, Py_ssize_t out_h, Py_ssize_t out_w, int parts) except *:
    cdef cl_pool_job job
    job.num, job.h, job.w, job.c = num, h, w, c
    job.ph, job.pw, job.sh, job.sw = window
    if min(job.ph, job.pw, job.sh, job.sw) < 1 or parts < 1 or parts > 256:
        raise ValueError(f"invalid pooling window {window} or parts {parts}")
    if h * w > 2**31 - 1:
        raise ValueError(f"an image of {h}x{w} pixels is too large to pool")
    if out_h < 0 or out_w < 0 or (out_h and (out_h - 1) * job.sh + job.ph > h) or (
            out_w and (out_w - 1) * job.sw + job.pw > w):
        raise ValueError(f"{out_h}x{out_w} windows {window} do not fit a {h}x{w} image")
    job.out_h, job.out_w = out_h, out_w
    return job


def max_pool_forward(const float[:, :, :, ::1] x, float[:, :, :, ::1] y, int[:, :, :, ::1] where,
                     tuple window, int parts) -> None:
    """``y`` (N, out_h, out_w, C) = window maxima of NHWC ``x``, ``where`` their positions
    ``row * W + column`` (the first maximum in row-major order; a NaN counts as the
    largest). ``window`` is (ph, pw, sh, sw)."""
    cdef cl_pool_job job = _pool_job(x.shape[0], x.shape[1], x.shape[2], x.shape[3], window,
                                     y.shape[1], y.shape[2], parts)
    if (y.shape[0], y.shape[3]) != (job.num, job.c) or (
            where.shape[0], where.shape[1], where.shape[2], where.shape[3]) != (
            y.shape[0], y.shape[1], y.shape[2], y.shape[3]):
        raise ValueError("y and where must have shape (N, out_h, out_w, C)")
    if job.num * job.out_h * job.out_w * job.c == 0:
        return
    job.x, job.y, job.where = &x[0, 0, 0, 0], &y[0, 0, 0, 0], &where[0, 0, 0, 0]
    with nogil:
        cl_max_pool_all(&job, parts)


def max_pool_backward(const float[:, :, :, ::1] dy, const int[:, :, :, ::1] where,
                      float[:, :, :, ::1] dx, tuple window, int parts) -> None:
    """``dx`` (N, H, W, C), overwritten: each ``dy`` value added at its window's
    maximum. Every position of ``where`` must lie in 0 .. H*W - 1 (the caller checks: the
    kernel writes there)."""
    cdef cl_pool_job job = _pool_job(dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3],
                                     window, dy.shape[1], dy.shape[2], parts)
    if (dy.shape[0], dy.shape[3]) != (job.num, job.c) or (
            where.shape[0], where.shape[1], where.shape[2], where.shape[3]) != (
            dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3]):
        raise ValueError("dy and where must have shape (N, out_h, out_w, C)")
    if job.num * job.h * job.w * job.c == 0:
        return
    job.dx = &dx[0, 0, 0, 0]
    if job.out_h * job.out_w == 0:
        dx[...] = 0
        return
    job.dy, job.maxima = &dy[0, 0, 0, 0], &where[0, 0, 0, 0]
    with nogil:
        cl_max_pool_backward_all(&job, parts)


cdef extern from "_cl_kernels.h" nogil:
    void cl_filter_transform_rows(const float* src, Py_ssize_t rows, Py_ssize_t n, int flipped,
                                  float* dst, Py_ssize_t row)
    void cl_filter_gradient_rows(const float* src, Py_ssize_t rows, Py_ssize_t n,
                                 Py_ssize_t row, float* dst)


def winograd_filters(const float[:, :, ::1] taps, float[:, :, ::1] u, bint flipped) -> None:
    """The F(4x4, 3x3) transform of 3x3 filters laid out ``taps`` (R, 9, n): filter (r, j)
    has ``taps[r, 3a + b, j]`` at (a, b). ``u`` (36, R, row >= n): ``u[xi, r, j] = (G g
    G^T)[xi]`` (the filter rotated by 180 degrees with ``flipped``), zero for j >= n.

    The forward pass's ``u`` (36, C, frow) comes from ``w.transpose(1, 2, 3, 0)`` (C, 9,
    F); the input gradient's (36, F, crow), flipped, from ``w.transpose(0, 2, 3, 1)``.
    """
    cdef Py_ssize_t rows = taps.shape[0], n = taps.shape[2]
    if taps.shape[1] != 9:
        raise ValueError(f"taps must have shape (R, 9, n), got 9 -> {taps.shape[1]}")
    if u.shape[0] != 36 or u.shape[1] != rows or u.shape[2] < n:
        raise ValueError(f"u must have shape (36, {rows}, >= {n})")
    if rows == 0 or u.shape[2] == 0:
        return
    with nogil:
        cl_filter_transform_rows(&taps[0, 0, 0], rows, n, flipped, &u[0, 0, 0], u.shape[2])


def winograd_filter_gradient(const float[:, :, ::1] du, float[:, :, ::1] taps) -> None:
    """``taps`` (R, 9, n) = ``G^T du[:, r, j] G`` from the transformed gradient ``du`` (36,
    R, row >= n): the filter gradient laid out as :func:`winograd_filters` reads filters."""
    cdef Py_ssize_t rows = taps.shape[0], n = taps.shape[2]
    if taps.shape[1] != 9:
        raise ValueError("taps must have shape (R, 9, n)")
    if du.shape[0] != 36 or du.shape[1] != rows or du.shape[2] < n:
        raise ValueError(f"du must have shape (36, {rows}, >= {n})")
    if rows == 0 or n == 0:
        return
    with nogil:
        cl_filter_gradient_rows(&du[0, 0, 0], rows, n, du.shape[2], &taps[0, 0, 0])


cdef extern from "_cl_kernels.h" nogil:
    ctypedef struct cl_relu_job:
        const float* x
        const float* dy
        float* out
        Py_ssize_t size
    void cl_relu_all(cl_relu_job* job, int parts)
    void cl_relu_gradient_all(cl_relu_job* job, int parts)


def relu(const float[::1] x, float[::1] out, int parts) -> None:
    """``out = max(x, 0)`` elementwise, NaN staying NaN; ``out`` may be ``x``."""
    cdef cl_relu_job job
    if out.shape[0] != x.shape[0] or parts < 1 or parts > 256:
        raise ValueError("out must have x's length and parts lie in 1..256")
    if x.shape[0] == 0:
        return
    job.x, job.out, job.size = &x[0], &out[0], x.shape[0]
    with nogil:
        cl_relu_all(&job, parts)


def relu_gradient(const float[::1] x, const float[::1] dy, float[::1] dx, int parts) -> None:
    """``dx = dy`` where ``x > 0``, else 0 (NaN in x gives 0), elementwise."""
    cdef cl_relu_job job
    if dy.shape[0] != x.shape[0] or dx.shape[0] != x.shape[0] or parts < 1 or parts > 256:
        raise ValueError("x, dy and dx must have one length and parts lie in 1..256")
    if x.shape[0] == 0:
        return
    job.x, job.dy, job.out, job.size = &x[0], &dy[0], &dx[0], x.shape[0]
    with nogil:
        cl_relu_gradient_all(&job, parts)


cdef extern from "_cl_kernels.h" nogil:
    ctypedef struct cl_add_job:
        const float* a
        const float* b
        float* out
        Py_ssize_t size
        int relu
    void cl_add_all(cl_add_job* job, int parts)


def add(const float[::1] a, const float[::1] b, float[::1] out, bint relu, int parts) -> None:
    """``out = a + b`` elementwise, then ``max(out, 0)`` with ``relu`` (NaN staying NaN);
    ``out`` may be ``a`` or ``b``."""
    cdef cl_add_job job
    if b.shape[0] != a.shape[0] or out.shape[0] != a.shape[0] or parts < 1 or parts > 256:
        raise ValueError("a, b and out must have one length and parts lie in 1..256")
    if a.shape[0] == 0:
        return
    job.a, job.b, job.out, job.size, job.relu = &a[0], &b[0], &out[0], a.shape[0], relu
    with nogil:
        cl_add_all(&job, parts)


cdef extern from "_cl_kernels.h" nogil:
    ctypedef struct cl_direct_job:
        const float* x
        const float* wk
        const float* bias
        const float* dy
        float* y
        float* dwk
        float* band
        double* db
        cl_conv_geometry g
        Py_ssize_t num, f, dwk_size, band_size, band_rows
    void cl_direct_forward_all(cl_direct_job* job, int parts)
    void cl_direct_filter_gradient_all(cl_direct_job* job, int parts)


def direct_workspace(Py_ssize_t width, Py_ssize_t channels, tuple taps,
                     Py_ssize_t band_rows) -> int:
    """Values of workspace one part of a direct pass needs: a band of ``band_rows``
    output rows' input rows, zero-padded (``taps`` (kh, kw, sh, sw, ph, pw, dh, dw,
    out_h, out_w); ``width`` and ``channels`` the input's)."""
    kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w = taps
    return ((band_rows - 1) * sh + (kh - 1) * dh + 1) * (width + 2 * pw) * channels


cdef cl_direct_job _direct_job(const float[:, :, :, ::1] x, Py_ssize_t f, tuple taps,
                               float[::1] work, Py_ssize_t band_rows, int parts) except *:
    """The sizes of a direct pass, checked: the bands fit ``work`` and every value the
    filters read lies in a band (the pad copies only rows inside x)."""
    cdef cl_direct_job job = _direct_geometry(x, taps, band_rows, parts)
    job.num, job.f = x.shape[0], f
    job.band_size = direct_workspace(x.shape[2], x.shape[3], taps, band_rows)
    if work.shape[0] < parts * job.band_size:
        raise ValueError(f"the workspace holds {work.shape[0]} values, {parts} parts need "
                         f"{parts * job.band_size}")
    job.band = &work[0] if job.band_size else NULL
    job.x = &x[0, 0, 0, 0] if job.num * job.g.h * job.g.w * job.g.c else NULL
    job.bias = NULL
    job.db = NULL
    return job


cdef cl_direct_job _direct_geometry(const float[:, :, :, ::1] x, tuple taps,
                                    Py_ssize_t band_rows, int parts) except *:
    cdef cl_direct_job job
    cdef cl_conv_geometry g
    g.h, g.w, g.c = x.shape[1], x.shape[2], x.shape[3]
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.out_h, g.out_w = taps
    if min(g.kh, g.kw, g.sh, g.sw, g.dh, g.out_h, g.out_w, band_rows) < 1 or g.dw != 1:
        raise ValueError(f"invalid direct convolution geometry {taps} (bands of {band_rows})")
    if min(g.ph, g.pw) < 0 or parts < 1 or parts > 256:
        raise ValueError("pads must be >= 0 and parts in 1..256")
    if (g.out_w - 1) * g.sw + g.kw > g.w + 2 * g.pw:
        raise ValueError(f"{g.out_w} outputs of {g.kw} taps read beyond the padded width "
                         f"{g.w + 2 * g.pw}")
    job.g = g
    job.band_rows = band_rows
    return job


def conv_direct_forward(const float[:, :, :, ::1] x, const float[:, ::1] wk, bias,
                        float[:, :, :, ::1] y, tuple taps, float[::1] work,
                        Py_ssize_t band_rows, int parts) -> None:
    """``y`` (N, out_h, out_w, F) = the convolution of NHWC ``x`` with ``wk`` (kh*kw*C, F),
    each output pixel's columns read in place from a zero-padded band of rows, plus
    ``bias`` (F or None). ``taps`` is (kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w), dw
    1; each part pads its bands of ``band_rows`` output rows in its own
    :func:`direct_workspace` values of ``work``."""
    cdef cl_direct_job job = _direct_job(x, y.shape[3], taps, work, band_rows, parts)
    cdef const float[::1] shift
    _check_rows((y.shape[0], y.shape[1], y.shape[2], y.shape[3]),
                (job.num, job.g.out_h, job.g.out_w, job.f), "y")
    _check_rows((wk.shape[0], wk.shape[1]), (job.g.kh * job.g.kw * job.g.c, job.f), "wk")
    if bias is not None:
        shift = bias
        _check_rows((shift.shape[0],), (job.f,), "bias")
        if job.f:
            job.bias = &shift[0]
    if job.num * job.f == 0:
        return
    if job.g.c == 0:
        raise ValueError("a convolution needs at least one input channel")
    job.wk, job.y = &wk[0, 0], &y[0, 0, 0, 0]
    with nogil:
        cl_direct_forward_all(&job, parts)


def conv_direct_filter_gradient(const float[:, :, :, ::1] x, const float[:, :, :, ::1] dy,
                                float[:, :, ::1] dwk, db, tuple taps, float[::1] work,
                                Py_ssize_t band_rows, int parts) -> None:
    """The filter gradient of :func:`conv_direct_forward`, (kh*kw*C, F), summed into
    ``dwk[0]``; ``dwk`` is (parts, kh*kw*C, F), overwritten. Unless ``db`` is None, the
    bias gradient too: ``db`` (parts, F) float64, zero on entry, gets each part's sums of
    ``dy`` (the caller adds the parts up)."""
    cdef cl_direct_job job = _direct_job(x, dy.shape[3], taps, work, band_rows, parts)
    cdef double[:, ::1] sums
    if db is not None:
        sums = db
        if sums.shape[0] < parts or sums.shape[1] != job.f:
            raise ValueError(f"db must have shape (>= {parts}, {job.f})")
        if job.f:
            job.db = &sums[0, 0]
    _check_rows((dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3]),
                (job.num, job.g.out_h, job.g.out_w, job.f), "dy")
    if dwk.shape[0] < parts:
        raise ValueError(f"dwk needs {parts} slices")
    _check_rows((dwk.shape[1], dwk.shape[2]), (job.g.kh * job.g.kw * job.g.c, job.f),
                "a dwk slice")
    if job.num * job.f * job.g.c == 0:
        dwk[...] = 0
        return
    job.dy, job.dwk = &dy[0, 0, 0, 0], &dwk[0, 0, 0]
    job.dwk_size = dwk.shape[1] * dwk.shape[2]
    with nogil:
        cl_direct_filter_gradient_all(&job, parts)


cdef extern from "_cl_kernels.h" nogil:
    ctypedef struct cl_transpose_job:
        const float* src
        float* dst
        Py_ssize_t num, a, b
    void cl_transpose_all(cl_transpose_job* job, int parts)


def transpose_images(const float[:, :, ::1] src, float[:, :, ::1] dst, int parts) -> None:
    """``dst[n] = src[n].T``: (N, A, B) -> (N, B, A), as NHWC <-> NCHW takes it."""
    cdef cl_transpose_job job
    if (dst.shape[0], dst.shape[1], dst.shape[2]) != (src.shape[0], src.shape[2], src.shape[1]):
        raise ValueError("dst must have shape (N, B, A) for src (N, A, B)")
    if parts < 1 or parts > 256:
        raise ValueError("parts must lie in 1..256")
    if src.shape[0] * src.shape[1] * src.shape[2] == 0:
        return
    job.src, job.dst = &src[0, 0, 0], &dst[0, 0, 0]
    job.num, job.a, job.b = src.shape[0], src.shape[1], src.shape[2]
    with nogil:
        cl_transpose_all(&job, parts)
