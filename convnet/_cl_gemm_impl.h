/* Products of small matrices on vectors of columns, for one instruction set (included by
 * _cl_kernels.h with the vector macros; see _cl_winograd_impl.h for them).
 *
 * Every product here is c (+)= a b with a row of c a few vectors wide: the kernel keeps a
 * block of c in registers, broadcasts one value of a at a time and multiplies it into
 * vectors of b, so a can be read with any strides (the transposed operand of a filter
 * gradient too) and nothing is packed. */

/* c[r][:] (+)= sum_k a[r * ai + k * ak] * b[k * bk + :] for r < R rows and N vectors of
 * columns, accumulated in registers. */
#define CL_GEMM_KERNEL(R, N)                                                                \
    CL_TARGET static void CL_NAME(cl_gemm_##R##_##N)(                                       \
        const CL_T *restrict a, ptrdiff_t ai, ptrdiff_t ak, const CL_T *restrict b,         \
        ptrdiff_t bk, CL_T *restrict c, ptrdiff_t ci, ptrdiff_t depth, int accumulate) {   \
        CL_V acc[R][N];                                                                     \
        for (int r = 0; r < R; r++)                                                         \
            for (int n = 0; n < N; n++) acc[r][n] = CL_ZERO();                              \
        for (ptrdiff_t k = 0; k < depth; k++) {                                             \
            CL_V bv[N];                                                                     \
            for (int n = 0; n < N; n++) bv[n] = CL_LOAD(b + k * bk + n * CL_VL);            \
            for (int r = 0; r < R; r++) {                                                   \
                CL_V av = CL_SET1(a[r * ai + k * ak]);                                      \
                for (int n = 0; n < N; n++) acc[r][n] = CL_FMA(av, bv[n], acc[r][n]);       \
            }                                                                               \
        }                                                                                   \
        for (int r = 0; r < R; r++)                                                         \
            for (int n = 0; n < N; n++) {                                                   \
                CL_T *p = c + r * ci + n * CL_VL;                                           \
                CL_STORE(p, accumulate ? CL_ADD(CL_LOAD(p), acc[r][n]) : acc[r][n]);        \
            }                                                                               \
    }

CL_WIDE_LIST(CL_GEMM_KERNEL)
CL_NARROW_LIST(CL_GEMM_KERNEL)
#undef CL_GEMM_KERNEL

typedef void (*CL_NAME(cl_gemm_kernel))(const CL_T *, ptrdiff_t, ptrdiff_t, const CL_T *,
                                        ptrdiff_t, CL_T *, ptrdiff_t, ptrdiff_t, int);
#define CL_KERNEL_POINTER(R, N) CL_NAME(cl_gemm_##R##_##N),
static const CL_NAME(cl_gemm_kernel) CL_NAME(cl_gemm_wide)[] = {CL_WIDE_LIST(CL_KERNEL_POINTER)};
static const CL_NAME(cl_gemm_kernel) CL_NAME(cl_gemm_narrow)[] = {
    CL_NARROW_LIST(CL_KERNEL_POINTER)};
#undef CL_KERNEL_POINTER

/* The last, partial vector of columns: `lanes` < CL_VL columns of up to CL_NARROW_ROWS
 * rows, touching no value of b or c beyond them. */
CL_TARGET static void CL_NAME(cl_gemm_tail)(const CL_T *restrict a, ptrdiff_t ai, ptrdiff_t ak,
                                            const CL_T *restrict b, ptrdiff_t bk,
                                            CL_T *restrict c, ptrdiff_t ci, ptrdiff_t depth,
                                            int accumulate, ptrdiff_t rows, ptrdiff_t lanes) {
    CL_V acc[CL_NARROW_ROWS];
    for (ptrdiff_t r = 0; r < rows; r++) acc[r] = CL_ZERO();
    for (ptrdiff_t k = 0; k < depth; k++) {
        CL_V bv = CL_LOADN(b + k * bk, lanes);
        for (ptrdiff_t r = 0; r < rows; r++)
            acc[r] = CL_FMA(CL_SET1(a[r * ai + k * ak]), bv, acc[r]);
    }
    for (ptrdiff_t r = 0; r < rows; r++) {
        CL_T *p = c + r * ci;
        CL_STOREN(p, accumulate ? CL_ADD(CL_LOADN(p, lanes), acc[r]) : acc[r], lanes);
    }
}

/* c (rows x cols) (+)= a (rows x depth, element (r, k) at a[r * ai + k * ak]) times b
 * (depth x cols, row k at b + k * bk), row r of c at c + r * ci. Full vectors of columns
 * go in blocks of CL_WIDE_ROWS rows by CL_WIDE_VECTORS vectors or CL_NARROW_ROWS rows by
 * one vector; a last partial vector by the masked tail kernel. */
CL_TARGET static void CL_NAME(cl_gemm)(ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t depth,
                                       const CL_T *a, ptrdiff_t ai, ptrdiff_t ak,
                                       const CL_T *b, ptrdiff_t bk, CL_T *c, ptrdiff_t ci,
                                       int accumulate) {
    ptrdiff_t wide_cols = CL_WIDE_VECTORS * CL_VL, full = cols / CL_VL * CL_VL, c0 = 0;
    for (; c0 + wide_cols <= full; c0 += wide_cols)
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += CL_WIDE_ROWS) {
            ptrdiff_t r = rows - r0 < CL_WIDE_ROWS ? rows - r0 : CL_WIDE_ROWS;
            CL_NAME(cl_gemm_wide)[r - 1](a + r0 * ai, ai, ak, b + c0, bk, c + r0 * ci + c0, ci,
                                          depth, accumulate);
        }
    for (; c0 < cols; c0 += CL_VL)
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += CL_NARROW_ROWS) {
            ptrdiff_t r = rows - r0 < CL_NARROW_ROWS ? rows - r0 : CL_NARROW_ROWS;
            if (c0 + CL_VL <= cols)
                CL_NAME(cl_gemm_narrow)[r - 1](a + r0 * ai, ai, ak, b + c0, bk,
                                                c + r0 * ci + c0, ci, depth, accumulate);
            else
                CL_NAME(cl_gemm_tail)(a + r0 * ai, ai, ak, b + c0, bk, c + r0 * ci + c0, ci,
                                      depth, accumulate, r, cols - c0);
        }
}

