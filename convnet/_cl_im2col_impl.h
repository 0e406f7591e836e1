/* Convolution by im2col and the products of _cl_gemm_impl.h on channels-last images, for
 * one instruction set (included by _cl_kernels.h).
 *
 * The filters arrive as wk (K x f, K = kh*kw*c in the columns' order) and its transpose
 * wt (f x K). Rows of the columns are built chunk by chunk in a part's own buffer
 * (rows_per_chunk x K), so memory stays bounded whatever the batch. A pointwise
 * convolution (1x1, stride 1, no padding) uses the rows of x themselves as its columns.
 */

/* ---- im2col and col2im (the geometry: _cl_im2col.h) ---------------------------------- */

/* dst[0 : n] = src[0 : n], a vector at a time (runs are short: a filter row's taps). */
CL_TARGET static inline void CL_NAME(cl_copy)(CL_T *restrict dst, const CL_T *restrict src,
                                              ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + CL_VL <= n; i += CL_VL) CL_STORE(dst + i, CL_LOAD(src + i));
    if (i < n) CL_STOREN(dst + i, CL_LOADN(src + i, n - i), n - i);
}

/* dst[0 : n] = 0. */
CL_TARGET static inline void CL_NAME(cl_zero)(CL_T *dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + CL_VL <= n; i += CL_VL) CL_STORE(dst + i, CL_ZERO());
    if (i < n) CL_STOREN(dst + i, CL_ZERO(), n - i);
}

/* dst[0 : n] += src[0 : n]. */
CL_TARGET static inline void CL_NAME(cl_add_into)(CL_T *restrict dst,
                                                  const CL_T *restrict src, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + CL_VL <= n; i += CL_VL) CL_STORE(dst + i, CL_ADD(CL_LOAD(dst + i), CL_LOAD(src + i)));
    if (i < n) {
        ptrdiff_t rest = n - i;
        CL_STOREN(dst + i, CL_ADD(CL_LOADN(dst + i, rest), CL_LOADN(src + i, rest)), rest);
    }
}

/* Rows first .. first + count - 1 of the columns of x (images, h, w, c) into cols. */
CL_TARGET static void CL_NAME(cl_im2col)(const CL_T *restrict x, const cl_conv_geometry *g,
                                          ptrdiff_t first, ptrdiff_t count,
                                          CL_T *restrict cols) {
    ptrdiff_t c = g->c, row_len = g->kh * g->kw * c, pixels = g->out_h * g->out_w;
    for (ptrdiff_t p = 0; p < count; p++) {
        ptrdiff_t index = first + p, image = index / pixels, rest = index - image * pixels;
        ptrdiff_t oy = rest / g->out_w, ox = rest - oy * g->out_w;
        ptrdiff_t y0 = oy * g->sh - g->ph, x0 = ox * g->sw - g->pw, lo, hi;
        CL_T *row = cols + p * row_len;
        const CL_T *img = x + image * g->h * g->w * c;
        cl_inside_taps(g, x0, &lo, &hi);
        for (ptrdiff_t i = 0; i < g->kh; i++) {
            ptrdiff_t y = y0 + i * g->dh;
            CL_T *taps = row + i * g->kw * c;
            if (y < 0 || y >= g->h || lo >= hi) {
                CL_NAME(cl_zero)(taps, g->kw * c);
                continue;
            }
            CL_NAME(cl_zero)(taps, lo * c);
            CL_NAME(cl_zero)(taps + hi * c, (g->kw - hi) * c);
            const CL_T *line = img + y * g->w * c;
            if (g->dw == 1) {
                CL_NAME(cl_copy)(taps + lo * c, line + (x0 + lo) * c, (hi - lo) * c);
            } else {
                for (ptrdiff_t j = lo; j < hi; j++)
                    CL_NAME(cl_copy)(taps + j * c, line + (x0 + j * g->dw) * c, c);
            }
        }
    }
}

/* dx (images, h, w, c) += the rows first .. first + count - 1 of dcols, each added where
 * cl_im2col copied it from (padding dropped). */
CL_TARGET static void CL_NAME(cl_col2im)(const CL_T *restrict dcols, const cl_conv_geometry *g,
                                          ptrdiff_t first, ptrdiff_t count,
                                          CL_T *restrict dx) {
    ptrdiff_t c = g->c, row_len = g->kh * g->kw * c, pixels = g->out_h * g->out_w;
    for (ptrdiff_t p = 0; p < count; p++) {
        ptrdiff_t index = first + p, image = index / pixels, rest = index - image * pixels;
        ptrdiff_t oy = rest / g->out_w, ox = rest - oy * g->out_w;
        ptrdiff_t y0 = oy * g->sh - g->ph, x0 = ox * g->sw - g->pw, lo, hi;
        const CL_T *row = dcols + p * row_len;
        CL_T *img = dx + image * g->h * g->w * c;
        cl_inside_taps(g, x0, &lo, &hi);
        for (ptrdiff_t i = 0; i < g->kh; i++) {
            ptrdiff_t y = y0 + i * g->dh;
            if (y < 0 || y >= g->h) continue;
            const CL_T *taps = row + i * g->kw * c;
            CL_T *line = img + y * g->w * c;
            if (g->dw == 1) {
                CL_NAME(cl_add_into)(line + (x0 + lo) * c, taps + lo * c, (hi - lo) * c);
            } else {
                for (ptrdiff_t j = lo; j < hi; j++)
                    CL_NAME(cl_add_into)(line + (x0 + j * g->dw) * c, taps + j * c, c);
            }
        }
    }
}


