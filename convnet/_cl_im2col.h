/* im2col and col2im for channels-last (NHWC) float images: one row per output pixel.
 *
 * Row p of the columns belongs to output pixel p of the flattened (image, oy, ox) grid and
 * holds, for each filter tap (i, j) in row-major order, the c channels of input pixel
 * (oy * sh - ph + i * dh, ox * sw - pw + j * dw), zeros outside the image:
 *     cols[p][(i * kw + j) * c + ch].
 * A GEMM of these rows (pixels x kh*kw*c) with the filters arranged (kh*kw*c x f) gives the
 * NHWC output directly. With dilation 1 the kw taps of a filter row are adjacent pixels,
 * so a row's kw*c values are one contiguous run of the input: one copy each.
 */
#ifndef CONVNET_CL_IM2COL_H
#define CONVNET_CL_IM2COL_H

#include <stddef.h>
#include <string.h>

#include "_simd.h"

typedef struct {
    ptrdiff_t h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w;
} cl_conv_geometry;

/* The input columns [lo, hi) of filter row i's taps that lie inside the image, as tap
 * indices j: taps j < lo or j >= hi read padding. */
static inline void cl_inside_taps(const cl_conv_geometry *g, ptrdiff_t x0, ptrdiff_t *lo,
                                  ptrdiff_t *hi) {
    ptrdiff_t first = 0, last = g->kw;
    while (first < last && x0 + first * g->dw < 0) first++;
    while (last > first && x0 + (last - 1) * g->dw >= g->w) last--;
    *lo = first;
    *hi = last;
}

/* Rows first .. first + count - 1 of the columns of x (images, h, w, c) into cols. */
static void cl_im2col(const float *restrict x, const cl_conv_geometry *g, ptrdiff_t first,
                      ptrdiff_t count, float *restrict cols) {
    ptrdiff_t c = g->c, row_len = g->kh * g->kw * c, pixels = g->out_h * g->out_w;
    for (ptrdiff_t p = 0; p < count; p++) {
        ptrdiff_t index = first + p, image = index / pixels, rest = index - image * pixels;
        ptrdiff_t oy = rest / g->out_w, ox = rest - oy * g->out_w;
        ptrdiff_t y0 = oy * g->sh - g->ph, x0 = ox * g->sw - g->pw, lo, hi;
        float *row = cols + p * row_len;
        const float *img = x + image * g->h * g->w * c;
        cl_inside_taps(g, x0, &lo, &hi);
        for (ptrdiff_t i = 0; i < g->kh; i++) {
            ptrdiff_t y = y0 + i * g->dh;
            float *taps = row + i * g->kw * c;
            if (y < 0 || y >= g->h || lo >= hi) {
                memset(taps, 0, (size_t)(g->kw * c) * sizeof(float));
                continue;
            }
            memset(taps, 0, (size_t)(lo * c) * sizeof(float));
            memset(taps + hi * c, 0, (size_t)((g->kw - hi) * c) * sizeof(float));
            const float *line = img + y * g->w * c;
            if (g->dw == 1) {
                memcpy(taps + lo * c, line + (x0 + lo) * c, (size_t)((hi - lo) * c) * sizeof(float));
            } else {
                for (ptrdiff_t j = lo; j < hi; j++)
                    memcpy(taps + j * c, line + (x0 + j * g->dw) * c, (size_t)c * sizeof(float));
            }
        }
    }
}

/* dx (images, h, w, c) += the rows first .. first + count - 1 of dcols, each added where
 * cl_im2col copied it from (padding dropped). */
static void cl_col2im(const float *restrict dcols, const cl_conv_geometry *g, ptrdiff_t first,
                      ptrdiff_t count, float *restrict dx) {
    ptrdiff_t c = g->c, row_len = g->kh * g->kw * c, pixels = g->out_h * g->out_w;
    for (ptrdiff_t p = 0; p < count; p++) {
        ptrdiff_t index = first + p, image = index / pixels, rest = index - image * pixels;
        ptrdiff_t oy = rest / g->out_w, ox = rest - oy * g->out_w;
        ptrdiff_t y0 = oy * g->sh - g->ph, x0 = ox * g->sw - g->pw, lo, hi;
        const float *row = dcols + p * row_len;
        float *img = dx + image * g->h * g->w * c;
        cl_inside_taps(g, x0, &lo, &hi);
        for (ptrdiff_t i = 0; i < g->kh; i++) {
            ptrdiff_t y = y0 + i * g->dh;
            if (y < 0 || y >= g->h) continue;
            const float *taps = row + i * g->kw * c;
            float *line = img + y * g->w * c;
            for (ptrdiff_t j = lo; j < hi; j++) {
                const float *src = taps + j * c;
                float *dst = line + (x0 + j * g->dw) * c;
                for (ptrdiff_t ch = 0; ch < c; ch++) dst[ch] += src[ch];
            }
        }
    }
}

#endif
