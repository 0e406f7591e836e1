"""Compiled kernels of convnet: im2col, col2im, depthwise convolution, max and average
pooling over NCHW arrays.

Every function trusts its arguments: the Python layers (``convnet.fast_conv``,
``fast_conv_transpose``, ``fast_pool``) have checked shapes, dtypes, contiguity, the
output sizes, strides and pads below 2**31, and that a pooling cache's argmax matches its
gradient, before the call. Every function releases the GIL and runs single-threaded: the fast layers call it from one worker thread
per core (``convnet._parallel``), each on its own images, so no two threads ever write
the same element.

Column layout shared by im2col and col2im, for a kernel of size (kh, kw) with dilation
(dh, dw): one (C*kh*kw, out_h*out_w) matrix per image, so a GEMM with the (F, C*kh*kw)
filters writes straight into the NCHW output (and group g of a grouped convolution owns
the contiguous block of rows of its channels)::

    cols[n, (c * kh + i) * kw + j, oh * out_w + ow]
        = x[n, c, oh * sh - ph + i * dh, ow * sw - pw + j * dw]   (0 in the padding)
"""

from cython cimport floating
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


cdef inline Py_ssize_t _first_inside(Py_ssize_t pad, Py_ssize_t offset,
                                     Py_ssize_t stride, Py_ssize_t out_size) noexcept nogil:
    """Smallest o in [0, out_size] with o * stride - pad + offset >= 0."""
    cdef Py_ssize_t start = pad - offset
    if start <= 0:
        return 0
    start = (start - 1) // stride + 1
    return start if start < out_size else out_size


cdef inline Py_ssize_t _end_inside(Py_ssize_t pad, Py_ssize_t offset, Py_ssize_t stride,
                                   Py_ssize_t size, Py_ssize_t out_size) noexcept nogil:
    """One past the largest o in [0, out_size) with o * stride - pad + offset < size."""
    cdef Py_ssize_t last = size - 1 + pad - offset
    if last < 0:
        return 0
    last = last // stride + 1
    return last if last < out_size else out_size


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols,
           Py_ssize_t kernel_h, Py_ssize_t kernel_w,
           Py_ssize_t stride_h, Py_ssize_t stride_w,
           Py_ssize_t pad_h, Py_ssize_t pad_w,
           Py_ssize_t out_h, Py_ssize_t out_w,
           Py_ssize_t dilation_h, Py_ssize_t dilation_w) -> None:
    """Copy every receptive field of ``x`` (N, C, H, W) into ``cols`` (N, C*kh*kw, out_h*out_w).

    The padding is virtual: entries that fall in it are written as 0.
    """
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1]
    cdef Py_ssize_t height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t rows = channels * kernel_h * kernel_w
    cdef Py_ssize_t row, c, i, j, n, oh, ow, y, ow_lo, ow_hi
    cdef floating* dst
    cdef const floating* src
    with nogil:
        for n in range(num):
            for row in range(rows):
                c = row // (kernel_h * kernel_w)
                i = ((row // kernel_w) % kernel_h) * dilation_h
                j = (row % kernel_w) * dilation_w
                ow_lo = _first_inside(pad_w, j, stride_w, out_w)
                ow_hi = _end_inside(pad_w, j, stride_w, width, out_w)
                if ow_hi < ow_lo:
                    ow_hi = ow_lo
                for oh in range(out_h):
                    dst = &cols[n, row, oh * out_w]
                    y = oh * stride_h - pad_h + i
                    if y < 0 or y >= height:
                        for ow in range(out_w):
                            dst[ow] = 0
                        continue
                    src = &x[n, c, y, 0]
                    for ow in range(ow_lo):
                        dst[ow] = 0
                    if stride_w == 1:
                        for ow in range(ow_lo, ow_hi):
                            dst[ow] = src[ow - pad_w + j]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            dst[ow] = src[ow * stride_w - pad_w + j]
                    for ow in range(ow_hi, out_w):
                        dst[ow] = 0


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] dx,
           Py_ssize_t kernel_h, Py_ssize_t kernel_w,
           Py_ssize_t stride_h, Py_ssize_t stride_w,
           Py_ssize_t pad_h, Py_ssize_t pad_w,
           Py_ssize_t out_h, Py_ssize_t out_w,
           Py_ssize_t dilation_h, Py_ssize_t dilation_w) -> None:
    """Add every column entry back onto the input position im2col copied it from.

    ``dx`` (N, C, H, W) is accumulated into (pass zeros for a plain gradient); entries of
    ``cols`` (N, C*kh*kw, out_h*out_w) that lie in the padding are dropped.
    """
    cdef Py_ssize_t num = dx.shape[0], channels = dx.shape[1]
    cdef Py_ssize_t height = dx.shape[2], width = dx.shape[3]
    cdef Py_ssize_t plane, row, c, i, j, n, oh, ow, y, ow_lo, ow_hi, di, dj
    cdef floating* dst
    cdef const floating* src
    with nogil:
        for plane in range(num * channels):
            n = plane // channels
            c = plane % channels
            for i in range(kernel_h):
                di = i * dilation_h
                for j in range(kernel_w):
                    dj = j * dilation_w
                    row = (c * kernel_h + i) * kernel_w + j
                    ow_lo = _first_inside(pad_w, dj, stride_w, out_w)
                    ow_hi = _end_inside(pad_w, dj, stride_w, width, out_w)
                    for oh in range(out_h):
                        y = oh * stride_h - pad_h + di
                        if y < 0 or y >= height:
                            continue
                        src = &cols[n, row, oh * out_w]
                        dst = &dx[n, c, y, 0]
                        for ow in range(ow_lo, ow_hi):
                            dst[ow * stride_w - pad_w + dj] += src[ow]


