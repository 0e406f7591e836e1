/* Winograd F(m x m, 3x3) tile transforms, m = 2 or 4, for one element type.
 *
 * Included twice by _winograd_tiles.h, with WG_T = float and double and WG_NAME adding
 * the type's suffix. Every array is channel-interleaved ("HWC"): the innermost index is
 * the channel, so each formula below runs as one loop over `n` contiguous channels that
 * the compiler vectorizes (restrict pointers: no aliasing checks needed).
 *
 * Transform matrices (Lavin & Gray 2016), for a tile d (alpha x alpha, alpha = m + 2),
 * a filter g (3 x 3) and an output tile y (m x m):
 *     y = A^T [ (G g G^T) .* (B^T d B) ] A,    dL/d(G g G^T) = (A dy A^T) .* (B^T d B).
 * F(2x2): interpolation points 0, 1, -1, infinity; F(4x4): 0, 1, -1, 2, -2, infinity.
 */

/* The one-axis transforms below read `rows_in` rows of n values, s + k * ss, and write
 * `rows_out` rows, d + k * ds. Each row is passed to a kernel of its own restrict
 * pointers (WG_ROWS), so the compiler knows no store overlaps another row and
 * vectorizes the loop over the n channels. */
#define WG_IN(k) const WG_T *restrict s##k
#define WG_OUT(k) WG_T *restrict d##k

/* d = B^T s for F(2x2): 4 rows into 4 rows. */
static inline void WG_NAME(wg_bt4_rows)(WG_IN(0), WG_IN(1), WG_IN(2), WG_IN(3), WG_OUT(0),
                                        WG_OUT(1), WG_OUT(2), WG_OUT(3), ptrdiff_t n) {
    for (ptrdiff_t c = 0; c < n; c++) {
        d0[c] = s0[c] - s2[c];
        d1[c] = s1[c] + s2[c];
        d2[c] = s2[c] - s1[c];
        d3[c] = s1[c] - s3[c];
    }
}

/* d = B^T s for F(4x4): 6 rows into 6 rows. */
static inline void WG_NAME(wg_bt6_rows)(WG_IN(0), WG_IN(1), WG_IN(2), WG_IN(3), WG_IN(4),
                                        WG_IN(5), WG_OUT(0), WG_OUT(1), WG_OUT(2), WG_OUT(3),
                                        WG_OUT(4), WG_OUT(5), ptrdiff_t n) {
    for (ptrdiff_t c = 0; c < n; c++) {
        WG_T even = s4[c] - 4 * s2[c], odd = s3[c] - 4 * s1[c];
        WG_T even2 = s4[c] - s2[c], odd2 = 2 * (s3[c] - s1[c]);
        d0[c] = 4 * s0[c] - 5 * s2[c] + s4[c];
        d1[c] = even + odd;
        d2[c] = even - odd;
        d3[c] = even2 + odd2;
        d4[c] = even2 - odd2;
        d5[c] = 4 * s1[c] - 5 * s3[c] + s5[c];
    }
}

/* d = A^T s for F(2x2): 4 rows into 2 rows. */
static inline void WG_NAME(wg_at4_rows)(WG_IN(0), WG_IN(1), WG_IN(2), WG_IN(3), WG_OUT(0),
                                        WG_OUT(1), ptrdiff_t n) {
    for (ptrdiff_t c = 0; c < n; c++) {
        d0[c] = s0[c] + s1[c] + s2[c];
        d1[c] = s1[c] - s2[c] - s3[c];
    }
}

/* d = A^T s for F(4x4): 6 rows into 4 rows. */
static inline void WG_NAME(wg_at6_rows)(WG_IN(0), WG_IN(1), WG_IN(2), WG_IN(3), WG_IN(4),
                                        WG_IN(5), WG_OUT(0), WG_OUT(1), WG_OUT(2), WG_OUT(3),
                                        ptrdiff_t n) {
    for (ptrdiff_t c = 0; c < n; c++) {
        WG_T sum12 = s1[c] + s2[c], dif12 = s1[c] - s2[c];
        WG_T sum34 = s3[c] + s4[c], dif34 = s3[c] - s4[c];
        d0[c] = s0[c] + sum12 + sum34;
        d1[c] = dif12 + 2 * dif34;
        d2[c] = sum12 + 4 * sum34;
        d3[c] = dif12 + 8 * dif34 + s5[c];
    }
}

