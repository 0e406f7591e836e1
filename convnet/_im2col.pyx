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
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
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


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Max pooling of one (H, W) plane, in C so that gcc vectorizes the loops over output
       columns. Every selection is branch-free, done on the bits (a branch on random data
       mispredicts half the time): BEATS(v, b) is 1 if v replaces the best b when scanning
       in row-major order (larger, or the first NaN), and U is the unsigned integer type of
       T's width, so values and indices select with one mask. Where gcc can, the functions
       are compiled twice, for AVX2 and for the baseline x86-64 (SSE2), and the loader
       picks one for the CPU (measured on (64,64,16,16): the float64 2x2 loop 1.6 -> 0.35
       ms, float32 0.23 -> 0.12 ms: SSE2 has no 64-bit compares and few shuffles). */
    #if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__)
    #if defined(__has_attribute)
    #if __has_attribute(target_clones)
    #define CONVNET_CLONES __attribute__((target_clones("avx2", "default")))
    #endif
    #endif
    #endif
    #ifndef CONVNET_CLONES
    #define CONVNET_CLONES
    #endif
    #if defined(_MSC_VER)
    #define CONVNET_RESTRICT __restrict
    #else
    #define CONVNET_RESTRICT restrict
    #endif
    #define CONVNET_BEATS(v, b) (((v) > (b)) | (((v) != (v)) & ((b) == (b))))
    #define CONVNET_PICK(old, new, mask) (((old) & ~(mask)) | ((new) & (mask)))

    /* (*best, *index) = (value, value_index) if value beats *best, with one mask. */
    #define CONVNET_TAKE(T, U, value, value_index, best, index) do {                  \
            T v_ = (value), b_ = *(best);                                              \
            U vb_, bb_, m_ = (U)0 - (U)CONVNET_BEATS(v_, b_);                          \
            memcpy(&vb_, &v_, sizeof(T));                                              \
            memcpy(&bb_, &b_, sizeof(T));                                              \
            bb_ = CONVNET_PICK(bb_, vb_, m_);                                          \
            memcpy(&b_, &bb_, sizeof(T));                                              \
            *(best) = b_;                                                              \
            *(index) = CONVNET_PICK(*(index), (U)(value_index), m_);                   \
        } while (0)
    /* Column pass of one output row: out[o], run[o] = first maximum down the pool_h
       rows of best at columns o*STRIDE, and its index. */
    #define CONVNET_COLUMN(T, U, STRIDE)                                               \
        for (o = 0; o < out_w; o++) {                                                  \
            out[o] = best[o * (STRIDE)];                                               \
            run[o] = index[o * (STRIDE)];                                              \
        }                                                                              \
        for (i = 1; i < pool_h; i++) {                                                 \
            for (o = 0; o < out_w; o++) {                                              \
                CONVNET_TAKE(T, U, best[i * width + o * (STRIDE)],                     \
                             index[i * width + o * (STRIDE)], &out[o], &run[o]);       \
            }                                                                          \
        }

    #define CONVNET_DEFINE_POOL(T, U, NAME)                                            \
    /* Row pass over count consecutive positions f of a band of rows, as one flat loop \
       (long enough to vectorize even on small planes): best[f], index[f] = first      \
       maximum of x[f + j], j < pool_w, and offset + f + j. Positions whose window     \
       runs past the end of a row are computed too, and never used. */                 \
    CONVNET_CLONES static void convnet_row_pass_##NAME(const T *CONVNET_RESTRICT x, Py_ssize_t count,  \
                                        Py_ssize_t pool_w, U offset,                   \
                                        T *CONVNET_RESTRICT best,                      \
                                        U *CONVNET_RESTRICT index) {                   \
        Py_ssize_t f, j;                                                               \
        for (f = 0; f < count; f++) {                                                  \
            best[f] = x[f];                                                            \
            index[f] = offset + (U)f;                                                  \
        }                                                                              \
        for (j = 1; j < pool_w; j++) {                                                 \
            for (f = 0; f < count; f++) {                                              \
                CONVNET_TAKE(T, U, x[f + j], offset + (U)(f + j), &best[f], &index[f]);\
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    CONVNET_CLONES static void convnet_column_pass_##NAME(const T *CONVNET_RESTRICT best,             \
                                           const U *CONVNET_RESTRICT index,            \
                                           Py_ssize_t width, Py_ssize_t pool_h,        \
                                           Py_ssize_t stride, Py_ssize_t out_w,        \
                                           T *CONVNET_RESTRICT out,                    \
                                           U *CONVNET_RESTRICT run) {                  \
        Py_ssize_t o, i;                                                               \
        if (stride == 1) { CONVNET_COLUMN(T, U, 1) }                                   \
        else if (stride == 2) { CONVNET_COLUMN(T, U, 2) }                              \
        else { CONVNET_COLUMN(T, U, stride) }                                          \
    }                                                                                  \
    /* Any window and stride, separably, in bands of `band` output rows: the row pass  \
       over the band's input rows (overlapping windows share it), then a column pass   \
       per output row. row_best, row_index: ((band - 1) * stride_h + pool_h) * width;  \
       run: out_w. */                                                                  \
    CONVNET_CLONES static void convnet_max_pool_##NAME(                                \
            const T *x, Py_ssize_t width, Py_ssize_t out_h, Py_ssize_t out_w,          \
            Py_ssize_t pool_h, Py_ssize_t pool_w, Py_ssize_t stride_h,                 \
            Py_ssize_t stride_w, Py_ssize_t band, T *row_best, U *row_index, U *run,   \
            T *out, int *argmax) {                                                     \
        Py_ssize_t first, last, oh, o, top, rows, offset;                              \
        for (first = 0; first < out_h; first += band) {                                \
            last = first + band < out_h ? first + band : out_h;                        \
            top = first * stride_h;                                                    \
            rows = (last - 1 - first) * stride_h + pool_h;                             \
            convnet_row_pass_##NAME(x + top * width, rows * width - pool_w + 1, pool_w,\
                                    (U)(top * width), row_best, row_index);            \
            for (oh = first; oh < last; oh++) {                                        \
                offset = (oh - first) * stride_h * width;                              \
                convnet_column_pass_##NAME(row_best + offset, row_index + offset,      \
                                           width, pool_h, stride_w, out_w,             \
                                           out + oh * out_w, run);                     \
                for (o = 0; o < out_w; o++) argmax[oh * out_w + o] = (int)run[o];      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    /* 2x2 windows, stride 2: the two rows' first maxima, then the better of the two. */\
    CONVNET_CLONES static void convnet_max_pool_2x2_##NAME(                            \
            const T *x, Py_ssize_t width, Py_ssize_t out_h, Py_ssize_t out_w, T *out,  \
            int *argmax) {                                                             \
        Py_ssize_t oh, o;                                                              \
        for (oh = 0; oh < out_h; oh++) {                                               \
            const T *r0 = x + 2 * oh * width, *r1 = r0 + width;                        \
            U base = (U)(2 * oh * width);                                              \
            for (o = 0; o < out_w; o++) {                                              \
                T a = r0[2 * o], b = r0[2 * o + 1], c = r1[2 * o], d = r1[2 * o + 1];  \
                T top_best, bottom_best;                                               \
                U ua, ub, uc, ud, top_bits, bottom_bits, best_bits, top_index, bottom_index;\
                U top_mask = (U)0 - (U)CONVNET_BEATS(b, a);                            \
                U bottom_mask = (U)0 - (U)CONVNET_BEATS(d, c);                         \
                U mask;                                                                \
                memcpy(&ua, &a, sizeof(T)); memcpy(&ub, &b, sizeof(T));                \
                memcpy(&uc, &c, sizeof(T)); memcpy(&ud, &d, sizeof(T));                \
                top_bits = CONVNET_PICK(ua, ub, top_mask);                             \
                bottom_bits = CONVNET_PICK(uc, ud, bottom_mask);                       \
                memcpy(&top_best, &top_bits, sizeof(T));                               \
                memcpy(&bottom_best, &bottom_bits, sizeof(T));                         \
                mask = (U)0 - (U)CONVNET_BEATS(bottom_best, top_best);                 \
                best_bits = CONVNET_PICK(top_bits, bottom_bits, mask);                 \
                memcpy(&out[oh * out_w + o], &best_bits, sizeof(T));                   \
                top_index = base + 2 * (U)o + (top_mask & 1);                          \
                bottom_index = base + (U)width + 2 * (U)o + (bottom_mask & 1);         \
                argmax[oh * out_w + o] = (int)CONVNET_PICK(top_index, bottom_index, mask);\
            }                                                                          \
        }                                                                              \
    }
    CONVNET_DEFINE_POOL(float, uint32_t, float)
    CONVNET_DEFINE_POOL(double, uint64_t, double)
    """
    void convnet_max_pool_float(const float* x, Py_ssize_t width, Py_ssize_t out_h,
                                Py_ssize_t out_w, Py_ssize_t pool_h, Py_ssize_t pool_w,
                                Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t band,
                                float* row_best, uint32_t* row_index, uint32_t* run,
                                float* out, int* argmax) noexcept nogil
    void convnet_max_pool_double(const double* x, Py_ssize_t width, Py_ssize_t out_h,
                                 Py_ssize_t out_w, Py_ssize_t pool_h, Py_ssize_t pool_w,
                                 Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t band,
                                 double* row_best, uint64_t* row_index, uint64_t* run,
                                 double* out, int* argmax) noexcept nogil
    void convnet_max_pool_2x2_float(const float* x, Py_ssize_t width, Py_ssize_t out_h,
                                    Py_ssize_t out_w, float* out, int* argmax) noexcept nogil
    void convnet_max_pool_2x2_double(const double* x, Py_ssize_t width, Py_ssize_t out_h,
                                     Py_ssize_t out_w, double* out, int* argmax) noexcept nogil


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
    vectorizes (see the C above).
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
                    if two_by_two:
                        convnet_max_pool_2x2_float(&x[n, c, 0, 0], width, out_h, out_w,
                                                   &out[n, c, 0, 0], &argmax[n, c, 0, 0])
                    else:
                        convnet_max_pool_float(
                            &x[n, c, 0, 0], width, out_h, out_w, pool_h, pool_w, stride_h,
                            stride_w, band, row_best, <uint32_t*>indices,
                            <uint32_t*>indices + rows, &out[n, c, 0, 0], &argmax[n, c, 0, 0])
                else:
                    if two_by_two:
                        convnet_max_pool_2x2_double(&x[n, c, 0, 0], width, out_h, out_w,
                                                    &out[n, c, 0, 0], &argmax[n, c, 0, 0])
                    else:
                        convnet_max_pool_double(
                            &x[n, c, 0, 0], width, out_h, out_w, pool_h, pool_w, stride_h,
                            stride_w, band, row_best, <uint64_t*>indices,
                            <uint64_t*>indices + rows, &out[n, c, 0, 0], &argmax[n, c, 0, 0])
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
