/* The channels-last float kernels and the jobs that split each call over threads.
 *
 * Kernels (each written once, in the vocabulary of _cl_isa.h): products of small matrices
 * (_cl_gemm_impl.h), fused Winograd F(4x4, 3x3) (_cl_winograd_impl.h), im2col convolution
 * (_cl_im2col_impl.h), batch norm with an optional fused ReLU (_cl_norm_impl.h) and max
 * pooling (_cl_pooling_impl.h). They are compiled for AVX-512 (16 lanes), for AVX2 with
 * FMA (8 lanes) and portably (one lane, any compiler and CPU); where _simd.h allows
 * dispatch (GCC or clang on x86-64), the first call picks the widest set the CPU runs and
 * cl_set_isa lowers the choice (the tests run every copy on one machine). Each *_all
 * function below splits one call into parts for the threads of _cl_threads.h.
 */
#ifndef CONVNET_CL_KERNELS_H
#define CONVNET_CL_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_simd.h"
#ifdef CONVNET_X86_DISPATCH
#include <immintrin.h>
#endif

#include "_cl_im2col.h"
#include "_cl_isa.h"
#include "_cl_threads.h"

#include "_cl_isa_portable.h"
#include "_cl_kernels_impl.h"
#include "_cl_isa_end.h"
#ifdef CONVNET_X86_DISPATCH
#include "_cl_isa_avx2.h"
#include "_cl_kernels_impl.h"
#include "_cl_isa_end.h"
#include "_cl_isa_avx512.h"
#include "_cl_kernels_impl.h"
#include "_cl_isa_end.h"
#endif

/* ---- dispatch ---------------------------------------------------------------------------- */
enum { CL_PORTABLE = 0, CL_AVX2 = 1, CL_AVX512 = 2 };

static int cl_best_isa(void) {
#ifdef CONVNET_X86_DISPATCH
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
#ifdef CONVNET_X86_DISPATCH
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
    CL_DISPATCH(cl_scale_rows, job->x, job->c, job->mean, job->scale, job->offset, job->relu,
                first, last, job->out);
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
    int32_t *where;        /* written by the forward pass */
    const int32_t *maxima; /* read by the backward pass: positions inside the image */
    ptrdiff_t num, h, w, c, ph, pw, sh, sw, out_h, out_w;
} cl_pool_job;

static void cl_max_pool_part(void *context, int part, int parts) {
    cl_pool_job *job = (cl_pool_job *)context;
    ptrdiff_t first, last;
    cl_share(job->num, part, parts, &first, &last);
    CL_DISPATCH(cl_max_pool_images, job->x, job->h, job->w, job->c, job->ph, job->pw, job->sh,
                job->sw, job->out_h, job->out_w, job->y, job->where, first, last);
}

/* dx of images first .. last - 1 = 0, then dy added where each maximum was: image by
 * image, so each image's zeros are still in cache when its maxima get their values. */
static void cl_max_pool_backward_part(void *context, int part, int parts) {
    cl_pool_job *job = (cl_pool_job *)context;
    ptrdiff_t first, last, c = job->c, pixels = job->out_h * job->out_w;
    cl_share(job->num, part, parts, &first, &last);
    for (ptrdiff_t n = first; n < last; n++) {
        float *image = job->dx + n * job->h * job->w * c;
        memset(image, 0, (size_t)(job->h * job->w * c) * sizeof(float));
        for (ptrdiff_t p = n * pixels; p < (n + 1) * pixels; p++)
            for (ptrdiff_t ch = 0; ch < c; ch++)
                image[(ptrdiff_t)job->maxima[p * c + ch] * c + ch] += job->dy[p * c + ch];
    }
}

static void cl_max_pool_all(cl_pool_job *job, int parts) {
    cl_parallel(cl_max_pool_part, job, parts);
}

static void cl_max_pool_backward_all(cl_pool_job *job, int parts) {
    cl_parallel(cl_max_pool_backward_part, job, parts);
}

/* One elementwise ReLU pass over `size` floats, split in equal shares. */
typedef struct {
    const float *x, *dy;
    float *out;
    ptrdiff_t size;
} cl_relu_job;

static void cl_relu_part(void *context, int part, int parts) {
    cl_relu_job *job = (cl_relu_job *)context;
    ptrdiff_t first, last;
    cl_share(job->size, part, parts, &first, &last);
    CL_DISPATCH(cl_relu, job->x, job->out, first, last);
}

static void cl_relu_gradient_part(void *context, int part, int parts) {
    cl_relu_job *job = (cl_relu_job *)context;
    ptrdiff_t first, last;
    cl_share(job->size, part, parts, &first, &last);
    CL_DISPATCH(cl_relu_gradient, job->x, job->dy, job->out, first, last);
}

static void cl_relu_all(cl_relu_job *job, int parts) { cl_parallel(cl_relu_part, job, parts); }

static void cl_relu_gradient_all(cl_relu_job *job, int parts) {
    cl_parallel(cl_relu_gradient_part, job, parts);
}

