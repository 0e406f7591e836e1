"""Compiled ReLU loops for ``convnet.fast_activation``: one pass over memory each way.

numpy needs several passes for the same results (``np.maximum`` keeps NaN at a third of
the speed of a copy; the backward pass's mask takes four), and ReLU runs after every
convolution. Each function works on the flat range ``start:stop`` of C-contiguous arrays
(so worker threads can share one call), checks the sizes it relies on (a wrong call is a
``ValueError``, never an access outside an array) and releases the GIL.
"""

from cython cimport floating


cdef int _check_range(Py_ssize_t size, Py_ssize_t start, Py_ssize_t stop) except -1:
    if not 0 <= start <= stop <= size:
        raise ValueError(f"range [{start}, {stop}) outside 0..{size}")
    return 0


cdef int _same_size(Py_ssize_t expected, Py_ssize_t got, str name) except -1:
    if got != expected:
        raise ValueError(f"{name} has {got} values, expected {expected}")
    return 0


def relu_forward(const floating[::1] x, floating[::1] out, Py_ssize_t start,
                 Py_ssize_t stop):
    """``out = max(x, 0)`` on ``start:stop``, NaN kept (x <= 0 is false for NaN)."""
    cdef Py_ssize_t i
    cdef floating value
    _same_size(x.shape[0], out.shape[0], "out")
    _check_range(x.shape[0], start, stop)
    with nogil:
        for i in range(start, stop):
            value = x[i]
            out[i] = 0 if value <= 0 else value


def relu_backward(const floating[::1] dout, const floating[::1] x, floating[::1] dx,
                  Py_ssize_t start, Py_ssize_t stop):
    """``dx = dout`` where ``x > 0``, else 0 (a NaN in dout where x <= 0 gives 0 too), on
    ``start:stop``."""
    cdef Py_ssize_t i
    cdef floating gradient
    _same_size(x.shape[0], dout.shape[0], "dout")
    _same_size(x.shape[0], dx.shape[0], "dx")
    _check_range(x.shape[0], start, stop)
    with nogil:
        for i in range(start, stop):
            gradient = dout[i]  # read unconditionally: the select below then vectorizes
            dx[i] = gradient if x[i] > 0 else 0
