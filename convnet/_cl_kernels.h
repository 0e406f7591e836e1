/* The channels-last float kernels: products of small matrices (_cl_gemm_impl.h), fused
 * Winograd F(4x4, 3x3) (_cl_winograd_impl.h), im2col convolution (_cl_im2col_impl.h), and
 * the jobs that split each call over the threads of _cl_threads.h.
 *
 * The implementation is compiled three times: for AVX-512 (16 lanes), for AVX2 with FMA
 * (8 lanes) and portably (one lane, any compiler and CPU). On x86-64 with GCC or clang the
 * first call picks the widest the CPU runs; cl_set_isa lowers the choice (the tests run
 * every copy on one machine).
 */
#ifndef CONVNET_CL_KERNELS_H
#define CONVNET_CL_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CL_X86 1
#include <immintrin.h>
#endif

#include "_cl_filters.h"
#include "_cl_im2col.h"
#include "_cl_threads.h"

#define CL_T float
#define CL_ROWS_1(K, N) K(1, N)
#define CL_ROWS_4(K, N) CL_ROWS_1(K, N) K(2, N) K(3, N) K(4, N)
#define CL_ROWS_6(K, N) CL_ROWS_4(K, N) K(5, N) K(6, N)
#define CL_ROWS_8(K, N) CL_ROWS_6(K, N) K(7, N) K(8, N)
#define CL_ROWS_12(K, N) CL_ROWS_8(K, N) K(9, N) K(10, N) K(11, N) K(12, N)
#define CL_ROWS_16(K, N) CL_ROWS_12(K, N) K(13, N) K(14, N) K(15, N) K(16, N)

/* ---- portable: one value per vector --------------------------------------------------- */
#define CL_V float
#define CL_VL 1
#define CL_LOAD(p) (*(p))
#define CL_STORE(p, v) (*(p) = (v))
#define CL_LOADN(p, n) (*(p))
#define CL_STOREN(p, v, n) (*(p) = (v))
#define CL_SET1(x) ((float)(x))
#define CL_ZERO() 0.0f
#define CL_ADD(a, b) ((a) + (b))
#define CL_SUB(a, b) ((a) - (b))
#define CL_MUL(a, b) ((a) * (b))
#define CL_FMA(a, b, c) ((a) * (b) + (c))
#define CL_FNMA(a, b, c) ((c) - (a) * (b))
#define CL_ALL_ZERO(v) ((v) == 0.0f)
#define CL_RELU(v) ((v) > 0.0f || (v) != (v) ? (v) : 0.0f)
#define CL_KEEP_POSITIVE(test, v) ((test) > 0.0f ? (v) : 0.0f)
#define CL_IV int32_t
#define CL_M int
#define CL_ISET1(i) ((int32_t)(i))
#define CL_ISTORE(p, v) (*(p) = (v))
#define CL_ISTOREN(p, v, n) (*(p) = (v))
#define CL_TAKES(v, best) ((v) > (best) || ((v) != (v) && (best) == (best)))
#define CL_SELECT(m, a, b) ((m) ? (a) : (b))
#define CL_ISELECT(m, a, b) ((m) ? (a) : (b))
#define CL_TARGET
#define CL_NAME(name) name##_portable
#define CL_WIDE_VECTORS 4
#define CL_WIDE_ROWS 4
#define CL_NARROW_ROWS 4
#define CL_WIDE_LIST(K) CL_ROWS_4(K, 4)
#define CL_NARROW_LIST(K) CL_ROWS_4(K, 1)
#include "_cl_gemm_impl.h"
#include "_cl_winograd_impl.h"
#include "_cl_im2col_impl.h"
#include "_cl_norm_impl.h"
#include "_cl_pooling_impl.h"
#undef CL_V
#undef CL_VL
#undef CL_LOAD
#undef CL_STORE
#undef CL_LOADN
#undef CL_STOREN
#undef CL_SET1
#undef CL_ZERO
#undef CL_ADD
#undef CL_SUB
#undef CL_MUL
#undef CL_FMA
#undef CL_FNMA
#undef CL_ALL_ZERO
#undef CL_RELU
#undef CL_KEEP_POSITIVE
#undef CL_IV
#undef CL_M
#undef CL_ISET1
#undef CL_ISTORE
#undef CL_ISTOREN
#undef CL_TAKES
#undef CL_SELECT
#undef CL_ISELECT
#undef CL_TARGET
#undef CL_NAME
#undef CL_WIDE_VECTORS
#undef CL_WIDE_ROWS
#undef CL_NARROW_ROWS
#undef CL_WIDE_LIST
#undef CL_NARROW_LIST