/* ---- the convolution's passes ------------------------------------------------------- */

/* y rows first .. last - 1 (output pixels, NHWC) = columns @ wk + bias. */
CL_TARGET static void CL_NAME(cl_conv_forward_rows)(const CL_T *x, const cl_conv_geometry *g,
                                                    int pointwise, const CL_T *wk,
                                                    ptrdiff_t f, const CL_T *bias, CL_T *y,
                                                    ptrdiff_t first, ptrdiff_t last,
                                                    CL_T *buffer, ptrdiff_t rows_per_chunk) {
    ptrdiff_t depth = g->kh * g->kw * g->c;
    for (ptrdiff_t start = first; start < last; start += rows_per_chunk) {
        ptrdiff_t rows = last - start < rows_per_chunk ? last - start : rows_per_chunk;
        const CL_T *cols = x + start * depth;
        if (!pointwise) {
            CL_NAME(cl_im2col)(x, g, start, rows, buffer);
            cols = buffer;
        }
        CL_T *out = y + start * f;
        CL_NAME(cl_gemm)(rows, f, depth, cols, depth, 1, wk, f, out, f, 0);
        if (bias != NULL)
            for (ptrdiff_t r = 0; r < rows; r++)
                for (ptrdiff_t j = 0; j < f; j++) out[r * f + j] += bias[j];
    }
}

/* dwk (K x f) += columns^T @ dy over the output pixels first .. last - 1. */
CL_TARGET static void CL_NAME(cl_conv_filter_gradient_rows)(
    const CL_T *x, const cl_conv_geometry *g, int pointwise, const CL_T *dy, ptrdiff_t f,
    CL_T *dwk, ptrdiff_t first, ptrdiff_t last, CL_T *buffer, ptrdiff_t rows_per_chunk) {
    ptrdiff_t depth = g->kh * g->kw * g->c;
    for (ptrdiff_t start = first; start < last; start += rows_per_chunk) {
        ptrdiff_t rows = last - start < rows_per_chunk ? last - start : rows_per_chunk;
        const CL_T *cols = x + start * depth;
        if (!pointwise) {
            CL_NAME(cl_im2col)(x, g, start, rows, buffer);
            cols = buffer;
        }
        CL_NAME(cl_gemm)(depth, f, rows, cols, 1, depth, dy + start * f, f, dwk, f, 1);
    }
}

/* dx of images first .. last - 1 (NHWC) = col2im(dy @ wt), dx's pixels of those images
 * overwritten. */
CL_TARGET static void CL_NAME(cl_conv_input_gradient_images)(
    const CL_T *dy, const cl_conv_geometry *g, int pointwise, const CL_T *wt, ptrdiff_t f,
    CL_T *dx, ptrdiff_t first, ptrdiff_t last, CL_T *buffer, ptrdiff_t rows_per_chunk) {
    ptrdiff_t depth = g->kh * g->kw * g->c, pixels = g->out_h * g->out_w;
    if (!pointwise)
        memset(dx + first * g->h * g->w * g->c, 0,
               (size_t)((last - first) * g->h * g->w * g->c) * sizeof(CL_T));
    for (ptrdiff_t start = first * pixels; start < last * pixels; start += rows_per_chunk) {
        ptrdiff_t rows =
            last * pixels - start < rows_per_chunk ? last * pixels - start : rows_per_chunk;
        CL_T *dcols = pointwise ? dx + start * depth : buffer;
        CL_NAME(cl_gemm)(rows, depth, f, dy + start * f, f, 1, wt, depth, dcols, depth, 0);
        if (!pointwise) CL_NAME(cl_col2im)(dcols, g, start, rows, dx);
    }
}

/* ---- direct passes: the columns read in place from zero-padded bands of rows --------- */

/* A band of output rows oy0 .. oy0 + rows - 1 of one image reads cl_band_rows(g, rows)
 * input rows from oy0 * sh - ph on: they are copied, zero-padded by pw columns (and zero
 * rows outside the image), into band (cl_band_rows x wp x c, wp = w + 2 pw), where every
 * output pixel's kh filter rows of kw*c adjacent values lie in place. */
