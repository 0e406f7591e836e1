/* Winograd tile transforms for float and double: see _winograd_tiles_impl.h. */
#ifndef CONVNET_WINOGRAD_TILES_H
#define CONVNET_WINOGRAD_TILES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_simd.h"

#define WG_T float
#define WG_UINT uint32_t
#define WG_EXPONENT UINT32_C(0x7f800000)
#define WG_NAME(name) name##_float
#include "_winograd_tiles_impl.h"
#undef WG_T
#undef WG_UINT
#undef WG_EXPONENT
#undef WG_NAME

#define WG_T double
#define WG_UINT uint64_t
#define WG_EXPONENT UINT64_C(0x7ff0000000000000)
#define WG_NAME(name) name##_double
#include "_winograd_tiles_impl.h"
#undef WG_T
#undef WG_UINT
#undef WG_EXPONENT
#undef WG_NAME

#endif
