/* Batch-norm loops over one channel of an (N, C, M) array, for BN_T = float or double.
 *
 * A channel is N contiguous runs ("planes") of M values, ``stride`` = C * M values apart.
 * Sums run in BN_LANES independent partial sums per plane (the compiler vectorizes them
 * without reordering any one sum), then add up in double across planes. Every function
 * touches only x[n * stride + i] (and the same places of the other arrays) for n < num,
 * i < m: the caller guarantees that those exist.
 */

/* Sum over one plane of ``x`` (and of (x - center)^2 when ``squares``). */
static inline double BN_NAME(bn_plane_sum)(const BN_T* restrict x, ptrdiff_t m, BN_T center,
                                            int squares) {
    BN_T lanes[BN_LANES] = {0};
    ptrdiff_t i = 0;
    if (squares) {
        for (; i + BN_LANES <= m; i += BN_LANES)
            for (int k = 0; k < BN_LANES; k++) {
                BN_T d = x[i + k] - center;
                lanes[k] += d * d;
            }
    } else {
        for (; i + BN_LANES <= m; i += BN_LANES)
            for (int k = 0; k < BN_LANES; k++) lanes[k] += x[i + k];
    }
    double total = 0.0;
    for (int k = 0; k < BN_LANES; k++) total += (double)lanes[k];
    for (; i < m; i++) {
        BN_T d = squares ? x[i] - center : x[i];
        total += (double)(squares ? d * d : d);
    }
    return total;
}

/* Mean and biased variance of one channel (two passes: the mean, then the squared
 * deviations from it). */
static CONVNET_MULTIVERSION void BN_NAME(bn_channel_moments)(const BN_T* restrict x, ptrdiff_t num,
                                                  ptrdiff_t stride, ptrdiff_t m,
                                                  double* mean, double* var) {
    double total = 0.0;
    for (ptrdiff_t n = 0; n < num; n++) total += BN_NAME(bn_plane_sum)(x + n * stride, m, 0, 0);
    double count = (double)num * (double)m;
    *mean = total / count;
    BN_T center = (BN_T)*mean;
    double squares = 0.0;
    for (ptrdiff_t n = 0; n < num; n++)
        squares += BN_NAME(bn_plane_sum)(x + n * stride, m, center, 1);
    *var = squares / count;
}

/* out = (x - center) * scale + shift over one channel. */
static CONVNET_MULTIVERSION void BN_NAME(bn_channel_affine)(const BN_T* restrict x, ptrdiff_t num,
                                                 ptrdiff_t stride, ptrdiff_t m, BN_T center,
                                                 BN_T scale, BN_T shift, BN_T* restrict out) {
    for (ptrdiff_t n = 0; n < num; n++) {
        const BN_T* restrict src = x + n * stride;
        BN_T* restrict dst = out + n * stride;
        for (ptrdiff_t i = 0; i < m; i++) dst[i] = (src[i] - center) * scale + shift;
    }
}

/* sum(d * (v - center)) over one plane. */
static inline double BN_NAME(bn_plane_dot)(const BN_T* restrict d, const BN_T* restrict v,
                                            ptrdiff_t m, BN_T center) {
    BN_T lanes[BN_LANES] = {0};
    ptrdiff_t i = 0;
    for (; i + BN_LANES <= m; i += BN_LANES)
        for (int k = 0; k < BN_LANES; k++) lanes[k] += d[i + k] * (v[i + k] - center);
    double total = 0.0;
    for (int k = 0; k < BN_LANES; k++) total += (double)lanes[k];
    for (; i < m; i++) total += (double)(d[i] * (v[i] - center));
    return total;
}

/* sum(dout) and sum(dout * (x - center)) over one channel. */
static CONVNET_MULTIVERSION void BN_NAME(bn_channel_gradient_sums)(const BN_T* restrict dout,
                                                        const BN_T* restrict x, ptrdiff_t num,
                                                        ptrdiff_t stride, ptrdiff_t m,
                                                        BN_T center, double* sum_dout,
                                                        double* sum_dout_x) {
    double total = 0.0, product = 0.0;
    for (ptrdiff_t n = 0; n < num; n++) {
        total += BN_NAME(bn_plane_sum)(dout + n * stride, m, 0, 0);
        product += BN_NAME(bn_plane_dot)(dout + n * stride, x + n * stride, m, center);
    }
    *sum_dout = total;
    *sum_dout_x = product;
}

/* dx = a * dout + b * (x - center) + c over one channel. */
static CONVNET_MULTIVERSION void BN_NAME(bn_channel_input_gradient)(const BN_T* restrict dout,
                                                         const BN_T* restrict x, ptrdiff_t num,
                                                         ptrdiff_t stride, ptrdiff_t m,
                                                         BN_T center, BN_T a, BN_T b, BN_T c,
                                                         BN_T* restrict dx) {
    for (ptrdiff_t n = 0; n < num; n++) {
        const BN_T* restrict d = dout + n * stride;
        const BN_T* restrict v = x + n * stride;
        BN_T* restrict g = dx + n * stride;
        for (ptrdiff_t i = 0; i < m; i++) g[i] = a * d[i] + b * (v[i] - center) + c;
    }
}