CL_TARGET static void CL_NAME(cl_pad_band)(const CL_T *restrict x, const cl_conv_geometry *g,
                                           ptrdiff_t image, ptrdiff_t oy0, ptrdiff_t rows,
                                           CL_T *restrict band) {
    ptrdiff_t c = g->c, wp = g->w + 2 * g->pw, count = cl_band_rows(g, rows);
    const CL_T *img = x + image * g->h * g->w * c;
    for (ptrdiff_t r = 0; r < count; r++) {
        ptrdiff_t y = oy0 * g->sh - g->ph + r;
        CL_T *line = band + r * wp * c;
        if (y < 0 || y >= g->h) {
            CL_NAME(cl_zero)(line, wp * c);
            continue;
        }
        CL_NAME(cl_zero)(line, g->pw * c);
        CL_NAME(cl_copy)(line + g->pw * c, img + y * g->w * c, g->w * c);
        CL_NAME(cl_zero)(line + (g->pw + g->w) * c, g->pw * c);
    }
}

/* y's rows of output pixels for the band (image, oy0 .. oy0 + rows - 1) = the convolution
 * + bias, from the padded band. */
CL_TARGET static void CL_NAME(cl_conv_direct_forward_band)(
    const CL_T *band, const cl_conv_geometry *g, const CL_T *wk, ptrdiff_t f,
    const CL_T *bias, CL_T *y, ptrdiff_t image, ptrdiff_t oy0, ptrdiff_t rows) {
    ptrdiff_t c = g->c, wp = g->w + 2 * g->pw;
    for (ptrdiff_t oy = oy0; oy < oy0 + rows; oy++) {
        CL_NAME(cl_operands) o = {band + (oy - oy0) * g->sh * wp * c, wk, g->sw * c,
                                  g->dh * wp * c, 1, g->kw * c * f, f, g->kh, g->kw * c};
        CL_T *out = y + ((image * g->out_h + oy) * g->out_w) * f;
        CL_NAME(cl_gemm2)(g->out_w, f, &o, out, f, 0);
        if (bias != NULL)
            for (ptrdiff_t r = 0; r < g->out_w; r++)
                for (ptrdiff_t j = 0; j < f; j++) out[r * f + j] += bias[j];
    }
}

/* sums[j] += sum of rows[r][j] for r < count (rows of f values): a band's float sums,
 * added in double. */
CL_TARGET static void CL_NAME(cl_column_sums)(const CL_T *restrict rows, ptrdiff_t count,
                                              ptrdiff_t f, double *restrict sums) {
    for (ptrdiff_t f0 = 0; f0 < f; f0 += CL_VL) {
        ptrdiff_t lanes = f - f0 < CL_VL ? f - f0 : CL_VL;
        CL_V total = CL_ZERO();
        for (ptrdiff_t r = 0; r < count; r++) {
            const CL_T *p = rows + r * f + f0;
            total = CL_ADD(total, lanes == CL_VL ? CL_LOAD(p) : CL_LOADN(p, lanes));
        }
        CL_T lane[CL_VL];
        CL_STORE(lane, total);
        for (ptrdiff_t j = 0; j < lanes; j++) sums[f0 + j] += lane[j];
    }
}

/* dwk (K x f, rows in the columns' order) = the filter gradient of images first .. last - 1
 * (zeros for none): for each filter row i, its kw*c rows of dwk sum, over the output
 * pixels, the input values they read times dy; and db (f doubles, unless NULL) += the sums
 * of dy over the pixels (the bias gradient). The pixels go in bands of `band_rows` output
 * rows, padded into `band` (cl_pad_band), each band through every filter row, so a band
 * of dy stays in cache while dwk's rows take their share of it. */
CL_TARGET static void CL_NAME(cl_conv_direct_filter_gradient)(
    const CL_T *x, const cl_conv_geometry *g, const CL_T *dy, ptrdiff_t f, CL_T *dwk,
    double *db, ptrdiff_t first, ptrdiff_t last, CL_T *band, ptrdiff_t band_rows) {
    ptrdiff_t c = g->c, row = g->kw * c, wp = g->w + 2 * g->pw;
    if (first >= last) memset(dwk, 0, (size_t)(g->kh * row * f) * sizeof(CL_T));
    for (ptrdiff_t image = first; image < last; image++)
        for (ptrdiff_t oy = 0; oy < g->out_h; oy += band_rows) {
            ptrdiff_t rows = g->out_h - oy < band_rows ? g->out_h - oy : band_rows;
            CL_NAME(cl_pad_band)(x, g, image, oy, rows, band);
            for (ptrdiff_t i = 0; i < g->kh; i++) {
                CL_NAME(cl_operands) o = {band + i * g->dh * wp * c,
                                          dy + (image * g->out_h + oy) * g->out_w * f,
                                          1,
                                          g->sh * wp * c,
                                          g->sw * c,
                                          g->out_w * f,
                                          f,
                                          rows,
                                          g->out_w};
                CL_NAME(cl_gemm2)(row, f, &o, dwk + i * row * f, f, image > first || oy > 0);
            }
            if (db != NULL)
                CL_NAME(cl_column_sums)(dy + (image * g->out_h + oy) * g->out_w * f,
                                        rows * g->out_w, f, db);
        }
}