/* One elementwise sum a + b (then ReLU if relu) over `size` floats, split in equal shares. */
typedef struct {
    const float *a, *b;
    float *out;
    ptrdiff_t size;
    int relu;
} cl_add_job;

static void cl_add_part(void *context, int part, int parts) {
    cl_add_job *job = (cl_add_job *)context;
    ptrdiff_t first, last;
    cl_share(job->size, part, parts, &first, &last);
    CL_DISPATCH(cl_add, job->a, job->b, job->out, job->relu, first, last);
}

static void cl_add_all(cl_add_job *job, int parts) { cl_parallel(cl_add_part, job, parts); }

/* One direct (in-place columns) convolution pass: bands of `band_rows` output rows split
 * over the parts (the filter gradient: images), each part padding its bands into its own
 * buffer at band + part * band_size; each part's filter gradient at dwk + part * dwk_size,
 * its bias gradient (doubles) at db + part * f. */
typedef struct {
    const float *x, *wk, *bias, *dy;
    float *y, *dwk, *band;
    double *db;
    cl_conv_geometry g;
    ptrdiff_t num, f, dwk_size, band_size, band_rows;
} cl_direct_job;

static void cl_direct_forward_part(void *context, int part, int parts) {
    cl_direct_job *job = (cl_direct_job *)context;
    ptrdiff_t bands = (job->g.out_h + job->band_rows - 1) / job->band_rows, first, last;
    float *band = job->band + part * job->band_size;
    cl_share(job->num * bands, part, parts, &first, &last);
    for (ptrdiff_t item = first; item < last; item++) {
        ptrdiff_t image = item / bands, oy0 = (item - image * bands) * job->band_rows;
        ptrdiff_t rows = job->g.out_h - oy0 < job->band_rows ? job->g.out_h - oy0 : job->band_rows;
        CL_DISPATCH(cl_pad_band, job->x, &job->g, image, oy0, rows, band);
        CL_DISPATCH(cl_conv_direct_forward_band, band, &job->g, job->wk, job->f, job->bias,
                    job->y, image, oy0, rows);
    }
}

static void cl_direct_filter_gradient_part(void *context, int part, int parts) {
    cl_direct_job *job = (cl_direct_job *)context;
    ptrdiff_t first, last;
    cl_share(job->num, part, parts, &first, &last);
    CL_DISPATCH(cl_conv_direct_filter_gradient, job->x, &job->g, job->dy, job->f,
                job->dwk + part * job->dwk_size,
                job->db == NULL ? NULL : job->db + part * job->f, first, last,
                job->band + part * job->band_size, job->band_rows);
}

static void cl_direct_forward_all(cl_direct_job *job, int parts) {
    cl_parallel(cl_direct_forward_part, job, parts);
}

/* Each part's dwk slice gets its images' gradient (overwritten), then dwk[0] the sum. */
static void cl_direct_filter_gradient_all(cl_direct_job *job, int parts) {
    cl_parallel(cl_direct_filter_gradient_part, job, parts);
    cl_sum_parts(job->dwk, job->dwk_size, parts, parts);
}


/* The filter transforms, on the calling thread (their work is a few filters' worth). */
static void cl_filter_transform_rows(const float *src, ptrdiff_t rows, ptrdiff_t n,
                                     int flipped, float *dst, ptrdiff_t row) {
    CL_DISPATCH(cl_filter_transform, src, rows, n, flipped, dst, row);
}

static void cl_filter_gradient_rows(const float *src, ptrdiff_t rows, ptrdiff_t n,
                                    ptrdiff_t row, float *dst) {
    CL_DISPATCH(cl_filter_gradient, src, rows, n, row, dst);
}

/* dst (num, b, a) = src (num, a, b) transposed image by image (NHWC <-> NCHW), in 16 x 16
 * blocks that stay in L1; images split over the parts. */
typedef struct {
    const float *src;
    float *dst;
    ptrdiff_t num, a, b;
} cl_transpose_job;

static void cl_transpose_part(void *context, int part, int parts) {
    cl_transpose_job *job = (cl_transpose_job *)context;
    ptrdiff_t first, last, a = job->a, b = job->b;
    cl_share(job->num, part, parts, &first, &last);
    for (ptrdiff_t image = first; image < last; image++) {
        const float *src = job->src + image * a * b;
        float *dst = job->dst + image * a * b;
        for (ptrdiff_t i0 = 0; i0 < a; i0 += 16)
            for (ptrdiff_t j0 = 0; j0 < b; j0 += 16) {
                ptrdiff_t i1 = i0 + 16 < a ? i0 + 16 : a, j1 = j0 + 16 < b ? j0 + 16 : b;
                for (ptrdiff_t j = j0; j < j1; j++)
                    for (ptrdiff_t i = i0; i < i1; i++) dst[j * a + i] = src[i * b + j];
            }
    }
}

static void cl_transpose_all(cl_transpose_job *job, int parts) {
    cl_parallel(cl_transpose_part, job, parts);
}

#endif