#ifdef CL_X86
/* ---- AVX2 with FMA: 8 lanes --------------------------------------------------------- */
__attribute__((target("avx2,fma"))) static inline __m256i cl_avx2_lanes(ptrdiff_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#define CL_V __m256
#define CL_VL 8
#define CL_LOAD(p) _mm256_loadu_ps(p)
#define CL_STORE(p, v) _mm256_storeu_ps(p, v)
#define CL_LOADN(p, n) _mm256_maskload_ps(p, cl_avx2_lanes(n))
#define CL_STOREN(p, v, n) _mm256_maskstore_ps(p, cl_avx2_lanes(n), v)
#define CL_SET1(x) _mm256_set1_ps((float)(x))
#define CL_ZERO() _mm256_setzero_ps()
#define CL_ADD(a, b) _mm256_add_ps(a, b)
#define CL_SUB(a, b) _mm256_sub_ps(a, b)
#define CL_MUL(a, b) _mm256_mul_ps(a, b)
#define CL_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define CL_FNMA(a, b, c) _mm256_fnmadd_ps(a, b, c)
#define CL_ALL_ZERO(v) \
    (_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ)) == 0)
#define CL_RELU(v) _mm256_max_ps(_mm256_setzero_ps(), v)
#define CL_KEEP_POSITIVE(test, v) \
    _mm256_and_ps(_mm256_cmp_ps(test, _mm256_setzero_ps(), _CMP_GT_OQ), v)
#define CL_IV __m256i
#define CL_M __m256
#define CL_ISET1(i) _mm256_set1_epi32((int)(i))
#define CL_ISTORE(p, v) _mm256_storeu_si256((__m256i *)(p), v)
#define CL_ISTOREN(p, v, n) _mm256_maskstore_epi32((int *)(p), cl_avx2_lanes(n), v)
#define CL_TAKES(v, best)                                   \
    _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ),        \
                 _mm256_andnot_ps(_mm256_cmp_ps(best, best, _CMP_UNORD_Q), \
                                  _mm256_cmp_ps(v, v, _CMP_UNORD_Q)))
#define CL_SELECT(m, a, b) _mm256_blendv_ps(b, a, m)
#define CL_ISELECT(m, a, b) \
    _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a), m))
#define CL_TARGET __attribute__((target("avx2,fma")))
#define CL_NAME(name) name##_avx2
#define CL_WIDE_VECTORS 2
#define CL_WIDE_ROWS 6
#define CL_NARROW_ROWS 12
#define CL_WIDE_LIST(K) CL_ROWS_6(K, 2)
#define CL_NARROW_LIST(K) CL_ROWS_12(K, 1)
#include "_cl_gemm_impl.h"
#include "_cl_winograd_impl.h"
#include "_cl_im2col_impl.h"
#include "_cl_norm_impl.h"
#include "_cl_pooling_impl.h"
#undef CL_V
#undef CL_VL
#undef CL_LOAD
#undef CL_STORE
#undef CL_LOADN
#undef CL_STOREN
#undef CL_SET1
#undef CL_ZERO
#undef CL_ADD
#undef CL_SUB
#undef CL_MUL
#undef CL_FMA
#undef CL_FNMA
#undef CL_ALL_ZERO
#undef CL_RELU
#undef CL_KEEP_POSITIVE
#undef CL_IV
#undef CL_M
#undef CL_ISET1
#undef CL_ISTORE
#undef CL_ISTOREN
#undef CL_TAKES
#undef CL_SELECT
#undef CL_ISELECT
#undef CL_TARGET
#undef CL_NAME
#undef CL_WIDE_VECTORS
#undef CL_WIDE_ROWS
#undef CL_NARROW_ROWS
#undef CL_WIDE_LIST
#undef CL_NARROW_LIST

