/* Portable C: one float per "vector"; see _cl_isa.h. */
#define CL_V float
#define CL_VL 1
#define CL_LOAD(p) (*(p))
#define CL_STORE(p, v) (*(p) = (v))
#define CL_LOADN(p, n) ((void)(n), *(p))
#define CL_STOREN(p, v, n) ((void)(n), *(p) = (v))
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
#define CL_ISTOREN(p, v, n) ((void)(n), *(p) = (v))
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
