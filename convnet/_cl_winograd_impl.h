/* Fused Winograd F(4x4, 3x3) on channels-last (NHWC) images, for one instruction set.
 *
 * Included once per instruction set by _cl_winograd.h, which defines the vector type and
 * operations (CL_V holds CL_VL values of CL_T; CL_LOADN/CL_STOREN touch the first n lanes
 * only), the function attribute CL_TARGET and CL_NAME (the suffix of this copy).
 *
 * A block of tiles goes through three steps while it is in cache (Lavin & Gray 2016):
 *   V[xi][t][c] = (B^T d B)[xi]           input transform of tile t, channel c (xi < 36)
 *   M[xi][t][f] = sum_c V[xi][t][c] U[xi][c][f]     36 small GEMMs, U = G g G^T
 *   y = A^T M A + bias                                output transform, 4x4 outputs
 * and the filter gradient accumulates dU[xi][c][f] += sum_t V[xi][t][c] dM[xi][t][f] with
 * dM = A dy A^T. Every step works on vectors of channels: a pixel's channels are
 * contiguous in NHWC, and so are a tile's in V and M (rows of `vrow` and `mrow` values,
 * planes `vplane` and `mplane` apart).
 */

/* ---- one-axis transforms of 6 (or 4) vectors ----------------------------------- */

/* d = B^T s (6 -> 6). */
CL_TARGET static inline void CL_NAME(cl_bt6)(const CL_V *s, CL_V *d) {
    CL_V four = CL_SET1(4), five = CL_SET1(5), two = CL_SET1(2);
    CL_V even = CL_FNMA(four, s[2], s[4]); /* s4 - 4 s2 */
    CL_V odd = CL_FNMA(four, s[1], s[3]);  /* s3 - 4 s1 */
    CL_V even2 = CL_SUB(s[4], s[2]);
    CL_V odd2 = CL_MUL(two, CL_SUB(s[3], s[1]));
    d[0] = CL_FMA(four, s[0], CL_FNMA(five, s[2], s[4]));
    d[1] = CL_ADD(even, odd);
    d[2] = CL_SUB(even, odd);
    d[3] = CL_ADD(even2, odd2);
    d[4] = CL_SUB(even2, odd2);
    d[5] = CL_FMA(four, s[1], CL_FNMA(five, s[3], s[5]));
}

/* d = A^T s (6 -> 4). */
CL_TARGET static inline void CL_NAME(cl_at6)(const CL_V *s, CL_V *d) {
    CL_V two = CL_SET1(2), four = CL_SET1(4), eight = CL_SET1(8);
    CL_V sum12 = CL_ADD(s[1], s[2]), dif12 = CL_SUB(s[1], s[2]);
    CL_V sum34 = CL_ADD(s[3], s[4]), dif34 = CL_SUB(s[3], s[4]);
    d[0] = CL_ADD(CL_ADD(s[0], sum12), sum34);
    d[1] = CL_FMA(two, dif34, dif12);
    d[2] = CL_FMA(four, sum34, sum12);
    d[3] = CL_ADD(CL_FMA(eight, dif34, dif12), s[5]);
}

/* d = A s (4 -> 6), the gradient's transform. */
CL_TARGET static inline void CL_NAME(cl_a6)(const CL_V *s, CL_V *d) {
    CL_V two = CL_SET1(2), four = CL_SET1(4), eight = CL_SET1(8);
    CL_V even = CL_ADD(s[0], s[2]), odd = CL_ADD(s[1], s[3]);
    CL_V even4 = CL_FMA(four, s[2], s[0]), odd4 = CL_FMA(eight, s[3], CL_MUL(two, s[1]));
    d[0] = s[0];
    d[1] = CL_ADD(even, odd);
    d[2] = CL_SUB(even, odd);
    d[3] = CL_ADD(even4, odd4);
    d[4] = CL_SUB(even4, odd4);
    d[5] = s[3];
}

/* ---- tile transforms -------------------------------------------------------------- */

/* Tile t of a block: image `image`, tile row th and column tw of tiles_w per row. */
typedef struct {
    ptrdiff_t image, row, col;
} CL_NAME(cl_tile);