cdef extern from "_max_pool.h":
    void convnet_max_pool_plane_float(
        const float* x, Py_ssize_t width, Py_ssize_t out_h, Py_ssize_t out_w,
        Py_ssize_t pool_h, Py_ssize_t pool_w, Py_ssize_t stride_h, Py_ssize_t stride_w,
        Py_ssize_t band, bint two_by_two, float* row_best, void* indices, size_t rows,
        float* out, int* argmax) noexcept nogil
    void convnet_max_pool_plane_double(
        const double* x, Py_ssize_t width, Py_ssize_t out_h, Py_ssize_t out_w,
        Py_ssize_t pool_h, Py_ssize_t pool_w, Py_ssize_t stride_h, Py_ssize_t stride_w,
        Py_ssize_t band, bint two_by_two, double* row_best, void* indices, size_t rows,
        double* out, int* argmax) noexcept nogil


DEF BAND_ELEMENTS = 4096


def max_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                     int[:, :, :, ::1] argmax,
                     Py_ssize_t pool_h, Py_ssize_t pool_w,
                     Py_ssize_t stride_h, Py_ssize_t stride_w) -> None:
    """Max over each window of ``x`` (N, C, H, W) into ``out`` (N, C, out_h, out_w).

    ``argmax`` receives the flat index ``y * W + x`` of each window's first maximum in
    row-major order; a NaN is the maximum of any window holding one (its first NaN).
    Windows of 2x2 with stride 2 take a dedicated loop; every other window is separable
    (the maxima along rows once for all the windows of a band of rows, then down each
    window's rows). Both select with bit masks rather than branches, in loops gcc
    vectorizes (``_max_pool.h``).
    """
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1], width = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t plane, n, c
    cdef bint two_by_two = pool_h == 2 and pool_w == 2 and stride_h == 2 and stride_w == 2
    # Bands of output rows whose input rows hold about BAND_ELEMENTS values (L1-sized).
    cdef Py_ssize_t band = max(1, BAND_ELEMENTS // max(1, stride_h * width))
    if band > out_h:
        band = out_h
    cdef size_t rows = 0 if two_by_two else ((band - 1) * stride_h + pool_h) * width
    cdef char* scratch = <char*>malloc(2 * (rows + out_w) * sizeof(double) + 1)
    cdef floating* row_best = <floating*>scratch
    cdef char* indices = scratch + rows * sizeof(floating)
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            for plane in range(num * channels):
                n = plane // channels
                c = plane % channels
                if floating is float:
                    convnet_max_pool_plane_float(
                        &x[n, c, 0, 0], width, out_h, out_w, pool_h, pool_w, stride_h, stride_w,
                        band, two_by_two, row_best, indices, rows, &out[n, c, 0, 0],
                        &argmax[n, c, 0, 0])
                else:
                    convnet_max_pool_plane_double(
                        &x[n, c, 0, 0], width, out_h, out_w, pool_h, pool_w, stride_h, stride_w,
                        band, two_by_two, row_best, indices, rows, &out[n, c, 0, 0],
                        &argmax[n, c, 0, 0])
    finally:
        free(scratch)


def max_pool_backward(const floating[:, :, :, ::1] dout, const int[:, :, :, ::1] argmax,
                      floating[:, :, :, ::1] dx) -> None:
    """Write into ``dx`` (N, C, H, W) the gradient of max pooling: zero, plus each entry of
    ``dout`` (N, C, out_h, out_w) at its recorded argmax (overlapping windows accumulate).

    ``dx`` need not be initialized; each plane is zeroed just before its scatter, while it
    is in cache.
    """
    cdef Py_ssize_t num = dout.shape[0], channels = dout.shape[1]
    cdef Py_ssize_t out_h = dout.shape[2], out_w = dout.shape[3]
    cdef Py_ssize_t plane_size = dx.shape[2] * dx.shape[3]
    cdef Py_ssize_t plane, n, c, k
    cdef floating* dst
    cdef const floating* grad
    cdef const int* index
    with nogil:
        for plane in range(num * channels):
            n = plane // channels
            c = plane % channels
            dst = &dx[n, c, 0, 0]
            grad = &dout[n, c, 0, 0]
            index = &argmax[n, c, 0, 0]
            memset(dst, 0, plane_size * sizeof(floating))
            for k in range(out_h * out_w):
                dst[index[k]] += grad[k]


cdef extern from "_depthwise_taps.h":
    float convnet_dot_float(const float* a, const float* b, Py_ssize_t count) noexcept nogil
    double convnet_dot_double(const double* a, const double* b, Py_ssize_t count) noexcept nogil
    void convnet_add_taps_float(float* acc, const float* src, const float* weights,
                                Py_ssize_t taps, Py_ssize_t first, Py_ssize_t step,
                                Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void convnet_add_taps_double(double* acc, const double* src, const double* weights,
                                 Py_ssize_t taps, Py_ssize_t first, Py_ssize_t step,
                                 Py_ssize_t lo, Py_ssize_t hi) noexcept nogil


cdef inline void _pad_plane(const floating* src, Py_ssize_t height, Py_ssize_t width,
                            Py_ssize_t pad_h, Py_ssize_t pad_w, floating* dst,
                            Py_ssize_t size) noexcept nogil:
    """``dst`` (``size`` >= (H + 2*ph) * (W + 2*pw) elements): zeros, with the H x W plane
    ``src`` at row ``ph + y``, column ``pw + x`` of rows W + 2*pw long."""
    cdef Py_ssize_t y, padded_width = width + 2 * pad_w
    memset(dst, 0, size * sizeof(floating))
    for y in range(height):
        memcpy(&dst[(y + pad_h) * padded_width + pad_w], &src[y * width],
               width * sizeof(floating))


cdef inline floating _dot(const floating* a, const floating* b,
                          Py_ssize_t count) noexcept nogil:
    """``sum(a[q] * b[q])`` over 16 running sums, so the products vectorize."""
    if floating is float:
        return convnet_dot_float(a, b, count)
    else:
        return convnet_dot_double(a, b, count)


cdef inline floating _dot_rows(const floating* a, const floating* b, Py_ssize_t rows,
                               Py_ssize_t length, Py_ssize_t row_stride) noexcept nogil:
    """``sum(a[r * row_stride + o] * b[r * row_stride + o])`` over ``rows`` rows of
    ``length``, in 16 running sums so the products vectorize. Only the first ``length``
    elements of each row are read: a NaN beyond them (in x's padding columns) stays out."""
    cdef floating sums[16]
    cdef floating total = 0
    cdef Py_ssize_t r, q, v, start, blocks = length - length % 16
    for v in range(16):
        sums[v] = 0
    for r in range(rows):
        start = r * row_stride
        for q in range(start, start + blocks, 16):
            for v in range(16):
                sums[v] += a[q + v] * b[q + v]
        for q in range(start + blocks, start + length):
            total += a[q] * b[q]
    for v in range(16):
        total += sums[v]
    return total


cdef class _FlatPlanes:
    """Scratch for the stride-1 depthwise loops, which work on flat padded planes.

    With stride 1, output (oh, ow) reads padded input (oh + a*dh, ow + e*dw): laid out
    in rows of the padded width Wp, tap (a, e) is one shift ``a*dh*Wp + e*dw`` of the
    whole flat plane, so the taps are long vectorizable loops (three taps a pass)
    instead of out_h short ones (measured 3x faster on 16x16 planes). The out_w..Wp
    columns of each flat output row are scratch. ``spread`` holds a flat dout plane
    after ``max_shift`` zeros, so the input gradient gathers instead of scattering.
    """

    cdef Py_ssize_t padded_width, padded_size, flat_out, max_shift, spread_size
    cdef void* padded
    cdef void* rows
    cdef void* spread

    def __cinit__(self, Py_ssize_t height, Py_ssize_t width, Py_ssize_t pad_h,
                  Py_ssize_t pad_w, Py_ssize_t out_h, Py_ssize_t kernel_h,
                  Py_ssize_t kernel_w, Py_ssize_t dilation_h, Py_ssize_t dilation_w,
                  Py_ssize_t itemsize):
        self.padded_width = width + 2 * pad_w
        self.padded_size = ((height + 2 * pad_h) * self.padded_width
                            + dilation_w * (kernel_w - 1) + 1)
        self.flat_out = out_h * self.padded_width
        self.max_shift = ((kernel_h - 1) * dilation_h * self.padded_width
                          + (kernel_w - 1) * dilation_w)
        self.spread_size = self.padded_size + self.max_shift
        self.padded = malloc(self.padded_size * itemsize)
        self.rows = malloc((self.flat_out + 1) * itemsize)
        self.spread = malloc(self.spread_size * itemsize)
        if self.padded == NULL or self.rows == NULL or self.spread == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.padded)
        free(self.rows)
        free(self.spread)


cdef inline void _add_taps(floating* acc, const floating* src, const floating* weights,
                           Py_ssize_t taps, Py_ssize_t first, Py_ssize_t step,
                           Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """``acc[u] += sum_e weights[e] * src[u + first + e * step]`` for u in [lo, hi), three
    taps per pass over ``acc``; every ``first + e * step`` is >= 0; ``acc`` and ``src``
    do not overlap."""
    if floating is float:
        convnet_add_taps_float(acc, src, weights, taps, first, step, lo, hi)
    else:
        convnet_add_taps_double(acc, src, weights, taps, first, step, lo, hi)


cdef inline void _flat_rows(const floating* src, Py_ssize_t out_h, Py_ssize_t out_w,
                            Py_ssize_t padded_width, floating* dst) noexcept nogil:
    """The (out_h, out_w) plane ``src`` in rows ``padded_width`` long, zero beyond out_w."""
    cdef Py_ssize_t oh
    memset(dst, 0, out_h * padded_width * sizeof(floating))
    for oh in range(out_h):
        memcpy(&dst[oh * padded_width], &src[oh * out_w], out_w * sizeof(floating))


def depthwise_forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] w,
                      const floating[::1] bias, floating[:, :, :, ::1] out,
                      Py_ssize_t stride_h, Py_ssize_t stride_w,
                      Py_ssize_t pad_h, Py_ssize_t pad_w,
                      Py_ssize_t dilation_h, Py_ssize_t dilation_w) -> None:
    """Convolution with one input channel per group, straight from ``x`` (no columns).

    ``out[n, f, oh, ow] = bias[f] + sum_{a, e} w[f, a, e]
    * x_pad[n, f // m, oh * sh + a * dh, ow * sw + e * dw]``, with ``m = F // C`` filters
    per input channel, ``w`` (F, kh, kw) and ``x_pad`` each plane zero-padded in scratch
    (so a NaN weight reaches every output, as in the naive layer). A GEMM per group
    would multiply a (m, kh*kw) by a (kh*kw, out_h*out_w) matrix, too small for BLAS to
    amortize its calls (measured 6x slower on 64 channels of 16x16).
    """
    cdef Py_ssize_t num = out.shape[0], filters = out.shape[1]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t multiplier = filters // x.shape[1]
    cdef Py_ssize_t kernel_h = w.shape[1], kernel_w = w.shape[2]
    cdef Py_ssize_t plane, n, f, a, e, oh, ow, q
    cdef bint flat_rows = stride_h == 1 and stride_w == 1
    cdef floating weight
    cdef floating* dst
    cdef const floating* src
    cdef _FlatPlanes flat
    cdef floating* padded
    cdef floating* rows
    if num * filters == 0:
        return
    flat = _FlatPlanes(height, width, pad_h, pad_w, out_h, kernel_h, kernel_w,
                       dilation_h, dilation_w, sizeof(floating))
    padded = <floating*>flat.padded
    rows = <floating*>flat.rows
    with nogil:
        for plane in range(num * filters):
            n = plane // filters
            f = plane % filters
            if f % multiplier == 0:
                _pad_plane(&x[n, f // multiplier, 0, 0], height, width, pad_h, pad_w,
                           padded, flat.padded_size)
            if flat_rows:
                for q in range(flat.flat_out):
                    rows[q] = bias[f]
                for a in range(kernel_h):
                    _add_taps(rows, padded, &w[f, a, 0], kernel_w,
                              a * dilation_h * flat.padded_width, dilation_w, 0, flat.flat_out)
                for oh in range(out_h):
                    memcpy(&out[n, f, oh, 0], &rows[oh * flat.padded_width],
                           out_w * sizeof(floating))
                continue
            for oh in range(out_h):
                dst = &out[n, f, oh, 0]
                for ow in range(out_w):
                    dst[ow] = bias[f]
                for a in range(kernel_h):
                    src = &padded[(oh * stride_h + a * dilation_h) * flat.padded_width]
                    for e in range(kernel_w):
                        weight = w[f, a, e]
                        for ow in range(out_w):
                            dst[ow] += weight * src[ow * stride_w + e * dilation_w]


def depthwise_backward_input(const floating[:, :, :, ::1] dout, const floating[:, :, ::1] w,
                             floating[:, :, :, ::1] dx,
                             Py_ssize_t stride_h, Py_ssize_t stride_w,
                             Py_ssize_t pad_h, Py_ssize_t pad_w,
                             Py_ssize_t dilation_h, Py_ssize_t dilation_w,
                             bint finite_weights) -> None:
    """Write into ``dx`` (N, C, H, W) the input gradient of :func:`depthwise_forward`.

    ``dx_pad[n, c, oh * sh + a * dh, ow * sw + e * dw] += w[f, a, e] * dout[n, f, oh, ow]``
    over the m filters ``f`` of channel ``c``, in a zeroed padded plane whose interior is
    then copied out. With stride 1 the taps gather from a shifted copy of dout instead;
    that multiplies zeros by every weight, so it needs ``finite_weights`` (a NaN weight
    must reach only the positions its tap touches).
    """
    cdef Py_ssize_t num = dx.shape[0], channels = dx.shape[1]
    cdef Py_ssize_t height = dx.shape[2], width = dx.shape[3]
    cdef Py_ssize_t out_h = dout.shape[2], out_w = dout.shape[3]
    cdef Py_ssize_t multiplier = dout.shape[1] // channels
    cdef Py_ssize_t kernel_h = w.shape[1], kernel_w = w.shape[2]
    cdef Py_ssize_t plane, n, c, f, k, a, e, oh, ow, y
    cdef bint gather = stride_h == 1 and stride_w == 1 and finite_weights
    cdef floating weight
    cdef floating* dst
    cdef const floating* src
    cdef _FlatPlanes flat
    cdef floating* padded
    cdef floating* spread
    if num * channels == 0:
        return
    flat = _FlatPlanes(height, width, pad_h, pad_w, out_h, kernel_h, kernel_w,
                       dilation_h, dilation_w, sizeof(floating))
    padded = <floating*>flat.padded
    spread = <floating*>flat.spread
    with nogil:
        for plane in range(num * channels):
            n = plane // channels
            c = plane % channels
            memset(padded, 0, flat.padded_size * sizeof(floating))
            for k in range(multiplier):
                f = c * multiplier + k
                if gather:
                    memset(spread, 0, flat.spread_size * sizeof(floating))
                    _flat_rows(&dout[n, f, 0, 0], out_h, out_w, flat.padded_width,
                               &spread[flat.max_shift])
                    for a in range(kernel_h):
                        _add_taps(padded, spread, &w[f, a, 0], kernel_w,
                                  flat.max_shift - a * dilation_h * flat.padded_width,
                                  -dilation_w, pad_h * flat.padded_width,
                                  (pad_h + height) * flat.padded_width)
                    continue
                for oh in range(out_h):
                    src = &dout[n, f, oh, 0]
                    for a in range(kernel_h):
                        dst = &padded[(oh * stride_h + a * dilation_h) * flat.padded_width]
                        for e in range(kernel_w):
                            weight = w[f, a, e]
                            for ow in range(out_w):
                                dst[ow * stride_w + e * dilation_w] += weight * src[ow]
            for y in range(height):
                memcpy(&dx[n, c, y, 0], &padded[(y + pad_h) * flat.padded_width + pad_w],
                       width * sizeof(floating))


def depthwise_backward_weight(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] dout, floating[:, :, ::1] dw,
                              Py_ssize_t stride_h, Py_ssize_t stride_w,
                              Py_ssize_t pad_h, Py_ssize_t pad_w,
                              Py_ssize_t dilation_h, Py_ssize_t dilation_w) -> None:
    """Add to ``dw`` (F, kh, kw) the filter gradient of :func:`depthwise_forward`.

    ``dw[f, a, e] += sum_{n, oh, ow} dout[n, f, oh, ow]
    * x_pad[n, f // m, oh * sh + a * dh, ow * sw + e * dw]``. With stride 1, each tap is
    one dot product over the flat planes, whose padding columns multiply dout's zeros by
    x: a plane holding a NaN or an infinity takes the row-by-row dot instead, so it
    reaches only the taps that read it.
    """
    cdef Py_ssize_t num = dout.shape[0], filters = dout.shape[1]
    cdef Py_ssize_t out_h = dout.shape[2], out_w = dout.shape[3]
    cdef Py_ssize_t height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t multiplier = filters // x.shape[1]
    cdef Py_ssize_t kernel_h = dw.shape[1], kernel_w = dw.shape[2]
    cdef Py_ssize_t plane, n, f, a, e, oh, ow, shift
    cdef bint flat_rows = stride_h == 1 and stride_w == 1
    cdef bint finite = True
    cdef floating total
    cdef const floating* grad
    cdef const floating* src
    cdef _FlatPlanes flat
    cdef floating* padded
    cdef floating* rows
    if num * filters == 0:
        return
    flat = _FlatPlanes(height, width, pad_h, pad_w, out_h, kernel_h, kernel_w,
                       dilation_h, dilation_w, sizeof(floating))
    padded = <floating*>flat.padded
    rows = <floating*>flat.rows
    with nogil:
        for plane in range(num * filters):
            n = plane // filters
            f = plane % filters
            if f % multiplier == 0:
                _pad_plane(&x[n, f // multiplier, 0, 0], height, width, pad_h, pad_w,
                           padded, flat.padded_size)
                if flat_rows:
                    total = _dot(padded, padded, flat.padded_size)
                    finite = total - total == 0
            if flat_rows:
                _flat_rows(&dout[n, f, 0, 0], out_h, out_w, flat.padded_width, rows)
                for a in range(kernel_h):
                    for e in range(kernel_w):
                        shift = a * dilation_h * flat.padded_width + e * dilation_w
                        if finite:
                            dw[f, a, e] += _dot(rows, &padded[shift], flat.flat_out)
                        else:
                            dw[f, a, e] += _dot_rows(rows, &padded[shift], out_h, out_w,
                                                     flat.padded_width)
                continue
            for a in range(kernel_h):
                for e in range(kernel_w):
                    total = 0
                    for oh in range(out_h):
                        grad = &dout[n, f, oh, 0]
                        src = &padded[(oh * stride_h + a * dilation_h) * flat.padded_width
                                      + e * dilation_w]
                        for ow in range(out_w):
                            total = total + grad[ow] * src[ow * stride_w]
                    dw[f, a, e] += total


def avg_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                     Py_ssize_t pool_h, Py_ssize_t pool_w,
                     Py_ssize_t stride_h, Py_ssize_t stride_w) -> None:
    """Mean of each window of ``x`` (N, C, H, W) into ``out`` (N, C, out_h, out_w).

    Each output row sums its window's rows element-wise, then scales by 1 / (ph * pw).
    """
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1], width = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t plane, n, c, oh, ow, i, j
    cdef floating scale = 1.0 / <double>(pool_h * pool_w)
    cdef floating total
    cdef const floating* row
    cdef floating* out_row
    with nogil:
        for plane in range(num * channels):
            n = plane // channels
            c = plane % channels
            for oh in range(out_h):
                out_row = &out[n, c, oh, 0]
                row = &x[n, c, oh * stride_h, 0]
                if pool_h == 2 and pool_w == 2 and stride_w == 2:
                    for ow in range(out_w):
                        out_row[ow] = ((row[2 * ow] + row[2 * ow + 1])
                                       + (row[width + 2 * ow] + row[width + 2 * ow + 1])) * scale
                    continue
                for ow in range(out_w):
                    total = 0
                    for i in range(pool_h):
                        for j in range(pool_w):
                            total = total + row[i * width + ow * stride_w + j]
                    out_row[ow] = total * scale


