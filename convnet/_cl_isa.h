/* The vocabulary the channels-last kernels are written in, one instruction set at a time.
 *
 * _cl_kernels.h includes one of _cl_isa_portable.h, _cl_isa_avx2.h or _cl_isa_avx512.h,
 * then the kernels (_cl_kernels_impl.h), then _cl_isa_end.h, once per instruction set. Each
 * ISA header defines:
 *   CL_V, CL_VL       the vector type and its number of float lanes
 *   CL_LOAD/STORE     a whole vector; CL_LOADN/STOREN the first n lanes only (n < CL_VL),
 *                     touching no memory beyond them; loaded lanes beyond n are 0
 *   CL_SET1, CL_ZERO, CL_ADD, CL_SUB, CL_MUL
 *   CL_FMA(a, b, c)   a * b + c;  CL_FNMA(a, b, c)  c - a * b
 *   CL_ALL_ZERO(v)    every lane is 0 (x - x is 0 for finite x, NaN otherwise)
 *   CL_RELU(v)        v where v > 0 or v is NaN, else +0 (numpy's maximum(v, 0): -0 gives +0)
 *   CL_KEEP_POSITIVE(t, v)  v where t > 0, else 0 (NaN in t gives 0)
 *   CL_IV, CL_ISET1, CL_ISTORE, CL_ISTOREN   vectors of int32 lanes
 *   CL_M, CL_TAKES(v, best), CL_SELECT, CL_ISELECT   lanes where v replaces a running
 *                     maximum (larger, or NaN over a number), and blends by such a mask
 *   CL_TARGET         the function attribute that enables the instruction set
 *   CL_NAME(name)     name with this copy's suffix
 *   CL_WIDE_*, CL_NARROW_*   the register blocking of the products (_cl_gemm_impl.h)
 */
#ifndef CONVNET_CL_ISA_H
#define CONVNET_CL_ISA_H
#define CL_T float
#define CL_ROWS_1(K, N) K(1, N)
#define CL_ROWS_4(K, N) CL_ROWS_1(K, N) K(2, N) K(3, N) K(4, N)
#define CL_ROWS_6(K, N) CL_ROWS_4(K, N) K(5, N) K(6, N)
#define CL_ROWS_8(K, N) CL_ROWS_6(K, N) K(7, N) K(8, N)
#define CL_ROWS_12(K, N) CL_ROWS_8(K, N) K(9, N) K(10, N) K(11, N) K(12, N)
#define CL_ROWS_16(K, N) CL_ROWS_12(K, N) K(13, N) K(14, N) K(15, N) K(16, N)
#endif
