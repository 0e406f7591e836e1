"""Fast fully connected layer: the rows of the batch, or the input features of both gradient
GEMMs, split over the worker threads, each with single-threaded BLAS."""

from __future__ import annotations

import numpy as np

from convnet._parallel import blas_on_one_thread, map_groups, work_groups
from convnet._validation import (
    check_affine_arrays,
    check_affine_cache,
    check_dout,
    common_dtype,
)

SMALL_GEMM = 2**20


@blas_on_one_thread
def affine_forward_fast(
    x: np.ndarray, w: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fully connected layer ``out = x.reshape(N, D) @ w + b``, rows split over the workers.

    Computes what :func:`convnet.layers.affine_forward` computes, with the same cache.
    Each worker multiplies its block of rows with single-threaded BLAS, so a network's
    affine layers keep to the same threads as its convolutions.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), with D = d_1 * ... * d_k
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (x, w, b)
    """
    x, w, b = check_affine_arrays(x, w, b)
    dtype = common_dtype(x, w, b)
    rows = x.reshape(x.shape[0], w.shape[0]).astype(dtype, copy=False)
    w_c = w.astype(dtype, copy=False)
    out = np.empty((x.shape[0], w.shape[1]), dtype=dtype)

    def forward_group(start: int, stop: int) -> None:
        np.matmul(rows[start:stop], w_c, out=out[start:stop])

    map_groups(forward_group, x.shape[0], work_groups(rows.size * w.shape[1], SMALL_GEMM))
    out += b
    return out, (x, w, b)


@blas_on_one_thread
def affine_backward_fast(
    dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of an affine layer: each worker computes the dx columns and dw rows of
    its block of the D input features, reading only its rows of w.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : tuple (x, w, b)
        From :func:`affine_forward_fast` or :func:`convnet.layers.affine_forward`.

    Returns
    -------
    dx : ndarray, shape of x
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)
    """
    x, w, b = check_affine_cache(cache)
    dout = check_dout(dout, (x.shape[0], w.shape[1]))
    dtype = common_dtype(x, w, b, dout)
    rows = x.reshape(x.shape[0], w.shape[0]).astype(dtype, copy=False)
    dout = dout.astype(dtype, copy=False)
    w_c = w.astype(dtype, copy=False)
    dx = np.empty(rows.shape, dtype=dtype)
    dw = np.empty(w_c.shape, dtype=dtype)

    def backward_group(start: int, stop: int) -> None:
        np.matmul(dout, w_c[start:stop].T, out=dx[:, start:stop])
        np.matmul(rows[:, start:stop].T, dout, out=dw[start:stop])

    map_groups(backward_group, w.shape[0], work_groups(rows.size * w.shape[1], SMALL_GEMM))
    return dx.reshape(x.shape), dw, dout.sum(axis=0)