/* d = A s for F(2x2): 2 rows into 4 rows (the gradient's transform). */
static inline void WG_NAME(wg_a4_rows)(WG_IN(0), WG_IN(1), WG_OUT(0), WG_OUT(1), WG_OUT(2),
                                       WG_OUT(3), ptrdiff_t n) {
    for (ptrdiff_t c = 0; c < n; c++) {
        d0[c] = s0[c];
        d1[c] = s0[c] + s1[c];
        d2[c] = s0[c] - s1[c];
        d3[c] = -s1[c];
    }
}

/* d = A s for F(4x4): 4 rows into 6 rows. */
static inline void WG_NAME(wg_a6_rows)(WG_IN(0), WG_IN(1), WG_IN(2), WG_IN(3), WG_OUT(0),
                                       WG_OUT(1), WG_OUT(2), WG_OUT(3), WG_OUT(4), WG_OUT(5),
                                       ptrdiff_t n) {
    for (ptrdiff_t c = 0; c < n; c++) {
        WG_T even = s0[c] + s2[c], odd = s1[c] + s3[c];
        WG_T even4 = s0[c] + 4 * s2[c], odd4 = 2 * s1[c] + 8 * s3[c];
        d0[c] = s0[c];
        d1[c] = even + odd;
        d2[c] = even - odd;
        d3[c] = even4 + odd4;
        d4[c] = even4 - odd4;
        d5[c] = s3[c];
    }
}

#undef WG_IN
#undef WG_OUT

/* The same transforms on strided rows: s + k * ss into d + k * ds. */
static inline void WG_NAME(wg_bt4)(const WG_T *s, ptrdiff_t ss, WG_T *d, ptrdiff_t ds,
                                   ptrdiff_t n) {
    WG_NAME(wg_bt4_rows)(s, s + ss, s + 2 * ss, s + 3 * ss, d, d + ds, d + 2 * ds, d + 3 * ds,
                         n);
}

static inline void WG_NAME(wg_bt6)(const WG_T *s, ptrdiff_t ss, WG_T *d, ptrdiff_t ds,
                                   ptrdiff_t n) {
    WG_NAME(wg_bt6_rows)(s, s + ss, s + 2 * ss, s + 3 * ss, s + 4 * ss, s + 5 * ss, d, d + ds,
                         d + 2 * ds, d + 3 * ds, d + 4 * ds, d + 5 * ds, n);
}

static inline void WG_NAME(wg_at4)(const WG_T *s, ptrdiff_t ss, WG_T *d, ptrdiff_t ds,
                                   ptrdiff_t n) {
    WG_NAME(wg_at4_rows)(s, s + ss, s + 2 * ss, s + 3 * ss, d, d + ds, n);
}

static inline void WG_NAME(wg_at6)(const WG_T *s, ptrdiff_t ss, WG_T *d, ptrdiff_t ds,
                                   ptrdiff_t n) {
    WG_NAME(wg_at6_rows)(s, s + ss, s + 2 * ss, s + 3 * ss, s + 4 * ss, s + 5 * ss, d, d + ds,
                         d + 2 * ds, d + 3 * ds, n);
}

static inline void WG_NAME(wg_a4)(const WG_T *s, ptrdiff_t ss, WG_T *d, ptrdiff_t ds,
                                  ptrdiff_t n) {
    WG_NAME(wg_a4_rows)(s, s + ss, d, d + ds, d + 2 * ds, d + 3 * ds, n);
}

static inline void WG_NAME(wg_a6)(const WG_T *s, ptrdiff_t ss, WG_T *d, ptrdiff_t ds,
                                  ptrdiff_t n) {
    WG_NAME(wg_a6_rows)(s, s + ss, s + 2 * ss, s + 3 * ss, d, d + ds, d + 2 * ds, d + 3 * ds,
                        d + 4 * ds, d + 5 * ds, n);
}

