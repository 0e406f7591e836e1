/* Per-channel batch-norm loops for float and double: see _batchnorm_channels_impl.h. */
#ifndef CONVNET_BATCHNORM_CHANNELS_H
#define CONVNET_BATCHNORM_CHANNELS_H

#include <stddef.h>

#include "_simd.h"

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
