/* The depthwise loops' two inner kernels for float and double: see
 * _depthwise_taps_impl.h. Multiversioned (_simd.h): measured on (64,64,16,16) float32,
 * one thread, against the baseline build, the forward loop 0.97 -> 0.56 ms, the input
 * gradient 1.2 -> 0.6 ms; the filter gradient, bound by its per-plane work, 1.1 -> 1.0 ms. */
#ifndef CONVNET_DEPTHWISE_TAPS_H
#define CONVNET_DEPTHWISE_TAPS_H

#include <stddef.h>

#include "_simd.h"

#define DT_T float
#define DT_NAME(name) name##_float
#include "_depthwise_taps_impl.h"
#undef DT_T
#undef DT_NAME

#define DT_T double
#define DT_NAME(name) name##_double
#include "_depthwise_taps_impl.h"
#undef DT_T
#undef DT_NAME

#endif