/* ---- AVX-512: 16 lanes ---------------------------------------------------------------- */
#define CL_V __m512
#define CL_VL 16
#define CL_LANES(n) ((__mmask16)((1u << (n)) - 1u))
#define CL_LOAD(p) _mm512_loadu_ps(p)
#define CL_STORE(p, v) _mm512_storeu_ps(p, v)
#define CL_LOADN(p, n) _mm512_maskz_loadu_ps(CL_LANES(n), p)
#define CL_STOREN(p, v, n) _mm512_mask_storeu_ps(p, CL_LANES(n), v)
#define CL_SET1(x) _mm512_set1_ps((float)(x))
#define CL_ZERO() _mm512_setzero_ps()
#define CL_ADD(a, b) _mm512_add_ps(a, b)
#define CL_SUB(a, b) _mm512_sub_ps(a, b)
#define CL_MUL(a, b) _mm512_mul_ps(a, b)
#define CL_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define CL_FNMA(a, b, c) _mm512_fnmadd_ps(a, b, c)
#define CL_ALL_ZERO(v) (_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ) == 0)
#define CL_RELU(v) _mm512_max_ps(_mm512_setzero_ps(), v)
#define CL_KEEP_POSITIVE(test, v) \
    _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(test, _mm512_setzero_ps(), _CMP_GT_OQ), v)
#define CL_IV __m512i
#define CL_M __mmask16
#define CL_ISET1(i) _mm512_set1_epi32((int)(i))
#define CL_ISTORE(p, v) _mm512_storeu_si512((void *)(p), v)
#define CL_ISTOREN(p, v, n) _mm512_mask_storeu_epi32((void *)(p), CL_LANES(n), v)
#define CL_TAKES(v, best)                          \
    (_mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |     \
     (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & ~_mm512_cmp_ps_mask(best, best, _CMP_UNORD_Q)))
#define CL_SELECT(m, a, b) _mm512_mask_blend_ps(m, b, a)
#define CL_ISELECT(m, a, b) _mm512_mask_blend_epi32(m, b, a)
#define CL_TARGET __attribute__((target("avx512f")))
#define CL_NAME(name) name##_avx512
#define CL_WIDE_VECTORS 2
#define CL_WIDE_ROWS 8
#define CL_NARROW_ROWS 16
#define CL_WIDE_LIST(K) CL_ROWS_8(K, 2)
#define CL_NARROW_LIST(K) CL_ROWS_16(K, 1)
#include "_cl_gemm_impl.h"
#include "_cl_winograd_impl.h"
#include "_cl_im2col_impl.h"
#include "_cl_norm_impl.h"
#include "_cl_pooling_impl.h"
#undef CL_V
#undef CL_VL
#undef CL_LANES
#undef CL_LOAD
#undef CL_STORE
#undef CL_LOADN
#undef CL_STOREN
#undef CL_SET1
#undef CL_ZERO
#undef CL_ADD
#undef CL_SUB
#undef CL_MUL
#undef CL_FMA
#undef CL_FNMA
#undef CL_ALL_ZERO
#undef CL_RELU
#undef CL_KEEP_POSITIVE
#undef CL_IV
#undef CL_M
#undef CL_ISET1
#undef CL_ISTORE
#undef CL_ISTOREN
#undef CL_TAKES
#undef CL_SELECT
#undef CL_ISELECT
#undef CL_TARGET
#undef CL_NAME
#undef CL_WIDE_VECTORS
#undef CL_WIDE_ROWS
#undef CL_NARROW_ROWS
#undef CL_WIDE_LIST
#undef CL_NARROW_LIST
#endif /* CL_X86 */

/* ---- dispatch ---------------------------------------------------------------------------- */
enum { CL_PORTABLE = 0, CL_AVX2 = 1, CL_AVX512 = 2 };

static int cl_best_isa(void) {
#ifdef CL_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return CL_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CL_AVX2;
#endif
    return CL_PORTABLE;
}

static int cl_isa_in_use = -1;

