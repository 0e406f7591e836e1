/* Winograd tile transforms for float and double: see _winograd_tiles_impl.h. */
#ifndef CONVNET_WINOGRAD_TILES_H
#define CONVNET_WINOGRAD_TILES_H

#include <stddef.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

#define WG_T float
#define WG_NAME(name) name##_float
#include "_winograd_tiles_impl.h"
#undef WG_T
#undef WG_NAME

#define WG_T double
#define WG_NAME(name) name##_double
#include "_winograd_tiles_impl.h"
#undef WG_T
#undef WG_NAME

#endif
