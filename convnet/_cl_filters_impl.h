/* The filter transforms of Winograd F(4x4, 3x3), for one instruction set (included by
 * _cl_kernels_impl.h): u = G g G^T maps a 3x3 filter g to the 6x6 values the products
 * multiply, and the filter gradient comes back as dg = G^T du G. G is Lavin & Gray's
 * (interpolation points 0, 1, -1, 2, -2 and infinity), the same as
 * convnet.winograd.transform_matrices(4)'s. Both run on vectors of filters (or
 * channels): the caller lays the filters out so that those are contiguous. */

/* G's rows: G[i] = (cl_g0[i], cl_g1[i], cl_g2[i]). */
#ifndef CONVNET_CL_G
#define CONVNET_CL_G
static const float cl_g0[6] = {1.0f / 4, -1.0f / 6, -1.0f / 6, 1.0f / 24, 1.0f / 24, 0};
static const float cl_g1[6] = {0, -1.0f / 6, 1.0f / 6, 1.0f / 12, -1.0f / 12, 0};
static const float cl_g2[6] = {0, -1.0f / 6, -1.0f / 6, 1.0f / 6, 1.0f / 6, 1};
#endif

/* dst[xi][r][j] = (G g G^T)[xi] for the filters g[a][b] = src[r][3a + b][j] (rotated by 180
 * degrees with `flipped`), r < rows, j < n; dst's row r of plane xi at dst + (xi * rows +
 * r) * row, and dst[xi][r][n : row] = 0. src is (rows, 9, n). */
CL_TARGET static void CL_NAME(cl_filter_transform)(const CL_T *restrict src, ptrdiff_t rows,
                                                   ptrdiff_t n, int flipped,
                                                   CL_T *restrict dst, ptrdiff_t row) {
    ptrdiff_t plane = rows * row;
    for (ptrdiff_t r = 0; r < rows; r++) {
        for (ptrdiff_t j0 = 0; j0 < row; j0 += CL_VL) {
            ptrdiff_t lanes = n - j0 < CL_VL ? (n - j0 > 0 ? n - j0 : 0) : CL_VL;
            CL_V g[9], half[6][3];
            for (int k = 0; k < 9; k++) {
                const CL_T *p = src + (r * 9 + (flipped ? 8 - k : k)) * n + j0;
                g[k] = lanes == CL_VL ? CL_LOAD(p) : (lanes ? CL_LOADN(p, lanes) : CL_ZERO());
            }
            for (int i = 0; i < 6; i++)
                for (int b = 0; b < 3; b++)
                    half[i][b] = CL_FMA(CL_SET1(cl_g0[i]), g[b],
                                        CL_FMA(CL_SET1(cl_g1[i]), g[3 + b],
                                               CL_MUL(CL_SET1(cl_g2[i]), g[6 + b])));
            for (int i = 0; i < 6; i++)
                for (int k = 0; k < 6; k++) {
                    CL_V v = CL_FMA(half[i][0], CL_SET1(cl_g0[k]),
                                    CL_FMA(half[i][1], CL_SET1(cl_g1[k]),
                                           CL_MUL(half[i][2], CL_SET1(cl_g2[k]))));
                    CL_T *q = dst + (i * 6 + k) * plane + r * row + j0;
                    if (j0 + CL_VL <= row)
                        CL_STORE(q, v);
                    else
                        CL_STOREN(q, v, row - j0);
                }
        }
    }
}

/* dst[r][3a + b][j] = (G^T du G)[a][b], du[xi] = src[(xi * rows + r) * row + j], for
 * r < rows, j < n: the filter gradient, laid out (rows, 9, n). */
CL_TARGET static void CL_NAME(cl_filter_gradient)(const CL_T *restrict src, ptrdiff_t rows,
                                                  ptrdiff_t n, ptrdiff_t row,
                                                  CL_T *restrict dst) {
    ptrdiff_t plane = rows * row;
    for (ptrdiff_t r = 0; r < rows; r++) {
        for (ptrdiff_t j0 = 0; j0 < n; j0 += CL_VL) {
            ptrdiff_t lanes = n - j0 < CL_VL ? n - j0 : CL_VL;
            CL_V half[3][6];
            for (int a = 0; a < 3; a++)
                for (int j = 0; j < 6; j++) half[a][j] = CL_ZERO();
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 6; j++) {
                    const CL_T *p = src + (i * 6 + j) * plane + r * row + j0;
                    CL_V v = lanes == CL_VL ? CL_LOAD(p) : CL_LOADN(p, lanes);
                    half[0][j] = CL_FMA(CL_SET1(cl_g0[i]), v, half[0][j]);
                    half[1][j] = CL_FMA(CL_SET1(cl_g1[i]), v, half[1][j]);
                    half[2][j] = CL_FMA(CL_SET1(cl_g2[i]), v, half[2][j]);
                }
            for (int a = 0; a < 3; a++) {
                CL_V out[3] = {CL_ZERO(), CL_ZERO(), CL_ZERO()};
                for (int j = 0; j < 6; j++) {
                    out[0] = CL_FMA(half[a][j], CL_SET1(cl_g0[j]), out[0]);
                    out[1] = CL_FMA(half[a][j], CL_SET1(cl_g1[j]), out[1]);
                    out[2] = CL_FMA(half[a][j], CL_SET1(cl_g2[j]), out[2]);
                }
                for (int b = 0; b < 3; b++) {
                    CL_T *q = dst + (r * 9 + 3 * a + b) * n + j0;
                    if (lanes == CL_VL)
                        CL_STORE(q, out[b]);
                    else
                        CL_STOREN(q, out[b], lanes);
                }
            }
        }
    }
}
