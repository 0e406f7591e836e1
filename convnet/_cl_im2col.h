/* The geometry of im2col and col2im for channels-last (NHWC) float images (their loops are
 * in _cl_im2col_impl.h): one row per output pixel.
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

/* xp (images, hp, wp, c) = x (images, h, w, c) with ph rows and pw columns of zeros on each
 * side (hp = h + 2 ph, wp = w + 2 pw), for images first .. last - 1. */
static void cl_pad_images(const float *restrict x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c,
                          ptrdiff_t ph, ptrdiff_t pw, float *restrict xp, ptrdiff_t first,
                          ptrdiff_t last) {
    ptrdiff_t hp = h + 2 * ph, wp = w + 2 * pw;
    for (ptrdiff_t image = first; image < last; image++) {
        float *out = xp + image * hp * wp * c;
        const float *in = x + image * h * w * c;
        memset(out, 0, (size_t)(ph * wp * c) * sizeof(float));
        for (ptrdiff_t y = 0; y < h; y++) {
            float *line = out + (ph + y) * wp * c;
            memset(line, 0, (size_t)(pw * c) * sizeof(float));
            memcpy(line + pw * c, in + y * w * c, (size_t)(w * c) * sizeof(float));
            memset(line + (pw + w) * c, 0, (size_t)(pw * c) * sizeof(float));
        }
        memset(out + (ph + h) * wp * c, 0, (size_t)(ph * wp * c) * sizeof(float));
    }
}

#endif
