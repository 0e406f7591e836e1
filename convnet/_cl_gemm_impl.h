/* Products of small matrices on vectors of columns, for one instruction set (included by
 * _cl_kernels_impl.h; the vocabulary is _cl_isa.h's).
 *
 * Every product here is c (+)= a b with a row of c a few vectors wide: the kernel keeps a
 * block of c in registers, broadcasts one value of a at a time and multiplies it into
 * vectors of b, so a can be read with any strides and nothing is packed. The depth runs
 * over two levels, k = (k1, k2), a's and b's offsets affine in each:
 *     c[r][:] (+)= sum_{k1 < d1, k2 < d2} a[r ai + k1 ak1 + k2 ak2] b[k1 bk1 + k2 bk2 + :]
 * so a convolution reads its input in place: the filter rows (k1) and the taps and
 * channels of a row (k2) of a pixel, or the image rows and the pixels of a row. */

/* The block of R rows by N vectors of columns, accumulated in registers. */
#define CL_GEMM_KERNEL(R, N)                                                               \
    CL_TARGET static void CL_NAME(cl_gemm_##R##_##N)(                                      \
        const CL_T *restrict a, ptrdiff_t ai, ptrdiff_t ak1, ptrdiff_t ak2,                \
        const CL_T *restrict b, ptrdiff_t bk1, ptrdiff_t bk2, CL_T *restrict c,            \
        ptrdiff_t ci, ptrdiff_t d1, ptrdiff_t d2, int accumulate) {                        \
        CL_V acc[R][N];                                                                    \
        for (int r = 0; r < R; r++)                                                        \
            for (int n = 0; n < N; n++) acc[r][n] = CL_ZERO();                             \
        for (ptrdiff_t k1 = 0; k1 < d1; k1++) {                                            \
            const CL_T *a1 = a + k1 * ak1, *b1 = b + k1 * bk1;                             \
            for (ptrdiff_t k2 = 0; k2 < d2; k2++) {                                        \
                CL_V bv[N];                                                                \
                for (int n = 0; n < N; n++) bv[n] = CL_LOAD(b1 + k2 * bk2 + n * CL_VL);    \
                for (int r = 0; r < R; r++) {                                              \
                    CL_V av = CL_SET1(a1[r * ai + k2 * ak2]);                              \
                    for (int n = 0; n < N; n++) acc[r][n] = CL_FMA(av, bv[n], acc[r][n]);  \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        for (int r = 0; r < R; r++)                                                        \
            for (int n = 0; n < N; n++) {                                                  \
                CL_T *p = c + r * ci + n * CL_VL;                                          \
                CL_STORE(p, accumulate ? CL_ADD(CL_LOAD(p), acc[r][n]) : acc[r][n]);       \
            }                                                                              \
    }

CL_WIDE_LIST(CL_GEMM_KERNEL)
CL_NARROW_LIST(CL_GEMM_KERNEL)
#undef CL_GEMM_KERNEL

typedef void (*CL_NAME(cl_gemm_kernel))(const CL_T *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                        const CL_T *, ptrdiff_t, ptrdiff_t, CL_T *, ptrdiff_t,
                                        ptrdiff_t, ptrdiff_t, int);
#define CL_KERNEL_POINTER(R, N) CL_NAME(cl_gemm_##R##_##N),
static const CL_NAME(cl_gemm_kernel) CL_NAME(cl_gemm_wide)[] = {CL_WIDE_LIST(CL_KERNEL_POINTER)};
static const CL_NAME(cl_gemm_kernel) CL_NAME(cl_gemm_narrow)[] = {
    CL_NARROW_LIST(CL_KERNEL_POINTER)};
#undef CL_KERNEL_POINTER

/* The last, partial vector of columns: `lanes` < CL_VL columns of up to CL_NARROW_ROWS
 * rows, touching no value of b or c beyond them. */
CL_TARGET static void CL_NAME(cl_gemm_tail)(const CL_T *restrict a, ptrdiff_t ai,
                                            ptrdiff_t ak1, ptrdiff_t ak2,
                                            const CL_T *restrict b, ptrdiff_t bk1,
                                            ptrdiff_t bk2, CL_T *restrict c, ptrdiff_t ci,
                                            ptrdiff_t d1, ptrdiff_t d2, int accumulate,
                                            ptrdiff_t rows, ptrdiff_t lanes) {
    CL_V acc[CL_NARROW_ROWS];
    for (ptrdiff_t r = 0; r < rows; r++) acc[r] = CL_ZERO();
    for (ptrdiff_t k1 = 0; k1 < d1; k1++)
        for (ptrdiff_t k2 = 0; k2 < d2; k2++) {
            CL_V bv = CL_LOADN(b + k1 * bk1 + k2 * bk2, lanes);
            for (ptrdiff_t r = 0; r < rows; r++)
                acc[r] = CL_FMA(CL_SET1(a[r * ai + k1 * ak1 + k2 * ak2]), bv, acc[r]);
        }
    for (ptrdiff_t r = 0; r < rows; r++) {
        CL_T *p = c + r * ci;
        CL_STOREN(p, accumulate ? CL_ADD(CL_LOADN(p, lanes), acc[r]) : acc[r], lanes);
    }
}

/* The operands of a product with a two-level depth (see the top of this file). */
typedef struct {
    const CL_T *a, *b;
    ptrdiff_t ai, ak1, ak2, bk1, bk2, d1, d2;
} CL_NAME(cl_operands);

/* c (rows x cols, row r at c + r * ci) (+)= a b over the two-level depth of `o`. Full
 * vectors of columns go in blocks of CL_WIDE_ROWS rows by CL_WIDE_VECTORS vectors or
 * CL_NARROW_ROWS rows by one vector; a last partial vector by the masked tail kernel. */
CL_TARGET static void CL_NAME(cl_gemm2)(ptrdiff_t rows, ptrdiff_t cols,
                                        const CL_NAME(cl_operands) * o, CL_T *c, ptrdiff_t ci,
                                        int accumulate) {
    ptrdiff_t wide_cols = CL_WIDE_VECTORS * CL_VL, full = cols / CL_VL * CL_VL, c0 = 0;
    for (; c0 + wide_cols <= full; c0 += wide_cols)
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += CL_WIDE_ROWS) {
            ptrdiff_t r = rows - r0 < CL_WIDE_ROWS ? rows - r0 : CL_WIDE_ROWS;
            CL_NAME(cl_gemm_wide)[r - 1](o->a + r0 * o->ai, o->ai, o->ak1, o->ak2, o->b + c0,
                                          o->bk1, o->bk2, c + r0 * ci + c0, ci, o->d1, o->d2,
                                          accumulate);
        }
    for (; c0 < cols; c0 += CL_VL)
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += CL_NARROW_ROWS) {
            ptrdiff_t r = rows - r0 < CL_NARROW_ROWS ? rows - r0 : CL_NARROW_ROWS;
            if (c0 + CL_VL <= cols)
                CL_NAME(cl_gemm_narrow)[r - 1](o->a + r0 * o->ai, o->ai, o->ak1, o->ak2,
                                                o->b + c0, o->bk1, o->bk2, c + r0 * ci + c0,
                                                ci, o->d1, o->d2, accumulate);
            else
                CL_NAME(cl_gemm_tail)(o->a + r0 * o->ai, o->ai, o->ak1, o->ak2, o->b + c0,
                                      o->bk1, o->bk2, c + r0 * ci + c0, ci, o->d1, o->d2,
                                      accumulate, r, cols - c0);
        }
}

/* c (rows x cols) (+)= a (rows x depth, element (r, k) at a[r * ai + k * ak]) times b
 * (depth x cols, row k at b + k * bk): the product with a one-level depth. */
CL_TARGET static void CL_NAME(cl_gemm)(ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t depth,
                                       const CL_T *a, ptrdiff_t ai, ptrdiff_t ak,
                                       const CL_T *b, ptrdiff_t bk, CL_T *c, ptrdiff_t ci,
                                       int accumulate) {
    CL_NAME(cl_operands) o = {a, b, ai, 0, ak, 0, bk, 1, depth};
    CL_NAME(cl_gemm2)(rows, cols, &o, c, ci, accumulate);
}
