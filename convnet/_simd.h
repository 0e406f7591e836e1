/* The one platform guard of the compiled kernels: which machine code their loops get.
 *
 * GCC 12 or later on x86-64 Linux with glibc compiles each function marked
 * CONVNET_MULTIVERSION three times, for AVX-512 (x86-64-v4), AVX2 with FMA (x86-64-v3) and
 * the baseline x86-64, and glibc's loader picks one for the CPU at load time (an ifunc):
 * the build runs on any x86-64 and the loops use the widest vectors the CPU has. A loop
 * whose AVX-512 version measured slower is marked CONVNET_MULTIVERSION_AVX2 (x86-64-v3 and
 * the baseline only). Elsewhere (clang, MSVC, macOS, musl, other architectures) the loops
 * are compiled once, for the compiler's target. Every kernel header includes this one. */
#ifndef CONVNET_SIMD_H
#define CONVNET_SIMD_H

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__)
#define CONVNET_MULTIVERSION \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define CONVNET_MULTIVERSION_AVX2 __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CONVNET_MULTIVERSION
#define CONVNET_MULTIVERSION_AVX2
#endif

/* GCC or clang on x86-64 compile a function for another instruction set than the build's
 * when it carries one of these attributes: the channels-last kernels (_cl_kernels.h) are
 * built for each and pick one by the CPU at run time. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CONVNET_X86_DISPATCH 1
#define CONVNET_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define CONVNET_TARGET_AVX512 __attribute__((target("avx512f")))
#endif

/* C99's restrict, which MSVC spells __restrict. */
#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

#endif
