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

/* The input rows a band of `rows` output rows reads (the direct passes'). */
static inline ptrdiff_t cl_band_rows(const cl_conv_geometry *g, ptrdiff_t rows) {
    return (rows - 1) * g->sh + (g->kh - 1) * g->dh + 1;
}

#endif
