/* Batch norm (and ReLU) over the rows of channels-last images, for one instruction set
 * (included by _cl_kernels.h). A (rows x c) array holds one pixel per row; every channel's
 * statistics run down a column, so each loop works on vectors of adjacent channels.
 *
 * Sums go through float partial sums of CL_NORM_BLOCK rows added into double totals: the
 * float part rounds over at most CL_NORM_BLOCK terms, the double totals over the rest.
 * The variance comes from sums of (x - shift) and (x - shift)^2 with shift a value of the
 * channel (its first row): for data near the shift no cancellation occurs, and with it
 * one pass over x gives both statistics.
 */
#ifndef CL_NORM_BLOCK
#define CL_NORM_BLOCK 32
#endif

/* Add into sums[0 : c] and sums[c : 2c] (double) the sums over rows first .. last - 1 of x
 * (rows x c) of (x - shift) and (x - shift)^2. */
CL_TARGET static void CL_NAME(cl_shifted_sums)(const CL_T *restrict x, ptrdiff_t c,
                                               const CL_T *restrict shift, ptrdiff_t first,
                                               ptrdiff_t last, double *restrict sums) {
    for (ptrdiff_t r0 = first; r0 < last; r0 += CL_NORM_BLOCK) {
        ptrdiff_t r1 = last - r0 < CL_NORM_BLOCK ? last : r0 + CL_NORM_BLOCK;
        for (ptrdiff_t c0 = 0; c0 < c; c0 += CL_VL) {
            ptrdiff_t lanes = c - c0 < CL_VL ? c - c0 : CL_VL;
            CL_V center = lanes == CL_VL ? CL_LOAD(shift + c0) : CL_LOADN(shift + c0, lanes);
            CL_V sum = CL_ZERO(), squares = CL_ZERO();
            for (ptrdiff_t r = r0; r < r1; r++) {
                const CL_T *p = x + r * c + c0;
                CL_V d = CL_SUB(lanes == CL_VL ? CL_LOAD(p) : CL_LOADN(p, lanes), center);
                sum = CL_ADD(sum, d);
                squares = CL_FMA(d, d, squares);
            }
            CL_T lane_sum[CL_VL], lane_squares[CL_VL];
            CL_STORE(lane_sum, sum);
            CL_STORE(lane_squares, squares);
            for (ptrdiff_t j = 0; j < lanes; j++) {
                sums[c0 + j] += lane_sum[j];
                sums[c + c0 + j] += lane_squares[j];
            }
        }
    }
}

/* Add into sums[0 : c] and sums[c : 2c] (double) the sums over rows first .. last - 1 of
 * dy and of dy * (x - mean), where dy is the incoming gradient, zeroed where the fused ReLU
 * was off ((x - mean) * scale + offset <= 0) if relu is set. */
CL_TARGET static void CL_NAME(cl_gradient_sums)(const CL_T *restrict x,
                                                const CL_T *restrict dy, ptrdiff_t c,
                                                const CL_T *restrict mean,
                                                const CL_T *restrict scale,
                                                const CL_T *restrict offset, int relu,
                                                ptrdiff_t first, ptrdiff_t last,
                                                double *restrict sums) {
    for (ptrdiff_t r0 = first; r0 < last; r0 += CL_NORM_BLOCK) {
        ptrdiff_t r1 = last - r0 < CL_NORM_BLOCK ? last : r0 + CL_NORM_BLOCK;
        for (ptrdiff_t c0 = 0; c0 < c; c0 += CL_VL) {
            ptrdiff_t lanes = c - c0 < CL_VL ? c - c0 : CL_VL;
            int full = lanes == CL_VL;
            CL_V mu = full ? CL_LOAD(mean + c0) : CL_LOADN(mean + c0, lanes);
            CL_V a = full ? CL_LOAD(scale + c0) : CL_LOADN(scale + c0, lanes);
            CL_V b = full ? CL_LOAD(offset + c0) : CL_LOADN(offset + c0, lanes);
            CL_V sum = CL_ZERO(), products = CL_ZERO();
            for (ptrdiff_t r = r0; r < r1; r++) {
                const CL_T *px = x + r * c + c0, *pd = dy + r * c + c0;
                CL_V centered = CL_SUB(full ? CL_LOAD(px) : CL_LOADN(px, lanes), mu);
                CL_V dv = full ? CL_LOAD(pd) : CL_LOADN(pd, lanes);
                if (relu) dv = CL_KEEP_POSITIVE(CL_FMA(centered, a, b), dv);
                sum = CL_ADD(sum, dv);
                products = CL_FMA(dv, centered, products);
            }
            CL_T lane_sum[CL_VL], lane_products[CL_VL];
            CL_STORE(lane_sum, sum);
            CL_STORE(lane_products, products);
            for (ptrdiff_t j = 0; j < lanes; j++) {
                sums[c0 + j] += lane_sum[j];
                sums[c + c0 + j] += lane_products[j];
            }
        }
    }
}