def avg_pool_backward(const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] dx,
                      Py_ssize_t pool_h, Py_ssize_t pool_w,
                      Py_ssize_t stride_h, Py_ssize_t stride_w) -> None:
    """Write into ``dx`` (N, C, H, W) the gradient of average pooling: zero, plus
    ``dout / (ph * pw)`` over each window (overlapping windows add up).

    ``dx`` need not be initialized; each plane is zeroed just before its scatter.
    """
    cdef Py_ssize_t num = dout.shape[0], channels = dout.shape[1]
    cdef Py_ssize_t out_h = dout.shape[2], out_w = dout.shape[3]
    cdef Py_ssize_t width = dx.shape[3], plane_size = dx.shape[2] * dx.shape[3]
    cdef Py_ssize_t plane, n, c, oh, ow, i, j
    cdef floating scale = 1.0 / <double>(pool_h * pool_w)
    cdef floating share
    cdef const floating* grad
    cdef floating* dst
    with nogil:
        for plane in range(num * channels):
            n = plane // channels
            c = plane % channels
            memset(&dx[n, c, 0, 0], 0, plane_size * sizeof(floating))
            for oh in range(out_h):
                grad = &dout[n, c, oh, 0]
                for i in range(pool_h):
                    dst = &dx[n, c, oh * stride_h + i, 0]
                    if pool_w == 2 and stride_w == 2:
                        for ow in range(out_w):
                            share = grad[ow] * scale
                            dst[2 * ow] += share
                            dst[2 * ow + 1] += share
                        continue
                    for ow in range(out_w):
                        share = grad[ow] * scale
                        for j in range(ow * stride_w, ow * stride_w + pool_w):
                            dst[j] += share