static inline CL_NAME(cl_tile) CL_NAME(cl_tile_at)(ptrdiff_t index, ptrdiff_t tiles_h,
                                                   ptrdiff_t tiles_w) {
    CL_NAME(cl_tile) tile;
    tile.image = index / (tiles_h * tiles_w);
    index -= tile.image * tiles_h * tiles_w;
    tile.row = index / tiles_w;
    tile.col = index - tile.row * tiles_w;
    return tile;
}

/* V[xi][t][c0 : c0 + VL] for tiles first .. first + count - 1: the 6x6 window of x (h, w,
 * c) starting at (4 * row - pad_h, 4 * col - pad_w), 0 outside x. Channels c .. cpad of
 * each row are written as zeros. */
CL_TARGET static void CL_NAME(cl_input_tiles)(const CL_T *restrict x, ptrdiff_t h, ptrdiff_t w,
                                              ptrdiff_t c, ptrdiff_t pad_h, ptrdiff_t pad_w,
                                              ptrdiff_t tiles_h, ptrdiff_t tiles_w,
                                              ptrdiff_t first, ptrdiff_t count,
                                              CL_T *restrict v, ptrdiff_t vplane,
                                              ptrdiff_t vrow) {
    for (ptrdiff_t t = 0; t < count; t++) {
        CL_NAME(cl_tile) tile = CL_NAME(cl_tile_at)(first + t, tiles_h, tiles_w);
        ptrdiff_t y0 = 4 * tile.row - pad_h, x0 = 4 * tile.col - pad_w;
        const CL_T *image = x + tile.image * h * w * c;
        int inside = y0 >= 0 && y0 + 6 <= h && x0 >= 0 && x0 + 6 <= w;
        CL_T *out = v + t * vrow;
        for (ptrdiff_t c0 = 0; c0 < c; c0 += CL_VL) {
            ptrdiff_t lanes = c - c0 < CL_VL ? c - c0 : CL_VL;
            CL_V col[6], tmp[36], res[6];
            for (int j = 0; j < 6; j++) {
                ptrdiff_t xx = x0 + j;
                for (int i = 0; i < 6; i++) {
                    ptrdiff_t yy = y0 + i;
                    if (inside || (yy >= 0 && yy < h && xx >= 0 && xx < w)) {
                        const CL_T *p = image + (yy * w + xx) * c + c0;
                        col[i] = lanes == CL_VL ? CL_LOAD(p) : CL_LOADN(p, lanes);
                    } else {
                        col[i] = CL_ZERO();
                    }
                }
                CL_NAME(cl_bt6)(col, res);
                for (int i = 0; i < 6; i++) tmp[i * 6 + j] = res[i];
            }
            for (int i = 0; i < 6; i++) {
                CL_NAME(cl_bt6)(tmp + i * 6, res);
                for (int k = 0; k < 6; k++) CL_STORE(out + (i * 6 + k) * vplane + c0, res[k]);
            }
        }
    }
}

/* dM[xi][t][f0 : f0 + VL] = (A dy A^T)[xi] of the 4x4 block of dy (out_h, out_w, f) at
 * (4 * row, 4 * col), 0 beyond dy; the lanes of the last vector beyond f are zeros. */