/* out = (x - mean) * scale + offset for rows first .. last - 1, then max(., 0) if relu (NaN
 * stays NaN). out may be x itself. Centering first keeps the result accurate for channels
 * far from 0 (x * scale + (offset - mean * scale) rounds |mean| * scale). */
CL_TARGET static void CL_NAME(cl_scale_rows)(const CL_T *x, ptrdiff_t c,
                                             const CL_T *restrict mean,
                                             const CL_T *restrict scale,
                                             const CL_T *restrict offset, int relu,
                                             ptrdiff_t first, ptrdiff_t last,
                                             CL_T *out) {
    for (ptrdiff_t r0 = first; r0 < last; r0 += CL_NORM_BLOCK) {
        ptrdiff_t r1 = last - r0 < CL_NORM_BLOCK ? last : r0 + CL_NORM_BLOCK;
        for (ptrdiff_t c0 = 0; c0 < c; c0 += CL_VL) {
            ptrdiff_t lanes = c - c0 < CL_VL ? c - c0 : CL_VL;
            int full = lanes == CL_VL;
            CL_V mu = full ? CL_LOAD(mean + c0) : CL_LOADN(mean + c0, lanes);
            CL_V a = full ? CL_LOAD(scale + c0) : CL_LOADN(scale + c0, lanes);
            CL_V b = full ? CL_LOAD(offset + c0) : CL_LOADN(offset + c0, lanes);
            for (ptrdiff_t r = r0; r < r1; r++) {
                const CL_T *p = x + r * c + c0;
                CL_V v = CL_FMA(CL_SUB(full ? CL_LOAD(p) : CL_LOADN(p, lanes), mu), a, b);
                if (relu) v = CL_RELU(v);
                if (full)
                    CL_STORE(out + r * c + c0, v);
                else
                    CL_STOREN(out + r * c + c0, v, lanes);
            }
        }
    }
}

/* dx = k1 * dy' + k2 * (x - mean) + k3 per channel for rows first .. last - 1, where dy' is
 * dy with the fused ReLU's mask applied (relu set: dy where (x - mean) * scale + offset > 0). */
