/* Max pooling of one (H, W) plane for float and double: see _max_pool_impl.h.
 *
 * In C so that the compiler vectorizes the loops over output columns. Every selection is
 * branch-free, done on the bits (a branch on random data mispredicts half the time):
 * CONVNET_BEATS(v, b) is 1 if v replaces the best b when scanning in row-major order
 * (larger, or the first NaN), and U is the unsigned integer type of T's width, so values
 * and indices select with one mask. The loops are multiversioned for AVX2 (_simd.h):
 * measured on (64,64,16,16), a baseline (SSE2) build against an AVX2 one, the float64 2x2
 * loop 1.6 -> 0.35 ms, float32 0.23 -> 0.12 ms (SSE2 has no 64-bit compares and few
 * shuffles); an AVX-512 version made the 3x3 stride-2 loop slower (one thread, AMD EPYC
 * Zen 4: float32 1.28 -> 1.67 ms, float64 1.22 -> 1.46 ms). */
#ifndef CONVNET_MAX_POOL_H
#define CONVNET_MAX_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_simd.h"

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

/* Column pass of one output row: out[o], run[o] = first maximum down the pool_h rows of
 * best at columns o*STRIDE, and its index. */
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

#define MP_T float
#define MP_U uint32_t
#define MP_NAME(name) name##_float
#include "_max_pool_impl.h"
#undef MP_T
#undef MP_U
#undef MP_NAME

#define MP_T double
#define MP_U uint64_t
#define MP_NAME(name) name##_double
#include "_max_pool_impl.h"
#undef MP_T
#undef MP_U
#undef MP_NAME

#endif