/* scratch[y][x][c] = src[c][y - off_h][x - off_w], 0 outside src: src (n, h, w) planar,
 * scratch (sh, sw, n) channel-interleaved. */
CONVNET_MULTIVERSION static void WG_NAME(wg_to_interleaved)(const WG_T *restrict src, ptrdiff_t n, ptrdiff_t h,
                                       ptrdiff_t w, WG_T *restrict scratch, ptrdiff_t sh,
                                       ptrdiff_t sw, ptrdiff_t off_h, ptrdiff_t off_w) {
    ptrdiff_t x_lo = off_w < 0 ? 0 : (off_w < sw ? off_w : sw);
    ptrdiff_t x_hi = w + off_w < x_lo ? x_lo : (w + off_w < sw ? w + off_w : sw);
    for (ptrdiff_t y = 0; y < sh; y++) {
        WG_T *row = scratch + y * sw * n;
        ptrdiff_t sy = y - off_h;
        if (sy < 0 || sy >= h) {
            memset(row, 0, (size_t)(sw * n) * sizeof(WG_T));
            continue;
        }
        memset(row, 0, (size_t)(x_lo * n) * sizeof(WG_T));
        memset(row + x_hi * n, 0, (size_t)((sw - x_hi) * n) * sizeof(WG_T));
        for (ptrdiff_t c = 0; c < n; c++) {
            const WG_T *line = src + (c * h + sy) * w - off_w;
            for (ptrdiff_t x = x_lo; x < x_hi; x++)
                row[x * n + c] = line[x];
        }
    }
}

/* out[c][y][x] = scratch[y][x][c] + bias[c] for y < h, x < w: scratch (sh, sw, n)
 * interleaved, out (n, h, w) planar. Returns 1 if every value written is finite. Goes
 * through each row in blocks of WG_BLOCK columns, whose n channels stay in L1 while
 * every channel's piece of the block is written. */
#ifndef WG_BLOCK
#define WG_BLOCK 16
#endif
CONVNET_MULTIVERSION static int WG_NAME(wg_from_interleaved)(const WG_T *restrict scratch, ptrdiff_t sw,
                                                  ptrdiff_t n, WG_T *restrict out, ptrdiff_t h,
                                                  ptrdiff_t w, const WG_T *restrict bias) {
    WG_UINT nonfinite = 0; /* the exponent bits of inf and NaN are all ones */
    for (ptrdiff_t y = 0; y < h; y++) {
        const WG_T *row = scratch + y * sw * n;
        for (ptrdiff_t x0 = 0; x0 < w; x0 += WG_BLOCK) {
            ptrdiff_t x1 = x0 + WG_BLOCK < w ? x0 + WG_BLOCK : w;
            for (ptrdiff_t c = 0; c < n; c++) {
                WG_T *line = out + (c * h + y) * w;
                for (ptrdiff_t x = x0; x < x1; x++) {
                    WG_T value = row[x * n + c] + bias[c];
                    WG_UINT bits;
                    memcpy(&bits, &value, sizeof bits);
                    line[x] = value;
                    nonfinite |= (bits & WG_EXPONENT) == WG_EXPONENT;
                }
            }
        }
    }
    return nonfinite == 0;
}

/* B^T d B of every tile of one interleaved image: the tile (th, tw) starts at scratch row
 * th * m and column tw * m; its alpha^2 transformed values go to v[xi * plane + t * n],
 * t = th * tiles_w + tw. tmp holds alpha^2 * n values. */