CL_TARGET static void CL_NAME(cl_norm_input_gradient)(
    const CL_T *restrict x, const CL_T *restrict dy, ptrdiff_t c, const CL_T *restrict mean,
    const CL_T *restrict scale, const CL_T *restrict offset, int relu,
    const CL_T *restrict k1, const CL_T *restrict k2, const CL_T *restrict k3,
    ptrdiff_t first, ptrdiff_t last, CL_T *restrict dx) {
    for (ptrdiff_t r0 = first; r0 < last; r0 += CL_NORM_BLOCK) {
        ptrdiff_t r1 = last - r0 < CL_NORM_BLOCK ? last : r0 + CL_NORM_BLOCK;
        for (ptrdiff_t c0 = 0; c0 < c; c0 += CL_VL) {
            ptrdiff_t lanes = c - c0 < CL_VL ? c - c0 : CL_VL;
            int full = lanes == CL_VL;
            CL_V mu = full ? CL_LOAD(mean + c0) : CL_LOADN(mean + c0, lanes);
            CL_V a = full ? CL_LOAD(scale + c0) : CL_LOADN(scale + c0, lanes);
            CL_V b = full ? CL_LOAD(offset + c0) : CL_LOADN(offset + c0, lanes);
            CL_V f1 = full ? CL_LOAD(k1 + c0) : CL_LOADN(k1 + c0, lanes);
            CL_V f2 = full ? CL_LOAD(k2 + c0) : CL_LOADN(k2 + c0, lanes);
            CL_V f3 = full ? CL_LOAD(k3 + c0) : CL_LOADN(k3 + c0, lanes);
            for (ptrdiff_t r = r0; r < r1; r++) {
                const CL_T *px = x + r * c + c0, *pd = dy + r * c + c0;
                CL_V centered = CL_SUB(full ? CL_LOAD(px) : CL_LOADN(px, lanes), mu);
                CL_V dv = full ? CL_LOAD(pd) : CL_LOADN(pd, lanes);
                if (relu) dv = CL_KEEP_POSITIVE(CL_FMA(centered, a, b), dv);
                CL_V v = CL_FMA(f1, dv, CL_FMA(f2, centered, f3));
                if (full)
                    CL_STORE(dx + r * c + c0, v);
                else
                    CL_STOREN(dx + r * c + c0, v, lanes);
            }
        }
    }
}

/* out[i] = max(x[i], 0) for i in first .. last - 1, NaN staying NaN; out may be x. */
CL_TARGET static void CL_NAME(cl_relu)(const CL_T *x, CL_T *out, ptrdiff_t first,
                                       ptrdiff_t last) {
    ptrdiff_t i = first;
    for (; i + CL_VL <= last; i += CL_VL) CL_STORE(out + i, CL_RELU(CL_LOAD(x + i)));
    if (i < last) CL_STOREN(out + i, CL_RELU(CL_LOADN(x + i, last - i)), last - i);
}

/* out[i] = a[i] + b[i] for i in first .. last - 1, then max(., 0) if relu (NaN staying
 * NaN); out may be a or b. */
CL_TARGET static void CL_NAME(cl_add)(const CL_T *a, const CL_T *b, CL_T *out, int relu,
                                      ptrdiff_t first, ptrdiff_t last) {
    ptrdiff_t i = first;
    if (relu) {
        for (; i + CL_VL <= last; i += CL_VL)
            CL_STORE(out + i, CL_RELU(CL_ADD(CL_LOAD(a + i), CL_LOAD(b + i))));
    } else {
        for (; i + CL_VL <= last; i += CL_VL)
            CL_STORE(out + i, CL_ADD(CL_LOAD(a + i), CL_LOAD(b + i)));
    }
    if (i < last) {
        ptrdiff_t n = last - i;
        CL_V v = CL_ADD(CL_LOADN(a + i, n), CL_LOADN(b + i, n));
        CL_STOREN(out + i, relu ? CL_RELU(v) : v, n);
    }
}

/* dx[i] = dy[i] where x[i] > 0, else 0 (a NaN in x or, where x <= 0, in dy gives 0). */
CL_TARGET static void CL_NAME(cl_relu_gradient)(const CL_T *restrict x,
                                                const CL_T *restrict dy, CL_T *restrict dx,
                                                ptrdiff_t first, ptrdiff_t last) {
    ptrdiff_t i = first;
    for (; i + CL_VL <= last; i += CL_VL)
        CL_STORE(dx + i, CL_KEEP_POSITIVE(CL_LOAD(x + i), CL_LOAD(dy + i)));
    if (i < last) {
        ptrdiff_t n = last - i;
        CL_STOREN(dx + i, CL_KEEP_POSITIVE(CL_LOADN(x + i, n), CL_LOADN(dy + i, n)), n);
    }
}
