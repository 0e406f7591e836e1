/* Per-channel batch-norm loops for float and double: see _batchnorm_channels_impl.h. */
#ifndef CONVNET_BATCHNORM_CHANNELS_H
#define CONVNET_BATCHNORM_CHANNELS_H

#include <stddef.h>

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

/* As in _winograd_tiles.h: GCC on x86-64 Linux compiles each loop for AVX-512, AVX2 with
 * FMA and the baseline, and the loader picks one for the CPU. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__)
#define BN_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BN_KERNEL
#endif

#define BN_T float
#define BN_LANES 16
#define BN_NAME(name) name##_float
#include "_batchnorm_channels_impl.h"
#undef BN_T
#undef BN_LANES
#undef BN_NAME

#define BN_T double
#define BN_LANES 8
#define BN_NAME(name) name##_double
#include "_batchnorm_channels_impl.h"
#undef BN_T
#undef BN_LANES
#undef BN_NAME

#endif
