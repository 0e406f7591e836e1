/* Max pooling of one (H, W) plane, for one element type.
 *
 * Included twice by _max_pool.h, with MP_T = float and double, MP_U the unsigned integer
 * type of MP_T's width, and MP_NAME adding the type's suffix. */

/* Row pass over count consecutive positions f of a band of rows, as one flat loop (long
 * enough to vectorize even on small planes): best[f], index[f] = first maximum of
 * x[f + j], j < pool_w, and offset + f + j. Positions whose window runs past the end of a
 * row are computed too, and never used. */
CONVNET_MULTIVERSION_AVX2 static void MP_NAME(convnet_row_pass)(const MP_T *restrict x,
                                                           ptrdiff_t count, ptrdiff_t pool_w,
                                                           MP_U offset, MP_T *restrict best,
                                                           MP_U *restrict index) {
    ptrdiff_t f, j;
    for (f = 0; f < count; f++) {
        best[f] = x[f];
        index[f] = offset + (MP_U)f;
    }
    for (j = 1; j < pool_w; j++) {
        for (f = 0; f < count; f++) {
            CONVNET_TAKE(MP_T, MP_U, x[f + j], offset + (MP_U)(f + j), &best[f], &index[f]);
        }
    }
}

/* The column passes of one output row, for strides 1, 2 and any other. */
CONVNET_MULTIVERSION_AVX2 static void MP_NAME(convnet_column_pass)(
        const MP_T *restrict best, const MP_U *restrict index, ptrdiff_t width,
        ptrdiff_t pool_h, ptrdiff_t stride, ptrdiff_t out_w, MP_T *restrict out,
        MP_U *restrict run) {
    ptrdiff_t o, i;
    if (stride == 1) { CONVNET_COLUMN(MP_T, MP_U, 1) }
    else if (stride == 2) { CONVNET_COLUMN(MP_T, MP_U, 2) }
    else { CONVNET_COLUMN(MP_T, MP_U, stride) }
}

/* Any window and stride, separably, in bands of `band` output rows: the row pass over the
 * band's input rows (overlapping windows share it), then a column pass per output row.
 * row_best, row_index: ((band - 1) * stride_h + pool_h) * width; run: out_w. */
CONVNET_MULTIVERSION_AVX2 static void MP_NAME(convnet_max_pool)(
        const MP_T *x, ptrdiff_t width, ptrdiff_t out_h, ptrdiff_t out_w, ptrdiff_t pool_h,
        ptrdiff_t pool_w, ptrdiff_t stride_h, ptrdiff_t stride_w, ptrdiff_t band,
        MP_T *row_best, MP_U *row_index, MP_U *run, MP_T *out, int *argmax) {
    ptrdiff_t first, last, oh, o, top, rows, offset;
    for (first = 0; first < out_h; first += band) {
        last = first + band < out_h ? first + band : out_h;
        top = first * stride_h;
        rows = (last - 1 - first) * stride_h + pool_h;
        MP_NAME(convnet_row_pass)(x + top * width, rows * width - pool_w + 1, pool_w,
                                  (MP_U)(top * width), row_best, row_index);
        for (oh = first; oh < last; oh++) {
            offset = (oh - first) * stride_h * width;
            MP_NAME(convnet_column_pass)(row_best + offset, row_index + offset, width, pool_h,
                                         stride_w, out_w, out + oh * out_w, run);
            for (o = 0; o < out_w; o++) argmax[oh * out_w + o] = (int)run[o];
        }
    }
}

/* 2x2 windows, stride 2: the two rows' first maxima, then the better of the two. */
CONVNET_MULTIVERSION_AVX2 static void MP_NAME(convnet_max_pool_2x2)(
        const MP_T *x, ptrdiff_t width, ptrdiff_t out_h, ptrdiff_t out_w, MP_T *out,
        int *argmax) {
    ptrdiff_t oh, o;
    for (oh = 0; oh < out_h; oh++) {
        const MP_T *r0 = x + 2 * oh * width, *r1 = r0 + width;
        MP_U base = (MP_U)(2 * oh * width);
        for (o = 0; o < out_w; o++) {
            MP_T a = r0[2 * o], b = r0[2 * o + 1], c = r1[2 * o], d = r1[2 * o + 1];
            MP_T top_best, bottom_best;
            MP_U ua, ub, uc, ud, top_bits, bottom_bits, best_bits, top_index, bottom_index;
            MP_U top_mask = (MP_U)0 - (MP_U)CONVNET_BEATS(b, a);
            MP_U bottom_mask = (MP_U)0 - (MP_U)CONVNET_BEATS(d, c);
            MP_U mask;
            memcpy(&ua, &a, sizeof(MP_T)); memcpy(&ub, &b, sizeof(MP_T));
            memcpy(&uc, &c, sizeof(MP_T)); memcpy(&ud, &d, sizeof(MP_T));
            top_bits = CONVNET_PICK(ua, ub, top_mask);
            bottom_bits = CONVNET_PICK(uc, ud, bottom_mask);
            memcpy(&top_best, &top_bits, sizeof(MP_T));
            memcpy(&bottom_best, &bottom_bits, sizeof(MP_T));
            mask = (MP_U)0 - (MP_U)CONVNET_BEATS(bottom_best, top_best);
            best_bits = CONVNET_PICK(top_bits, bottom_bits, mask);
            memcpy(&out[oh * out_w + o], &best_bits, sizeof(MP_T));
            top_index = base + 2 * (MP_U)o + (top_mask & 1);
            bottom_index = base + (MP_U)width + 2 * (MP_U)o + (bottom_mask & 1);
            argmax[oh * out_w + o] = (int)CONVNET_PICK(top_index, bottom_index, mask);
        }
    }
}

/* One plane: the 2x2 stride-2 loop, or the separable one on its scratch: row_best and, at
 * indices, rows + out_w indices of type MP_U. */
static void MP_NAME(convnet_max_pool_plane)(
        const MP_T *x, ptrdiff_t width, ptrdiff_t out_h, ptrdiff_t out_w, ptrdiff_t pool_h,
        ptrdiff_t pool_w, ptrdiff_t stride_h, ptrdiff_t stride_w, ptrdiff_t band,
        int two_by_two, MP_T *row_best, void *indices, size_t rows, MP_T *out, int *argmax) {
    if (two_by_two)
        MP_NAME(convnet_max_pool_2x2)(x, width, out_h, out_w, out, argmax);
    else
        MP_NAME(convnet_max_pool)(x, width, out_h, out_w, pool_h, pool_w, stride_h, stride_w,
                                  band, row_best, (MP_U *)indices, (MP_U *)indices + rows,
                                  out, argmax);
}
