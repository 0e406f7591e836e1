"""The fast layers: convolution (dilated, grouped, transposed), max and average pooling and
the affine layer, on compiled kernels and BLAS, with the naive layers' contracts.

Every name here is defined in the module of its job, and this module gathers them for
users (``from convnet.fast_layers import conv_forward_fast``):
:mod:`convnet.fast_conv` (convolution and its algorithm choice),
:mod:`convnet.fast_conv_transpose`, :mod:`convnet.fast_pool`, :mod:`convnet.fast_affine`,
and the workspace limit of :mod:`convnet._conv_work`.
"""

from convnet._conv_work import DEFAULT_WORKSPACE_BYTES, get_workspace_limit, set_workspace_limit
from convnet.fast_affine import affine_backward_fast, affine_forward_fast
from convnet.fast_conv import conv_algorithm_choice, conv_backward_fast, conv_forward_fast
from convnet.fast_conv_transpose import conv_transpose_backward_fast, conv_transpose_forward_fast
from convnet.fast_pool import (
    avg_pool_backward_fast,
    avg_pool_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)

__all__ = [
    "DEFAULT_WORKSPACE_BYTES",
    "affine_backward_fast",
    "affine_forward_fast",
    "avg_pool_backward_fast",
    "avg_pool_forward_fast",
    "conv_algorithm_choice",
    "conv_backward_fast",
    "conv_forward_fast",
    "conv_transpose_backward_fast",
    "conv_transpose_forward_fast",
    "get_workspace_limit",
    "max_pool_backward_fast",
    "max_pool_forward_fast",
    "set_workspace_limit",
]
