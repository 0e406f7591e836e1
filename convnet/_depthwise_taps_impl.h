/* The depthwise loops' inner kernels, for one element type.
 *
 * Included twice by _depthwise_taps.h, with DT_T = float and double and DT_NAME adding
 * the type's suffix. */

/* sum(a[q] * b[q]) in 16 running sums, so that the products vectorize. */
CONVNET_MULTIVERSION static DT_T DT_NAME(convnet_dot)(const DT_T *a, const DT_T *b,
                                                      ptrdiff_t count) {
    DT_T sums[16] = {0}, total = 0;
    ptrdiff_t q, v, blocks = count - count % 16;
    for (q = 0; q < blocks; q += 16)
        for (v = 0; v < 16; v++) sums[v] += a[q + v] * b[q + v];
    for (q = blocks; q < count; q++) total += a[q] * b[q];
    for (v = 0; v < 16; v++) total += sums[v];
    return total;
}

/* acc[u] += sum_e weights[e] * src[u + first + e*step], u in [lo, hi), three taps a
 * pass. */
CONVNET_MULTIVERSION static void DT_NAME(convnet_add_taps)(
        DT_T *restrict acc, const DT_T *restrict src, const DT_T *weights, ptrdiff_t taps,
        ptrdiff_t first, ptrdiff_t step, ptrdiff_t lo, ptrdiff_t hi) {
    ptrdiff_t e = 0, u;
    for (; e + 3 <= taps; e += 3) {
        const DT_T w0 = weights[e], w1 = weights[e + 1], w2 = weights[e + 2];
        const DT_T *s0 = src + (first + e * step), *s1 = src + (first + (e + 1) * step);
        const DT_T *s2 = src + (first + (e + 2) * step);
        for (u = lo; u < hi; u++) acc[u] += w0 * s0[u] + w1 * s1[u] + w2 * s2[u];
    }
    for (; e < taps; e++) {
        const DT_T w0 = weights[e], *s0 = src + (first + e * step);
        for (u = lo; u < hi; u++) acc[u] += w0 * s0[u];
    }
}