/* The instruction set the kernels run: CL_PORTABLE, CL_AVX2 or CL_AVX512. */
static int cl_isa(void) {
    if (cl_isa_in_use < 0) cl_isa_in_use = cl_best_isa();
    return cl_isa_in_use;
}

/* Run `level` (at most what the CPU has); returns the level now in use. */
static int cl_set_isa(int level) {
    int best = cl_best_isa();
    cl_isa_in_use = level < best ? (level < 0 ? 0 : level) : best;
    return cl_isa_in_use;
}

#define CL_DISPATCH(name, ...)                                   \
    (cl_isa() == CL_AVX512 ? CL_CALL_AVX512(name, __VA_ARGS__)   \
     : cl_isa() == CL_AVX2 ? CL_CALL_AVX2(name, __VA_ARGS__)     \
                           : name##_portable(__VA_ARGS__))
#ifdef CL_X86
#define CL_CALL_AVX512(name, ...) name##_avx512(__VA_ARGS__)
#define CL_CALL_AVX2(name, ...) name##_avx2(__VA_ARGS__)
#else
#define CL_CALL_AVX512(name, ...) name##_portable(__VA_ARGS__)
#define CL_CALL_AVX2(name, ...) name##_portable(__VA_ARGS__)
#endif

/* One call of the Winograd kernels: the arrays and sizes, and each part's workspace at
 * work + part * part_size (v, then m at offset v_size; for the filter gradient each part
 * also owns du + part * du_size). */
typedef struct {
    const float *x, *u, *dy, *bias;
    float *y, *du, *work;
    ptrdiff_t num, h, w, c, pad_h, pad_w, f, frow, out_h, out_w;
    ptrdiff_t part_size, v_size, du_size, vplane, vrow, mplane, mrow, block;
    int finite[CL_MAX_WORKERS + 1];
} cl_wino_job;

static ptrdiff_t cl_wino_tiles(const cl_wino_job *job) {
    return job->num * ((job->out_h + 3) / 4) * ((job->out_w + 3) / 4);
}

static void cl_wino4_forward_part(void *context, int part, int parts) {
    cl_wino_job *job = (cl_wino_job *)context;
    ptrdiff_t first, last;
    float *v = job->work + part * job->part_size, *m = v + job->v_size;
    cl_share(cl_wino_tiles(job), part, parts, &first, &last);
    job->finite[part] = CL_DISPATCH(cl_wino4_forward, job->x, job->h, job->w, job->c,
                                    job->pad_h, job->pad_w, job->u, job->f, job->frow,
                                    job->bias, job->y, job->out_h, job->out_w, first, last, v,
                                    job->vplane, job->vrow, m, job->mplane, job->mrow,
                                    job->block);
}

static void cl_wino4_filter_gradient_part(void *context, int part, int parts) {
    cl_wino_job *job = (cl_wino_job *)context;
    ptrdiff_t first, last;
    float *v = job->work + part * job->part_size, *m = v + job->v_size;
    cl_share(cl_wino_tiles(job), part, parts, &first, &last);
    CL_DISPATCH(cl_wino4_filter_gradient, job->x, job->h, job->w, job->c, job->pad_h,
                job->pad_w, job->dy, job->f, job->frow, job->out_h, job->out_w,
                job->du + part * job->du_size, first, last, v, job->vplane, job->vrow, m,
                job->mplane, job->mrow, job->block);
}

/* data[0:size] += data[k * size : (k + 1) * size] for 0 < k < count, in slices. */
typedef struct {
    float *data;
    ptrdiff_t size;
    int count;
} cl_sum_job;

static void cl_sum_part(void *context, int part, int parts) {
    cl_sum_job *job = (cl_sum_job *)context;
    ptrdiff_t first, last;
    cl_share(job->size, part, parts, &first, &last);
    for (int other = 1; other < job->count; other++) {
        const float *src = job->data + other * job->size;
        for (ptrdiff_t i = first; i < last; i++) job->data[i] += src[i];
    }
}

static void cl_sum_parts(float *data, ptrdiff_t size, int count, int parts) {
    cl_sum_job job = {data, size, count};
    if (count > 1) cl_parallel(cl_sum_part, &job, parts);
}

/* Returns 1 if every output is finite. */
static int cl_wino4_forward_all(cl_wino_job *job, int parts) {
    int finite = 1;
    cl_parallel(cl_wino4_forward_part, job, parts);
    for (int part = 0; part < parts; part++) finite &= job->finite[part];
    return finite;
}

/* Each of the `parts` slices of job->du gets its tiles' gradient, then du[0] the sum. */
static void cl_wino4_filter_gradient_all(cl_wino_job *job, int parts) {
    cl_parallel(cl_wino4_filter_gradient_part, job, parts);
    cl_sum_parts(job->du, job->du_size, parts, parts);
}

/* One call of the im2col convolution kernels; each part's column buffer at work + part *
 * part_size, and for the filter gradient its own dwk + part * dwk_size. */
typedef struct {
    const float *x, *wk, *wt, *bias, *dy;
    float *y, *dx, *dwk, *work;
    cl_conv_geometry g;
    ptrdiff_t num, f, rows_per_chunk, part_size, dwk_size;
    int pointwise;
} cl_conv_job;

static void cl_conv_forward_part(void *context, int part, int parts) {
    cl_conv_job *job = (cl_conv_job *)context;
    ptrdiff_t first, last;
    cl_share(job->num * job->g.out_h * job->g.out_w, part, parts, &first, &last);
    CL_DISPATCH(cl_conv_forward_rows, job->x, &job->g, job->pointwise, job->wk, job->f,
                job->bias, job->y, first, last, job->work + part * job->part_size,
                job->rows_per_chunk);
}

static void cl_conv_filter_gradient_part(void *context, int part, int parts) {
    cl_conv_job *job = (cl_conv_job *)context;
    ptrdiff_t first, last;
    cl_share(job->num * job->g.out_h * job->g.out_w, part, parts, &first, &last);
    CL_DISPATCH(cl_conv_filter_gradient_rows, job->x, &job->g, job->pointwise, job->dy, job->f,
                job->dwk + part * job->dwk_size, first, last,
                job->work + part * job->part_size, job->rows_per_chunk);
}

static void cl_conv_input_gradient_part(void *context, int part, int parts) {
    cl_conv_job *job = (cl_conv_job *)context;
    ptrdiff_t first, last;
    cl_share(job->num, part, parts, &first, &last);
    CL_DISPATCH(cl_conv_input_gradient_images, job->dy, &job->g, job->pointwise, job->wt,
                job->f, job->dx, first, last, job->work + part * job->part_size,
                job->rows_per_chunk);
}

static void cl_conv_forward_all(cl_conv_job *job, int parts) {
    cl_parallel(cl_conv_forward_part, job, parts);
}

/* Each part's dwk slice gets its pixels' gradient (slices zero on entry), then dwk[0]
 * the sum. */
static void cl_conv_filter_gradient_all(cl_conv_job *job, int parts) {
    cl_parallel(cl_conv_filter_gradient_part, job, parts);
    cl_sum_parts(job->dwk, job->dwk_size, parts, parts);
}

static void cl_conv_input_gradient_all(cl_conv_job *job, int parts) {
    cl_parallel(cl_conv_input_gradient_part, job, parts);
}

/* One pass of batch norm over rows x c (channels-last pixels); each part's double sums
 * (2 c of them) at sums + part * 2 c. */
typedef struct {
    const float *x, *dy, *shift, *mean, *scale, *offset, *k1, *k2, *k3;
    float *out;
    double *sums;
    ptrdiff_t rows, c;
    int relu;
} cl_norm_job;

static void cl_norm_sums_part(void *context, int part, int parts) {
    cl_norm_job *job = (cl_norm_job *)context;
    ptrdiff_t first, last;
    cl_share(job->rows, part, parts, &first, &last);
    CL_DISPATCH(cl_shifted_sums, job->x, job->c, job->shift, first, last,
                job->sums + part * 2 * job->c);
}

static void cl_norm_scale_part(void *context, int part, int parts) {
    cl_norm_job *job = (cl_norm_job *)context;
    ptrdiff_t first, last;
    cl_share(job->rows, part, parts, &first, &last);
    CL_DISPATCH(cl_scale_rows, job->x, job->c, job->scale, job->offset, job->relu, first, last,
                job->out);
}

static void cl_norm_gradient_sums_part(void *context, int part, int parts) {
    cl_norm_job *job = (cl_norm_job *)context;
    ptrdiff_t first, last;
    cl_share(job->rows, part, parts, &first, &last);
    CL_DISPATCH(cl_gradient_sums, job->x, job->dy, job->c, job->mean, job->scale, job->offset,
                job->relu, first, last, job->sums + part * 2 * job->c);
}

static void cl_norm_input_gradient_part(void *context, int part, int parts) {
    cl_norm_job *job = (cl_norm_job *)context;
    ptrdiff_t first, last;
    cl_share(job->rows, part, parts, &first, &last);
    CL_DISPATCH(cl_norm_input_gradient, job->x, job->dy, job->c, job->mean, job->scale,
                job->offset, job->relu, job->k1, job->k2, job->k3, first, last, job->out);
}

static void cl_norm_sums_all(cl_norm_job *job, int parts) {
    cl_parallel(cl_norm_sums_part, job, parts);
}

static void cl_norm_scale_all(cl_norm_job *job, int parts) {
    cl_parallel(cl_norm_scale_part, job, parts);
}

static void cl_norm_gradient_sums_all(cl_norm_job *job, int parts) {
    cl_parallel(cl_norm_gradient_sums_part, job, parts);
}

static void cl_norm_input_gradient_all(cl_norm_job *job, int parts) {
    cl_parallel(cl_norm_input_gradient_part, job, parts);
}

/* One max-pool call: images split over the parts. */
typedef struct {
    const float *x, *dy;
    float *y, *dx;
    int32_t *where;          /* written by the forward pass */
    const int32_t *maxima;   /* read by the backward pass */
    ptrdiff_t num, h, w, c, ph, pw, sh, sw, out_h, out_w;
    int bad[CL_MAX_WORKERS + 1]; /* positions outside the image met by each part */
} cl_pool_job;

static void cl_max_pool_part(void *context, int part, int parts) {
    cl_pool_job *job = (cl_pool_job *)context;
    ptrdiff_t first, last;
    cl_share(job->num, part, parts, &first, &last);
    CL_DISPATCH(cl_max_pool_images, job->x, job->h, job->w, job->c, job->ph, job->pw, job->sh,
                job->sw, job->out_h, job->out_w, job->y, job->where, first, last);
}

/* dx of images first .. last - 1 = 0, then dy added where each maximum was; a position
 * outside the image is skipped and counted. */
static void cl_max_pool_backward_part(void *context, int part, int parts) {
    cl_pool_job *job = (cl_pool_job *)context;
    ptrdiff_t first, last, c = job->c, pixels = job->out_h * job->out_w;
    uint32_t positions = (uint32_t)(job->h * job->w);
    int bad = 0;
    cl_share(job->num, part, parts, &first, &last);
    memset(job->dx + first * job->h * job->w * c, 0,
           (size_t)((last - first) * job->h * job->w * c) * sizeof(float));
    for (ptrdiff_t n = first; n < last; n++) {
        float *image = job->dx + n * job->h * job->w * c;
        for (ptrdiff_t p = n * pixels; p < (n + 1) * pixels; p++)
            for (ptrdiff_t ch = 0; ch < c; ch++) {
                uint32_t position = (uint32_t)job->maxima[p * c + ch];
                if (position < positions)
                    image[(ptrdiff_t)position * c + ch] += job->dy[p * c + ch];
                else
                    bad = 1;
            }
    }
    job->bad[part] = bad;
}

static void cl_max_pool_all(cl_pool_job *job, int parts) {
    cl_parallel(cl_max_pool_part, job, parts);
}

/* Returns 1 if every recorded position lay inside its image. */
static int cl_max_pool_backward_all(cl_pool_job *job, int parts) {
    int bad = 0;
    cl_parallel(cl_max_pool_backward_part, job, parts);
    for (int part = 0; part < parts; part++) bad |= job->bad[part];
    return !bad;
}

#endif
