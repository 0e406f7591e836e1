/* Winograd tile transforms for float and double: see _winograd_tiles_impl.h. */
#ifndef CONVNET_WINOGRAD_TILES_H
#define CONVNET_WINOGRAD_TILES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

/* GCC on x86-64 Linux compiles each tile loop three times, for AVX-512 (x86-64-v4), AVX2
 * with FMA (x86-64-v3) and the baseline, and picks one by the CPU at load time: the
 * build runs anywhere and the transforms use the widest vectors the CPU has. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__)
#define WG_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WG_KERNEL
#endif

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