def split_phases(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] phases,
                 Py_ssize_t dilation, Py_ssize_t first, Py_ssize_t last) -> None:
    """Write the d*d phases of images ``first:last`` of ``x`` (N, C, d*h, d*w) into
    ``phases`` (d*d*N, C, h, w): ``phases[(r*d + s)*N + n, c, i, j] = x[n, c, d*i + r,
    d*j + s]``. (numpy's strided copy of the same runs at a few GB/s: its inner loops
    are w elements short.)"""
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1]
    cdef Py_ssize_t height = phases.shape[2], width = phases.shape[3]
    cdef Py_ssize_t n, c, i, j, r, s
    cdef const floating* src
    cdef floating* dst
    cdef floating* dst_odd
    with nogil:
        for n in range(first, last):
            for c in range(channels):
                for i in range(height):
                    for r in range(dilation):
                        src = &x[n, c, i * dilation + r, 0]
                        if dilation == 2:  # constant strides: gcc vectorizes (measured 2x)
                            dst = &phases[2 * r * num + n, c, i, 0]
                            dst_odd = &phases[(2 * r + 1) * num + n, c, i, 0]
                            for j in range(width):
                                dst[j] = src[2 * j]
                                dst_odd[j] = src[2 * j + 1]
                            continue
                        for s in range(dilation):
                            dst = &phases[(r * dilation + s) * num + n, c, i, 0]
                            for j in range(width):
                                dst[j] = src[j * dilation + s]


