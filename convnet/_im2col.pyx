"""Compiled kernels of convnet: im2col, col2im and max pooling over NCHW arrays.

Every function trusts its arguments: the Python layer in ``convnet.fast_layers`` has
checked shapes, dtypes, contiguity, the output sizes, strides and pads below 2**31, and
that a pooling cache's argmax matches its gradient, before the call. Every function
releases the GIL and runs single-threaded: the fast layers call it from one worker thread
per core (``convnet._parallel``), each on its own images, so no two threads ever write
the same element.

Column layout shared by im2col and col2im, for a kernel of size (kh, kw): one
(C*kh*kw, out_h*out_w) matrix per image, so a GEMM with the (F, C*kh*kw) filters writes
straight into the NCHW output::

    cols[n, (c * kh + i) * kw + j, oh * out_w + ow]
        = x[n, c, oh * sh - ph + i, ow * sw - pw + j]     (0 where that lies in the padding)
"""

from cython cimport floating
from libc.string cimport memset


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
           Py_ssize_t out_h, Py_ssize_t out_w) -> None:
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
                i = (row // kernel_w) % kernel_h
                j = row % kernel_w
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
           Py_ssize_t out_h, Py_ssize_t out_w) -> None:
    """Add every column entry back onto the input position im2col copied it from.

    ``dx`` (N, C, H, W) is accumulated into (pass zeros for a plain gradient); entries of
    ``cols`` (N, C*kh*kw, out_h*out_w) that lie in the padding are dropped.
    """
    cdef Py_ssize_t num = dx.shape[0], channels = dx.shape[1]
    cdef Py_ssize_t height = dx.shape[2], width = dx.shape[3]
    cdef Py_ssize_t plane, row, c, i, j, n, oh, ow, y, ow_lo, ow_hi
    cdef floating* dst
    cdef const floating* src
    with nogil:
        for plane in range(num * channels):
            n = plane // channels
            c = plane % channels
            for i in range(kernel_h):
                for j in range(kernel_w):
                    row = (c * kernel_h + i) * kernel_w + j
                    ow_lo = _first_inside(pad_w, j, stride_w, out_w)
                    ow_hi = _end_inside(pad_w, j, stride_w, width, out_w)
                    for oh in range(out_h):
                        y = oh * stride_h - pad_h + i
                        if y < 0 or y >= height:
                            continue
                        src = &cols[n, row, oh * out_w]
                        dst = &dx[n, c, y, 0]
                        for ow in range(ow_lo, ow_hi):
                            dst[ow * stride_w - pad_w + j] += src[ow]


cdef inline Py_ssize_t _beats(floating value, floating best) noexcept nogil:
    """1 if ``value`` replaces ``best`` when scanning in row-major order, else 0: the
    first maximum wins, and the first NaN beats every number."""
    return (value > best) | ((value != value) & (best == best))


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* (*best, *best_index) = (value, index) if take is 1, unchanged if it is 0, selected
       with bit masks: on random data a branch here would mispredict half the time. */
    #define CONVNET_DEFINE_SELECT(NAME, TYPE, BITS)                                      \
    static inline void NAME(Py_ssize_t take, TYPE value, Py_ssize_t index, TYPE *best,  \
                            Py_ssize_t *best_index) {                                     \
        BITS value_bits, best_bits, mask = (BITS)0 - (BITS)take;                          \
        memcpy(&value_bits, &value, sizeof(TYPE));                                        \
        memcpy(&best_bits, best, sizeof(TYPE));                                           \
        best_bits = (best_bits & ~mask) | (value_bits & mask);                            \
        memcpy(best, &best_bits, sizeof(TYPE));                                           \
        *best_index ^= (*best_index ^ index) & -take;                                     \
    }
    CONVNET_DEFINE_SELECT(convnet_select_float, float, uint32_t)
    CONVNET_DEFINE_SELECT(convnet_select_double, double, uint64_t)
    """
    void convnet_select_float(Py_ssize_t take, float value, Py_ssize_t index, float* best,
                              Py_ssize_t* best_index) noexcept nogil
    void convnet_select_double(Py_ssize_t take, double value, Py_ssize_t index,
                               double* best, Py_ssize_t* best_index) noexcept nogil


cdef inline void _take(floating value, Py_ssize_t index, floating* best,
                       Py_ssize_t* best_index) noexcept nogil:
    """Make (value, index) the best so far if ``value`` beats ``*best``, without a branch."""
    if floating is float:
        convnet_select_float(_beats(value, best[0]), value, index, best, best_index)
    else:
        convnet_select_double(_beats(value, best[0]), value, index, best, best_index)


def max_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                     int[:, :, :, ::1] argmax,
                     Py_ssize_t pool_h, Py_ssize_t pool_w,
                     Py_ssize_t stride_h, Py_ssize_t stride_w) -> None:
    """Max over each window of ``x`` (N, C, H, W) into ``out`` (N, C, out_h, out_w).

    ``argmax`` receives the flat index ``y * W + x`` of each window's first maximum in
    row-major order; a NaN is the maximum of any window holding one (its first NaN).
    Windows of 2x2 with stride 2 take a dedicated loop that selects with bit masks rather
    than branches (random data would mispredict half of them). In larger windows a new maximum grows rare as the scan
    goes on, so the general loop branches.
    """
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1], width = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t plane, n, c, oh, ow, i, j, top, left, best_index, first, second
    cdef floating best, value
    cdef const floating* row
    cdef floating* out_row
    cdef int* argmax_row
    cdef bint two_by_two = pool_h == 2 and pool_w == 2 and stride_h == 2 and stride_w == 2
    with nogil:
        for plane in range(num * channels):
            n = plane // channels
            c = plane % channels
            for oh in range(out_h):
                top = oh * stride_h
                out_row = &out[n, c, oh, 0]
                argmax_row = &argmax[n, c, oh, 0]
                row = &x[n, c, top, 0]
                if two_by_two and floating is float:
                    for ow in range(out_w):
                        left = 2 * ow
                        best = row[left]
                        best_index = left
                        _take(row[left + 1], left + 1, &best, &best_index)
                        _take(row[width + left], width + left, &best, &best_index)
                        _take(row[width + left + 1], width + left + 1, &best, &best_index)
                        out_row[ow] = best
                        argmax_row[ow] = <int>(top * width + best_index)
                    continue
                if two_by_two:
                    for ow in range(out_w):
                        left = 2 * ow
                        first = left + _beats(row[left + 1], row[left])
                        second = width + left + _beats(row[width + left + 1], row[width + left])
                        best_index = first + (second - first) * _beats(row[second], row[first])
                        out_row[ow] = row[best_index]
                        argmax_row[ow] = <int>(top * width + best_index)
                    continue
                for ow in range(out_w):
                    left = ow * stride_w
                    best = row[left]
                    best_index = left
                    for i in range(pool_h):
                        for j in range(left + i * width, left + i * width + pool_w):
                            value = row[j]
                            if _beats(value, best):
                                best = value
                                best_index = j
                    out_row[ow] = best
                    argmax_row[ow] = <int>(top * width + best_index)


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
