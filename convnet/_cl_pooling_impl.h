/* Max pooling of channels-last images, for one instruction set (included by
 * _cl_kernels.h): every window is read one pixel at a time, a vector of channels at once.
 *
 * A value replaces the window's maximum so far when it is larger, or when it is NaN and
 * the maximum so far is not: the result is the first maximum in row-major order, a NaN
 * counting as larger than everything (the first NaN wins). `where` records its position
 * y * w + x in the image.
 */

/* y and where (n, out_h, out_w, c) for images first .. last - 1 of x (n, h, w, c):
 * window (oy, ox) covers rows oy * sh .. + ph - 1 and columns ox * sw .. + pw - 1, all
 * inside x. */
CL_TARGET static void CL_NAME(cl_max_pool_images)(const CL_T *restrict x, ptrdiff_t h,
                                                  ptrdiff_t w, ptrdiff_t c, ptrdiff_t ph,
                                                  ptrdiff_t pw, ptrdiff_t sh, ptrdiff_t sw,
                                                  ptrdiff_t out_h, ptrdiff_t out_w,
                                                  CL_T *restrict y, int32_t *restrict where,
                                                  ptrdiff_t first, ptrdiff_t last) {
    for (ptrdiff_t n = first; n < last; n++) {
        const CL_T *image = x + n * h * w * c;
        for (ptrdiff_t oy = 0; oy < out_h; oy++)
            for (ptrdiff_t ox = 0; ox < out_w; ox++) {
                ptrdiff_t out = ((n * out_h + oy) * out_w + ox) * c;
                ptrdiff_t y0 = oy * sh, x0 = ox * sw;
                for (ptrdiff_t c0 = 0; c0 < c; c0 += CL_VL) {
                    ptrdiff_t lanes = c - c0 < CL_VL ? c - c0 : CL_VL;
                    int full = lanes == CL_VL;
                    const CL_T *p = image + (y0 * w + x0) * c + c0;
                    CL_V best = full ? CL_LOAD(p) : CL_LOADN(p, lanes);
                    CL_IV at = CL_ISET1(y0 * w + x0);
                    for (ptrdiff_t i = 0; i < ph; i++)
                        for (ptrdiff_t j = (i == 0); j < pw; j++) {
                            ptrdiff_t position = (y0 + i) * w + x0 + j;
                            const CL_T *q = image + position * c + c0;
                            CL_V v = full ? CL_LOAD(q) : CL_LOADN(q, lanes);
                            CL_M takes = CL_TAKES(v, best);
                            best = CL_SELECT(takes, v, best);
                            at = CL_ISELECT(takes, CL_ISET1(position), at);
                        }
                    if (full) {
                        CL_STORE(y + out + c0, best);
                        CL_ISTORE(where + out + c0, at);
                    } else {
                        CL_STOREN(y + out + c0, best, lanes);
                        CL_ISTOREN(where + out + c0, at, lanes);
                    }
                }
            }
    }
}
