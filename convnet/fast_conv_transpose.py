"""Fast transposed convolution: the convolution's input-gradient pass, and its backward
pass the convolution's forward and filter-gradient passes, on the same code
(:mod:`convnet._im2col_conv`: im2col, GEMM and col2im, or :mod:`convnet._depthwise_conv`).

Without the compiled kernel every function falls back to the naive layers of
:mod:`convnet.layers` and warns once.
"""

from __future__ import annotations

import numpy as np

from convnet import _backend
from convnet._channel_sums import channel_sums
from convnet._parallel import blas_on_one_thread
from convnet._validation import (
    check_conv_transpose_arrays,
    check_conv_transpose_backward,
    common_dtype,
)
from convnet.conv_plan import direct_or_im2col, plan_convolution
from convnet.layers import (
    ConvTransposeCache,
    conv_transpose_backward_naive,
    conv_transpose_forward_naive,
)


@blas_on_one_thread
def conv_transpose_forward_fast(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> tuple[np.ndarray, ConvTransposeCache]:
    """Transposed convolution: the input-gradient pass of :func:`conv_backward_fast`.

    Computes what :func:`convnet.layers.conv_transpose_forward_naive` computes: ``x``
    plays the convolution's upstream gradient and ``w`` its filters, so the output comes
    from a GEMM per group and col2im on chunks of images (or the depthwise loop).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    w : ndarray, shape (C, F // groups, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'``, ``'pad'``, optional ``'output_pad'`` (int or pair >= 0, default 0,
        each smaller than the stride or the dilation), ``'dilation'``, ``'groups'``.

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = (H - 1)*sh - 2*ph + dh*(HH - 1) + output_pad_h + 1``, likewise ``W_out``.
    cache : ConvTransposeCache
    """
    x, w, b, geo = check_conv_transpose_arrays(x, w, b, conv_param)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return conv_transpose_forward_naive(x, w, b, conv_param)
    dtype = common_dtype(x, w, b)
    out_shape = (x.shape[0], b.shape[0], geo.out_h, geo.out_w)
    x_c = np.ascontiguousarray(x, dtype=dtype)
    plan = plan_convolution("im2col", out_shape, w.shape, geo.conv)  # it has no Winograd path
    out, _, _ = direct_or_im2col(plan).gradients(
        kernel,
        geo.conv,
        out_shape,
        None,
        w,
        x_c,
        compute_dx=True,
        compute_dw=False,
        compute_db=False,
        dx_bias=b,
    )
    return out, ConvTransposeCache(x, w, b, geo)


@blas_on_one_thread
def conv_transpose_backward_fast(
    dout: np.ndarray, cache: ConvTransposeCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of a transposed convolution: ``dx`` is the convolution of ``dout`` with
    ``w`` (:func:`conv_forward_fast`'s path), ``dw`` that convolution's filter gradient
    with input and upstream gradient swapped.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
    cache : ConvTransposeCache
        From :func:`conv_transpose_forward_fast` or
        :func:`convnet.layers.conv_transpose_forward_naive`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (C, F // groups, HH, WW)
    db : ndarray, shape (F,)
    """
    dout, x, w, b, geo = check_conv_transpose_backward(dout, cache)
    kernel = _backend.kernel
    if kernel is None:
        _backend.warn_if_naive()
        return conv_transpose_backward_naive(dout, cache)
    dtype = common_dtype(x, w, b, dout)
    dout_c = np.ascontiguousarray(dout, dtype=dtype)
    x_c = np.ascontiguousarray(x, dtype=dtype)
    plan = plan_convolution("im2col", dout_c.shape, w.shape, geo.conv)
    dx, dw = direct_or_im2col(plan).correlate(kernel, dout_c, w, None, geo.conv, upstream=x_c)
    return dx, dw, channel_sums(dout_c)
