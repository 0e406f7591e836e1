"""Naive normalizations for the tests: plain Python loops over explicit groups of indices.

A normalization is described by its *groups*: the lists of indices of ``x`` that share one
mean and variance. The input gradient is the sum over the Jacobian, written out entry by
entry: within a group of M values, with ``s = 1 / sqrt(var + eps)``,

    d xhat_j / d x_i = s * ([i == j] - 1 / M - xhat_i * xhat_j / M),

and ``out_j = gamma[c_j] * xhat_j + beta[c_j]``, with ``c_j = j[1]`` the channel (or
feature) of index j for every normalization here.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

Index = tuple[int, ...]


def batchnorm_groups(shape: tuple[int, ...]) -> list[list[Index]]:
    """Batch norm of (N, D) or (N, C, H, W): one group per feature or channel."""
    others = [range(size) for size in (shape[0], *shape[2:])]
    return [
        [(rest[0], channel, *rest[1:]) for rest in itertools.product(*others)]
        for channel in range(shape[1])
    ]


def layernorm_groups(shape: tuple[int, int]) -> list[list[Index]]:
    """Layer norm of (N, D): one group per sample."""
    return [[(n, d) for d in range(shape[1])] for n in range(shape[0])]


def groupnorm_groups(shape: tuple[int, int, int, int], groups: int) -> list[list[Index]]:
    """Group norm of (N, C, H, W): one group per sample and block of C // groups channels."""
    num, channels, height, width = shape
    size = channels // groups
    return [
        list(itertools.product([n], range(g * size, (g + 1) * size), range(height), range(width)))
        for n in range(num)
        for g in range(groups)
    ]


def statistics(x: np.ndarray, group: list[Index]) -> tuple[float, float]:
    """Mean and biased variance of the values of ``x`` at the indices of ``group``."""
    values = [float(x[i]) for i in group]
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / len(values)


def normalize_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    groups: list[list[Index]],
    eps: float,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Output in float64; ``fixed`` = (mean, var) per channel replaces the group statistics."""
    gamma, beta = gamma.reshape(-1), beta.reshape(-1)
    out = np.zeros(x.shape)
    for group in groups:
        for i in group:
            mean, var = statistics(x, group) if fixed is None else (fixed[0][i[1]], fixed[1][i[1]])
            xhat = (float(x[i]) - mean) / math.sqrt(var + eps)
            out[i] = gamma[i[1]] * xhat + beta[i[1]]
    return out


def normalize_backward(
    dout: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray,
    groups: list[list[Index]],
    eps: float,
    fixed: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` in float64, dgamma and dbeta flat (C,)."""
    flat_gamma = gamma.reshape(-1)
    dx = np.zeros(x.shape)
    dgamma = np.zeros(flat_gamma.shape)
    dbeta = np.zeros(flat_gamma.shape)
    for group in groups:
        if fixed is None:
            mean, var = statistics(x, group)
            scale = 1 / math.sqrt(var + eps)
            xhat = {j: (float(x[j]) - mean) * scale for j in group}
            size = len(group)
            for i in group:
                dx[i] = sum(
                    dout[j]
                    * flat_gamma[j[1]]
                    * scale
                    * ((i == j) - 1 / size - xhat[i] * xhat[j] / size)
                    for j in group
                )
        else:
            xhat = {}
            for j in group:
                scale = 1 / math.sqrt(fixed[1][j[1]] + eps)
                xhat[j] = (float(x[j]) - fixed[0][j[1]]) * scale
                dx[j] = dout[j] * flat_gamma[j[1]] * scale
        for j in group:
            dgamma[j[1]] += dout[j] * xhat[j]
            dbeta[j[1]] += dout[j]
    return dx, dgamma, dbeta


def running_update(
    x: np.ndarray,
    groups: list[list[Index]],
    running: tuple[np.ndarray, np.ndarray],
    momentum: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Running mean and variance after one batch, with the batch's unbiased variance."""
    mean, var = np.array(running[0], dtype=float), np.array(running[1], dtype=float)
    for channel, group in enumerate(groups):
        batch_mean, batch_var = statistics(x, group)
        unbiased = batch_var * len(group) / (len(group) - 1)
        mean[channel] = momentum * mean[channel] + (1 - momentum) * batch_mean
        var[channel] = momentum * var[channel] + (1 - momentum) * unbiased
    return mean, var


def spatial_batchnorm_scales(
    out: np.ndarray, dout: np.ndarray, gamma: np.ndarray, cache: Any
) -> tuple[float, float, float, float]:
    """What each result of a spatial batch norm is held to, relative: the output's largest
    value; for dx, 3 |dout| |gamma| / std (a channel's dx is a difference of terms that
    size); for dgamma and dbeta, the largest sum over a channel of |dout * xhat| and |dout|.
    ``out``, ``dout`` and the NormCache ``cache`` of the float64 reference."""
    channels = out.shape[1]
    xhat = cache.xhat.reshape(out.shape)
    gamma_std = np.abs(gamma.reshape(channels) * cache.inv_std.reshape(channels))
    axes = (0, 2, 3)
    return (
        float(np.abs(out).max()),
        float(3 * np.abs(dout).max() * gamma_std.max()),
        float(np.abs(dout * xhat).sum(axis=axes).max()),
        float(np.abs(dout).sum(axis=axes).max()),
    )