CL_TARGET static void CL_NAME(cl_gradient_tiles)(const CL_T *restrict dy, ptrdiff_t out_h,
                                                 ptrdiff_t out_w, ptrdiff_t f,
                                                 ptrdiff_t tiles_h, ptrdiff_t tiles_w,
                                                 ptrdiff_t first, ptrdiff_t count,
                                                 CL_T *restrict m, ptrdiff_t mplane,
                                                 ptrdiff_t mrow) {
    for (ptrdiff_t t = 0; t < count; t++) {
        CL_NAME(cl_tile) tile = CL_NAME(cl_tile_at)(first + t, tiles_h, tiles_w);
        ptrdiff_t y0 = 4 * tile.row, x0 = 4 * tile.col;
        const CL_T *origin = dy + ((tile.image * out_h + y0) * out_w + x0) * f;
        int inside = y0 + 4 <= out_h && x0 + 4 <= out_w;
        CL_T *out = m + t * mrow;
        for (ptrdiff_t f0 = 0; f0 < f; f0 += CL_VL) {
            ptrdiff_t lanes = f - f0 < CL_VL ? f - f0 : CL_VL;
            CL_V col[4], tmp[24], row[4], res[6];
            for (int j = 0; j < 4; j++) {
                for (int i = 0; i < 4; i++) {
                    const CL_T *p = origin + (i * out_w + j) * f + f0;
                    if (inside && lanes == CL_VL)
                        col[i] = CL_LOAD(p);
                    else if (y0 + i < out_h && x0 + j < out_w)
                        col[i] = CL_LOADN(p, lanes);
                    else
                        col[i] = CL_ZERO();
                }
                CL_NAME(cl_a6)(col, res);
                for (int i = 0; i < 6; i++) tmp[i * 4 + j] = res[i];
            }
            for (int i = 0; i < 6; i++) {
                for (int j = 0; j < 4; j++) row[j] = tmp[i * 4 + j];
                CL_NAME(cl_a6)(row, res);
                for (int k = 0; k < 6; k++) CL_STORE(out + (i * 6 + k) * mplane + f0, res[k]);
            }
        }
    }
}

/* y[4 * row + i][4 * col + k][f0 : f0 + VL] = (A^T M A)[i][k] + bias for the tiles' outputs
 * inside y (out_h, out_w, f). Returns 1 if every value written is finite. */
CL_TARGET static int CL_NAME(cl_output_tiles)(const CL_T *restrict m, ptrdiff_t mplane,
                                              ptrdiff_t mrow, const CL_T *restrict bias,
                                              CL_T *restrict y, ptrdiff_t out_h,
                                              ptrdiff_t out_w, ptrdiff_t f, ptrdiff_t tiles_h,
                                              ptrdiff_t tiles_w, ptrdiff_t first,
                                              ptrdiff_t count) {
    CL_V checked = CL_ZERO(); /* x - x is 0 for finite x, NaN otherwise */
    for (ptrdiff_t t = 0; t < count; t++) {
        CL_NAME(cl_tile) tile = CL_NAME(cl_tile_at)(first + t, tiles_h, tiles_w);
        ptrdiff_t y0 = 4 * tile.row, x0 = 4 * tile.col;
        CL_T *origin = y + ((tile.image * out_h + y0) * out_w + x0) * f;
        ptrdiff_t rows = out_h - y0 < 4 ? out_h - y0 : 4;
        ptrdiff_t cols = out_w - x0 < 4 ? out_w - x0 : 4;
        const CL_T *in = m + t * mrow;
        for (ptrdiff_t f0 = 0; f0 < f; f0 += CL_VL) {
            ptrdiff_t lanes = f - f0 < CL_VL ? f - f0 : CL_VL;
            CL_V col[6], tmp[24], res[4];
            CL_V shift = bias == NULL ? CL_ZERO()
                                      : (lanes == CL_VL ? CL_LOAD(bias + f0)
                                                        : CL_LOADN(bias + f0, lanes));
            for (int j = 0; j < 6; j++) {
                for (int i = 0; i < 6; i++) col[i] = CL_LOAD(in + (i * 6 + j) * mplane + f0);
                CL_NAME(cl_at6)(col, res);
                for (int i = 0; i < 4; i++) tmp[i * 6 + j] = res[i];
            }
            for (ptrdiff_t i = 0; i < rows; i++) {
                CL_NAME(cl_at6)(tmp + i * 6, res);
                for (ptrdiff_t k = 0; k < cols; k++) {
                    CL_V value = CL_ADD(res[k], shift);
                    CL_T *p = origin + (i * out_w + k) * f + f0;
                    checked = CL_ADD(checked, CL_SUB(value, value));
                    if (lanes == CL_VL)
                        CL_STORE(p, value);
                    else
                        CL_STOREN(p, value, lanes);
                }
            }
        }
    }
    return CL_ALL_ZERO(checked);
}

/* ---- passes over a range of tiles -------------------------------------------------- */

