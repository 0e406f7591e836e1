/* AVX-512F: 16 lanes; see _cl_isa.h. */
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
#define CL_RELU(v) \
    _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ), v)
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
#define CL_TARGET CONVNET_TARGET_AVX512
#define CL_NAME(name) name##_avx512
#define CL_WIDE_VECTORS 2
#define CL_WIDE_ROWS 8
#define CL_NARROW_ROWS 16
#define CL_WIDE_LIST(K) CL_ROWS_8(K, 2)
#define CL_NARROW_LIST(K) CL_ROWS_16(K, 1)