def merge_phases(const floating[:, :, :, ::1] phases, floating[:, :, :, ::1] out,
                 Py_ssize_t dilation, Py_ssize_t first, Py_ssize_t last) -> None:
    """Inverse of :func:`split_phases` for images ``first:last`` of ``out``
    (N, C, d*h, d*w)."""
    cdef Py_ssize_t num = out.shape[0], channels = out.shape[1]
    cdef Py_ssize_t height = phases.shape[2], width = phases.shape[3]
    cdef Py_ssize_t n, c, i, j, r, s
    cdef const floating* src
    cdef const floating* src_odd
    cdef floating* dst
    with nogil:
        for n in range(first, last):
            for c in range(channels):
                for i in range(height):
                    for r in range(dilation):
                        dst = &out[n, c, i * dilation + r, 0]
                        if dilation == 2:  # constant strides: gcc vectorizes
                            src = &phases[2 * r * num + n, c, i, 0]
                            src_odd = &phases[(2 * r + 1) * num + n, c, i, 0]
                            for j in range(width):
                                dst[2 * j] = src[j]
                                dst[2 * j + 1] = src_odd[j]
                            continue
                        for s in range(dilation):
                            src = &phases[(r * dilation + s) * num + n, c, i, 0]
                            for j in range(width):
                                dst[j * dilation + s] = src[j]
