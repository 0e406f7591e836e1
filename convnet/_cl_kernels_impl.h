/* Every channels-last kernel, for the instruction set whose vocabulary is defined (see
 * _cl_isa.h): included once per instruction set by _cl_kernels.h. */
#include "_cl_gemm_impl.h"
#include "_cl_filters_impl.h"
#include "_cl_winograd_impl.h"
#include "_cl_im2col_impl.h"
#include "_cl_norm_impl.h"
#include "_cl_pooling_impl.h"
