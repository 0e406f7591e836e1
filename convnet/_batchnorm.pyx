"""Compiled per-channel loops of batch normalization for ``convnet.fast_normalization``.

Each function works on the channels ``start <= c < stop`` of C-contiguous (N, C, M)
arrays (M = H * W), so worker threads can share the channels of one call. The loops live
in ``_batchnorm_channels_impl.h`` (vectorized C, sums in double across planes). Every entry
point checks the sizes it relies on (a wrong call is a ``ValueError``, never an access
outside an array) and releases the GIL.
"""

from cython cimport floating


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


def channel_moments(const floating[:, :, ::1] x, double[::1] mean, double[::1] var,
                    Py_ssize_t start, Py_ssize_t stop):
    """Mean and biased variance of channels ``start:stop`` of ``x`` (N, C, M), into
    ``mean`` and ``var`` (C,)."""
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1], m = x.shape[2], c
    _per_channel(mean.shape[0], channels, "mean")
    _per_channel(var.shape[0], channels, "var")
    if _empty(num, channels, m, start, stop):
        return
    with nogil:
        for c in range(start, stop):
            if floating is float:
                bn_channel_moments_float(&x[0, c, 0], num, channels * m, m, &mean[c], &var[c])
            else:
                bn_channel_moments_double(&x[0, c, 0], num, channels * m, m, &mean[c], &var[c])


def channel_affine(const floating[:, :, ::1] x, const floating[::1] center,
                   const floating[::1] scale, const floating[::1] shift,
                   floating[:, :, ::1] out, Py_ssize_t start, Py_ssize_t stop):
    """``out = (x - center) * scale + shift`` on channels ``start:stop`` (per-channel
    ``center``, ``scale``, ``shift`` (C,))."""
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1], m = x.shape[2], c
    _same_shape(x.shape, out.shape, "out")
    for name, size in (("center", center.shape[0]), ("scale", scale.shape[0]),
                       ("shift", shift.shape[0])):
        _per_channel(size, channels, name)
    if _empty(num, channels, m, start, stop):
        return
    with nogil:
        for c in range(start, stop):
            if floating is float:
                bn_channel_affine_float(&x[0, c, 0], num, channels * m, m, center[c],
                                        scale[c], shift[c], &out[0, c, 0])
            else:
                bn_channel_affine_double(&x[0, c, 0], num, channels * m, m, center[c],
                                         scale[c], shift[c], &out[0, c, 0])


def channel_gradient_sums(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                          const floating[::1] center, double[::1] sum_dout,
                          double[::1] sum_dout_x, Py_ssize_t start, Py_ssize_t stop):
    """``sum(dout)`` and ``sum(dout * (x - center))`` per channel over ``start:stop``."""
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1], m = x.shape[2], c
    _same_shape(x.shape, dout.shape, "dout")
    for name, size in (("center", center.shape[0]), ("sum_dout", sum_dout.shape[0]),
                       ("sum_dout_x", sum_dout_x.shape[0])):
        _per_channel(size, channels, name)
    if _empty(num, channels, m, start, stop):
        return
    with nogil:
        for c in range(start, stop):
            if floating is float:
                bn_channel_gradient_sums_float(&dout[0, c, 0], &x[0, c, 0], num,
                                               channels * m, m, center[c], &sum_dout[c],
                                               &sum_dout_x[c])
            else:
                bn_channel_gradient_sums_double(&dout[0, c, 0], &x[0, c, 0], num,
                                                channels * m, m, center[c], &sum_dout[c],
                                                &sum_dout_x[c])


def channel_input_gradient(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                           const floating[::1] center, const floating[::1] a,
                           const floating[::1] b, const floating[::1] c_,
                           floating[:, :, ::1] dx, Py_ssize_t start, Py_ssize_t stop):
    """``dx = a * dout + b * (x - center) + c`` on channels ``start:stop`` (per-channel
    coefficients (C,))."""
    cdef Py_ssize_t num = x.shape[0], channels = x.shape[1], m = x.shape[2], c
    _same_shape(x.shape, dout.shape, "dout")
    _same_shape(x.shape, dx.shape, "dx")
    for name, size in (("center", center.shape[0]), ("a", a.shape[0]), ("b", b.shape[0]),
                       ("c", c_.shape[0])):
        _per_channel(size, channels, name)
    if _empty(num, channels, m, start, stop):
        return
    with nogil:
        for c in range(start, stop):
            if floating is float:
                bn_channel_input_gradient_float(&dout[0, c, 0], &x[0, c, 0], num,
                                                channels * m, m, center[c], a[c], b[c],
                                                c_[c], &dx[0, c, 0])
            else:
                bn_channel_input_gradient_double(&dout[0, c, 0], &x[0, c, 0], num,
                                                 channels * m, m, center[c], a[c], b[c],
                                                 c_[c], &dx[0, c, 0])
