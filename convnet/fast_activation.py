"""ReLU by compiled loops (``convnet._relu``): one pass over memory each way.

Computes exactly what :func:`convnet.layers.relu_forward` and :func:`relu_backward`
compute, with the same cache (``x`` itself), so either backward pass takes either
forward's cache. Measured on (64,16,32,32) float32, one thread of an AMD EPYC: forward
0.10 ms against numpy's 0.33, backward 0.22 against 0.26. Without the compiled kernel
the numpy layers run.
"""

from __future__ import annotations

import numpy as np

from convnet import _backend
from convnet._parallel import map_groups, memory_bound_groups
from convnet._validation import check_dout, check_float_array, check_relu_cache, common_dtype
from convnet.layers import relu_backward, relu_forward


def relu_forward_fast(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rectified linear unit ``out = max(x, 0)``; NaN stays NaN.

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64

    Returns
    -------
    out : ndarray, shape and dtype of x
    cache : ndarray, x itself
    """
    kernel = _backend.relu_kernel
    if kernel is None:
        return relu_forward(x)
    x = check_float_array(x, "x")
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    map_groups(
        lambda start, stop: kernel.relu_forward(flat, out, start, stop),
        flat.size,
        memory_bound_groups(flat.size),
    )
    return out.reshape(x.shape), x


def relu_backward_fast(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """Gradient of :func:`relu_forward_fast`: ``dout`` where ``x > 0``, else 0 (a NaN in
    ``dout`` where ``x <= 0`` gives 0 too). Returns a new array.

    Parameters
    ----------
    dout : ndarray, shape of x
    cache : ndarray, x from :func:`relu_forward_fast` or :func:`convnet.layers.relu_forward`

    Returns
    -------
    dx : ndarray, shape of x, the common dtype of x and dout
    """
    kernel = _backend.relu_kernel
    if kernel is None:
        return relu_backward(dout, cache)
    x = check_relu_cache(cache)
    dout = check_dout(dout, x.shape)
    dtype = common_dtype(x, dout)
    flat_x = np.ascontiguousarray(x, dtype=dtype).reshape(-1)
    flat_dout = np.ascontiguousarray(dout, dtype=dtype).reshape(-1)
    dx = np.empty_like(flat_x)
    map_groups(
        lambda start, stop: kernel.relu_backward(flat_dout, flat_x, dx, start, stop),
        flat_x.size,
        memory_bound_groups(flat_x.size),
    )
    return dx.reshape(x.shape)
