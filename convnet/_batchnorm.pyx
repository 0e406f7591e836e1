"""Compiled per-channel loops of batch normalization for ``convnet.fast_normalization``.

Each function works on the channels ``start <= c < stop`` of C-contiguous (N, C, M)
arrays (M = H * W), statistics and all, so worker threads share the channels of one call
without waiting for each other. The loops live
in ``_batchnorm_channels_impl.h`` (vectorized C, sums in double across planes). Every entry
point checks the sizes it relies on (a wrong call is a ``ValueError``, never an access
outside an array) and releases the GIL.
"""

from cython cimport floating
from libc.math cimport sqrt


cdef extern from "_batchnorm_channels.h" nogil:
    void bn_channel_moments_float(const float* x, Py_ssize_t num, Py_ssize_t stride,
                                  Py_ssize_t m, double* mean, double* var)
    void bn_channel_moments_double(const double* x, Py_ssize_t num, Py_ssize_t stride,
                                   Py_ssize_t m, double* mean, double* var)
    void bn_channel_affine_float(const float* x, Py_ssize_t num, Py_ssize_t stride,
                                 Py_ssize_t m, float center, float scale, float shift,
                                 float* out)
    void bn_channel_affine_double(const double* x, Py_ssize_t num, Py_ssize_t stride,
                                  Py_ssize_t m, double center, double scale, double shift,
                                  double* out)
    void bn_channel_gradient_sums_float(const float* dout, const float* x, Py_ssize_t num,
                                        Py_ssize_t stride, Py_ssize_t m, float center,
                                        double* sum_dout, double* sum_dout_x)
    void bn_channel_gradient_sums_double(const double* dout, const double* x,
                                         Py_ssize_t num, Py_ssize_t stride, Py_ssize_t m,
                                         double center, double* sum_dout,
                                         double* sum_dout_x)
    void bn_channel_input_gradient_float(const float* dout, const float* x, Py_ssize_t num,
                                         Py_ssize_t stride, Py_ssize_t m, float center,
                                         float a, float b, float c, float* dx)
    void bn_channel_input_gradient_double(const double* dout, const double* x,
                                          Py_ssize_t num, Py_ssize_t stride, Py_ssize_t m,
                                          double center, double a, double b, double c,
                                          double* dx)


cdef bint _empty(Py_ssize_t num, Py_ssize_t channels, Py_ssize_t m, Py_ssize_t start,
                 Py_ssize_t stop) except -1:
    """Check the channel range; true when there is nothing to do."""
    if not 0 <= start <= stop <= channels:
        raise ValueError(f"channels [{start}, {stop}) outside 0..{channels}")
    return num == 0 or m == 0 or start == stop


cdef int _same_shape(Py_ssize_t* expected, Py_ssize_t* got, str name) except -1:
    if got[0] != expected[0] or got[1] != expected[1] or got[2] != expected[2]:
        raise ValueError(
            f"{name} has shape ({got[0]}, {got[1]}, {got[2]}), expected "
            f"({expected[0]}, {expected[1]}, {expected[2]})"
        )
    return 0


cdef int _per_channel(Py_ssize_t size, Py_ssize_t channels, str name) except -1:
    if size != channels:
        raise ValueError(f"{name} has {size} values, expected one per channel ({channels})")
    return 0


