/* AVX2 with FMA: 8 lanes; see _cl_isa.h. */
#ifndef CONVNET_CL_AVX2_LANES
#define CONVNET_CL_AVX2_LANES
CONVNET_TARGET_AVX2 static inline __m256i cl_avx2_lanes(ptrdiff_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif
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
#define CL_RELU(v) _mm256_and_ps(v, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NLE_UQ))
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
#define CL_TARGET CONVNET_TARGET_AVX2
#define CL_NAME(name) name##_avx2
#define CL_WIDE_VECTORS 2
#define CL_WIDE_ROWS 6
#define CL_NARROW_ROWS 12
#define CL_WIDE_LIST(K) CL_ROWS_6(K, 2)
#define CL_NARROW_LIST(K) CL_ROWS_12(K, 1)