CONVNET_MULTIVERSION static void WG_NAME(wg_input_tiles)(const WG_T *restrict scratch, ptrdiff_t sw, ptrdiff_t n,
                                    ptrdiff_t tiles_h, ptrdiff_t tiles_w, int m, WG_T *restrict v,
                                    ptrdiff_t plane, WG_T *restrict tmp) {
    ptrdiff_t alpha = m + 2;
    for (ptrdiff_t th = 0; th < tiles_h; th++) {
        for (ptrdiff_t tw = 0; tw < tiles_w; tw++) {
            const WG_T *origin = scratch + (th * m * sw + tw * m) * n;
            WG_T *dst = v + (th * tiles_w + tw) * n;
            for (ptrdiff_t s = 0; s < alpha; s++) { /* columns: tmp[k][s] = (B^T d)[k][s] */
                if (m == 2)
                    WG_NAME(wg_bt4)(origin + s * n, sw * n, tmp + s * n, alpha * n, n);
                else
                    WG_NAME(wg_bt6)(origin + s * n, sw * n, tmp + s * n, alpha * n, n);
            }
            for (ptrdiff_t k = 0; k < alpha; k++) { /* rows: v[k * alpha + l] = (tmp B)[k][l] */
                if (m == 2)
                    WG_NAME(wg_bt4)(tmp + k * alpha * n, n, dst + k * alpha * plane, plane, n);
                else
                    WG_NAME(wg_bt6)(tmp + k * alpha * n, n, dst + k * alpha * plane, plane, n);
            }
        }
    }
}

/* A dy A^T of every m x m tile of one interleaved gradient image, laid out as in
 * wg_input_tiles. */
CONVNET_MULTIVERSION static void WG_NAME(wg_gradient_tiles)(const WG_T *restrict scratch, ptrdiff_t sw,
                                       ptrdiff_t n, ptrdiff_t tiles_h, ptrdiff_t tiles_w,
                                       int m, WG_T *restrict v, ptrdiff_t plane,
                                       WG_T *restrict tmp) {
    ptrdiff_t alpha = m + 2;
    for (ptrdiff_t th = 0; th < tiles_h; th++) {
        for (ptrdiff_t tw = 0; tw < tiles_w; tw++) {
            const WG_T *origin = scratch + (th * m * sw + tw * m) * n;
            WG_T *dst = v + (th * tiles_w + tw) * n;
            for (ptrdiff_t j = 0; j < m; j++) { /* columns: tmp[k][j] = (A dy)[k][j] */
                if (m == 2)
                    WG_NAME(wg_a4)(origin + j * n, sw * n, tmp + j * n, m * n, n);
                else
                    WG_NAME(wg_a6)(origin + j * n, sw * n, tmp + j * n, m * n, n);
            }
            for (ptrdiff_t k = 0; k < alpha; k++) { /* rows: v[k * alpha + l] = (tmp A^T)[k][l] */
                if (m == 2)
                    WG_NAME(wg_a4)(tmp + k * m * n, n, dst + k * alpha * plane, plane, n);
                else
                    WG_NAME(wg_a6)(tmp + k * m * n, n, dst + k * alpha * plane, plane, n);
            }
        }
    }
}

/* A^T M A of every tile of one image: M[xi * plane + t * n] as produced by the GEMMs,
 * written into the interleaved scratch (tiles_h * m, tiles_w * m, n). */
CONVNET_MULTIVERSION static void WG_NAME(wg_output_tiles)(const WG_T *restrict v, ptrdiff_t plane, ptrdiff_t n,
                                     ptrdiff_t tiles_h, ptrdiff_t tiles_w, int m,
                                     WG_T *restrict scratch, WG_T *restrict tmp) {
    ptrdiff_t alpha = m + 2, sw = tiles_w * m;
    for (ptrdiff_t th = 0; th < tiles_h; th++) {
        for (ptrdiff_t tw = 0; tw < tiles_w; tw++) {
            const WG_T *src = v + (th * tiles_w + tw) * n;
            WG_T *origin = scratch + ((th * m) * sw + tw * m) * n;
            for (ptrdiff_t l = 0; l < alpha; l++) { /* columns: tmp[i][l] = (A^T M)[i][l] */
                if (m == 2)
                    WG_NAME(wg_at4)(src + l * plane, alpha * plane, tmp + l * n, alpha * n, n);
                else
                    WG_NAME(wg_at6)(src + l * plane, alpha * plane, tmp + l * n, alpha * n, n);
            }
            for (ptrdiff_t i = 0; i < m; i++) { /* rows: y[i][j] = (tmp A)[i][j] */
                if (m == 2)
                    WG_NAME(wg_at4)(tmp + i * alpha * n, n, origin + i * sw * n, n, n);
                else
                    WG_NAME(wg_at6)(tmp + i * alpha * n, n, origin + i * sw * n, n, n);
            }
        }
    }
}