def forward_channels(const floating[:, :, ::1] x, const floating[::1] gamma,
                     const floating[::1] beta, double eps, bint train, floating[::1] center,
                     floating[::1] inv_std, double[::1] var, floating[:, :, ::1] out,
                     Py_ssize_t start, Py_ssize_t stop):
    """Batch norm forward on channels ``start:stop`` of ``x`` (N, C, M) into ``out``.

    Train mode first takes each channel's mean (into ``center``), biased variance (into
    ``var``) and ``inv_std = 1 / sqrt(var + eps)``; test mode reads ``center`` (the running
    mean) and ``inv_std`` as given. Then ``out = (x - center) * gamma * inv_std + beta``.
    """
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1], m = x.shape[2], c
    cdef double mean, variance
    cdef floating scale
    _same_shape(x.shape, out.shape, "out")
    for name, size in (("gamma", gamma.shape[0]), ("beta", beta.shape[0]),
                       ("center", center.shape[0]), ("inv_std", inv_std.shape[0]),
                       ("var", var.shape[0])):
        _per_channel(size, channels, name)
    if _empty(num, channels, m, start, stop):
        return
    with nogil:
        for c in range(start, stop):
            if train:
                if floating is float:
                    bn_channel_moments_float(&x[0, c, 0], num, channels * m, m, &mean,
                                             &variance)
                else:
                    bn_channel_moments_double(&x[0, c, 0], num, channels * m, m, &mean,
                                              &variance)
                center[c] = <floating>mean
                var[c] = variance
                inv_std[c] = <floating>(1.0 / sqrt(variance + eps))
            scale = gamma[c] * inv_std[c]
            if floating is float:
                bn_channel_affine_float(&x[0, c, 0], num, channels * m, m, center[c], scale,
                                        beta[c], &out[0, c, 0])
            else:
                bn_channel_affine_double(&x[0, c, 0], num, channels * m, m, center[c], scale,
                                         beta[c], &out[0, c, 0])


def backward_channels(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                      const floating[::1] center, const floating[::1] inv_std,
                      const floating[::1] gamma, bint train, floating[:, :, ::1] dx,
                      floating[::1] dgamma, floating[::1] dbeta, Py_ssize_t start,
                      Py_ssize_t stop):
    """Batch norm backward on channels ``start:stop``: ``dbeta = sum(dout)``, ``dgamma =
    sum(dout * (x - center)) * inv_std`` and ``dx = a * dout + b * (x - center) + c`` with
    ``a = gamma * inv_std`` and, in train mode (statistics of the batch), ``b = -a *
    inv_std * dgamma / M'``, ``c = -a * dbeta / M'`` (M' = N * M values per channel); in
    test mode b = c = 0."""
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1], m = x.shape[2], c
    cdef double sum_dout, sum_dout_x, count = <double>num * <double>m
    cdef floating a, b, shift
    _same_shape(x.shape, dout.shape, "dout")
    _same_shape(x.shape, dx.shape, "dx")
    for name, size in (("center", center.shape[0]), ("inv_std", inv_std.shape[0]),
                       ("gamma", gamma.shape[0]), ("dgamma", dgamma.shape[0]),
                       ("dbeta", dbeta.shape[0])):
        _per_channel(size, channels, name)
    if _empty(num, channels, m, start, stop):
        return
    with nogil:
        for c in range(start, stop):
            if floating is float:
                bn_channel_gradient_sums_float(&dout[0, c, 0], &x[0, c, 0], num,
                                               channels * m, m, center[c], &sum_dout,
                                               &sum_dout_x)
            else:
                bn_channel_gradient_sums_double(&dout[0, c, 0], &x[0, c, 0], num,
                                                channels * m, m, center[c], &sum_dout,
                                                &sum_dout_x)
            dbeta[c] = <floating>sum_dout
            dgamma[c] = <floating>(sum_dout_x * inv_std[c])
            a = gamma[c] * inv_std[c]
            b = 0
            shift = 0
            if train:
                b = <floating>(-a * inv_std[c] * (dgamma[c] / count))
                shift = <floating>(-a * (dbeta[c] / count))
            if floating is float:
                bn_channel_input_gradient_float(&dout[0, c, 0], &x[0, c, 0], num,
                                                channels * m, m, center[c], a, b, shift,
                                                &dx[0, c, 0])
            else:
                bn_channel_input_gradient_double(&dout[0, c, 0], &x[0, c, 0], num,
                                                 channels * m, m, center[c], a, b, shift,
                                                 &dx[0, c, 0])