/* y (num, out_h, out_w, f) = x (num, h, w, c) correlated with the 3x3 filters whose
 * transform is u[xi][c][frow] (frow >= f, zero beyond f), plus bias (f values or NULL),
 * for the outputs of tiles first .. last - 1 (tile t: image t / (tiles_h * tiles_w), then
 * row-major), out_h = h + 2 pad_h - 2. Blocks of `block` tiles use v (value j of tile t in
 * plane xi at xi * vplane + t * vrow + j, j < c rounded up to 16) and m (likewise, j <
 * frow). Returns 1 if every output written is finite. */
CL_TARGET static int CL_NAME(cl_wino4_forward)(
    const CL_T *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c, ptrdiff_t pad_h, ptrdiff_t pad_w,
    const CL_T *u, ptrdiff_t f, ptrdiff_t frow, const CL_T *bias, CL_T *y, ptrdiff_t out_h,
    ptrdiff_t out_w, ptrdiff_t first_tile, ptrdiff_t last_tile, CL_T *v, ptrdiff_t vplane,
    ptrdiff_t vrow, CL_T *m, ptrdiff_t mplane, ptrdiff_t mrow, ptrdiff_t block) {
    ptrdiff_t tiles_h = (out_h + 3) / 4, tiles_w = (out_w + 3) / 4;
    ptrdiff_t cols = (f + CL_VL - 1) / CL_VL * CL_VL;
    int finite = 1;
    for (ptrdiff_t first = first_tile; first < last_tile; first += block) {
        ptrdiff_t count = last_tile - first < block ? last_tile - first : block;
        CL_NAME(cl_input_tiles)(x, h, w, c, pad_h, pad_w, tiles_h, tiles_w, first, count, v,
                                vplane, vrow);
        for (int xi = 0; xi < 36; xi++)
            CL_NAME(cl_gemm)(count, cols, c, v + xi * vplane, vrow, 1, u + xi * c * frow, frow,
                             m + xi * mplane, mrow, 0);
        finite &= CL_NAME(cl_output_tiles)(m, mplane, mrow, bias, y, out_h, out_w, f, tiles_h,
                                           tiles_w, first, count);
    }
    return finite;
}

/* du[xi][c][frow] = sum over tiles first .. last - 1 of V[xi][t][c] dM[xi][t][f]: the
 * transformed filter gradient of cl_wino4_forward for x (num, h, w, c) and dy (num, out_h,
 * out_w, f), over this share of the tiles (its first block's products store, the others
 * add; no tiles give zeros); workspace as for cl_wino4_forward. */
CL_TARGET static void CL_NAME(cl_wino4_filter_gradient)(
    const CL_T *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c, ptrdiff_t pad_h, ptrdiff_t pad_w,
    const CL_T *dy, ptrdiff_t f, ptrdiff_t frow, ptrdiff_t out_h, ptrdiff_t out_w, CL_T *du,
    ptrdiff_t first_tile, ptrdiff_t last_tile, CL_T *v, ptrdiff_t vplane, ptrdiff_t vrow,
    CL_T *m, ptrdiff_t mplane, ptrdiff_t mrow, ptrdiff_t block) {
    ptrdiff_t tiles_h = (out_h + 3) / 4, tiles_w = (out_w + 3) / 4;
    ptrdiff_t cols = (f + CL_VL - 1) / CL_VL * CL_VL;
    for (ptrdiff_t first = first_tile; first < last_tile; first += block) {
        ptrdiff_t count = last_tile - first < block ? last_tile - first : block;
        CL_NAME(cl_input_tiles)(x, h, w, c, pad_h, pad_w, tiles_h, tiles_w, first, count, v,
                                vplane, vrow);
        CL_NAME(cl_gradient_tiles)(dy, out_h, out_w, f, tiles_h, tiles_w, first, count, m,
                                   mplane, mrow);
        for (int xi = 0; xi < 36; xi++)
            CL_NAME(cl_gemm)(c, cols, count, v + xi * vplane, 1, vrow, m + xi * mplane, mrow,
                             du + xi * c * frow, frow, first > first_tile);
    }
    if (first_tile >= last_tile) memset(du, 0, (size_t)(36 * c * frow) * sizeof(CL_T));
}
