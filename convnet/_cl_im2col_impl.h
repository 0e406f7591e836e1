/* Convolution by im2col and the products of _cl_gemm_impl.h on channels-last images, for
 * one instruction set (included by _cl_kernels.h).
 *
 * The filters arrive as wk (K x f, K = kh*kw*c in the columns' order) and its transpose
 * wt (f x K). Rows of the columns are built chunk by chunk in a part's own buffer
 * (rows_per_chunk x K), so memory stays bounded whatever the batch. A pointwise
 * convolution (1x1, stride 1, no padding) uses the rows of x themselves as its columns.
 */

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
            cl_im2col(x, g, start, rows, buffer);
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
            cl_im2col(x, g, start, rows, buffer);
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
        if (!pointwise) cl_col2im(dcols, g, start, rows, dx);
    }
}
