/* The filter transforms of Winograd F(4x4, 3x3), in double, for the channels-last kernels.
 *
 * u = G g G^T maps a 3x3 filter g to the 6x6 values the products multiply; the filter
 * gradient comes back as dg = G^T du G. G is Lavin & Gray's (interpolation points 0, 1,
 * -1, 2, -2 and infinity), the same as convnet.winograd.transform_matrices(4)'s.
 */
#ifndef CONVNET_CL_FILTERS_H
#define CONVNET_CL_FILTERS_H

#include <stddef.h>

static const double cl_g[6][3] = {
    {1.0 / 4, 0, 0},
    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6},
    {1.0 / 24, -1.0 / 12, 1.0 / 6},
    {0, 0, 1},
};

/* out[xi * plane] = (G g G^T)[xi] for the 3x3 filter g (rows g[0..2], g[3..5], g[6..8]);
 * flipped: of g rotated by 180 degrees. */
static void cl_filter_transform_one(const float *g, int flipped, float *out, ptrdiff_t plane) {
    double taps[9], half[6][3];
    for (int k = 0; k < 9; k++) taps[k] = g[flipped ? 8 - k : k];
    for (int i = 0; i < 6; i++)
        for (int b = 0; b < 3; b++)
            half[i][b] = cl_g[i][0] * taps[b] + cl_g[i][1] * taps[3 + b] + cl_g[i][2] * taps[6 + b];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++)
            out[(i * 6 + j) * plane] =
                (float)(half[i][0] * cl_g[j][0] + half[i][1] * cl_g[j][1] + half[i][2] * cl_g[j][2]);
}

/* u (36, c, frow) from w (f, c, 3, 3): u[xi][ch][k] = (G w[k][ch] G^T)[xi], zero for k >= f;
 * or, flipped, u (36, f, crow) with u[xi][k][ch] = (G rot180(w[k][ch]) G^T)[xi], zero for
 * ch >= c (the filters of the input gradient's convolution). */
static void cl_filter_transform(const float *w, ptrdiff_t f, ptrdiff_t c, int flipped, float *u,
                                ptrdiff_t row) {
    ptrdiff_t rows = flipped ? f : c, plane = rows * row;
    for (ptrdiff_t i = 0; i < 36 * plane; i++) u[i] = 0;
    for (ptrdiff_t k = 0; k < f; k++)
        for (ptrdiff_t ch = 0; ch < c; ch++) {
            ptrdiff_t at = flipped ? k * row + ch : ch * row + k;
            cl_filter_transform_one(w + (k * c + ch) * 9, flipped, u + at, plane);
        }
}

/* dw (f, c, 3, 3) = G^T du[:, ch, k] G from du (36, c, frow). */
static void cl_filter_gradient(const float *du, ptrdiff_t f, ptrdiff_t c, ptrdiff_t frow,
                               float *dw) {
    ptrdiff_t plane = c * frow;
    for (ptrdiff_t k = 0; k < f; k++)
        for (ptrdiff_t ch = 0; ch < c; ch++) {
            const float *v = du + ch * frow + k;
            double half[3][6];
            for (int a = 0; a < 3; a++)
                for (int j = 0; j < 6; j++) {
                    double sum = 0;
                    for (int i = 0; i < 6; i++) sum += cl_g[i][a] * v[(i * 6 + j) * plane];
                    half[a][j] = sum;
                }
            float *out = dw + (k * c + ch) * 9;
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) {
                    double sum = 0;
                    for (int j = 0; j < 6; j++) sum += half[a][j] * cl_g[j][b];
                    out[a * 3 + b] = (float)sum;
                }
        }
}

#endif
