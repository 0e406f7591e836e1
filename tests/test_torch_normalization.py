"""Normalizations against PyTorch's functional batch, layer and group norm with autograd
(float64), including batch norm's running statistics over several steps.

PyTorch's ``momentum`` m is our ``1 - m``; both store the unbiased batch variance.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tolerances import assert_close_to_torch

from convnet.layers import (
    batchnorm_backward,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)

torch = pytest.importorskip("torch")
functional = torch.nn.functional


def compare(forward_torch, out, grads, x, gamma, beta, dout) -> None:
    """Run ``forward_torch(x, gamma, beta)`` with autograd and compare output and gradients."""
    x_t, gamma_t, beta_t = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    out_t = forward_torch(x_t, gamma_t, beta_t)
    out_t.backward(torch.from_numpy(dout))
    assert_close_to_torch(out, out_t)
    for grad, tensor in zip(grads, (x_t, gamma_t, beta_t), strict=True):
        assert_close_to_torch(grad, tensor.grad)


@pytest.mark.parametrize("spatial", [False, True], ids=["batchnorm", "spatial"])
@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_batchnorm_train_test_and_running_statistics(spatial, momentum):
    rng = np.random.default_rng(0)
    shape = (6, 3, 4, 5) if spatial else (7, 4)
    forward, backward = (
        (spatial_batchnorm_forward, spatial_batchnorm_backward)
        if spatial
        else (batchnorm_forward, batchnorm_backward)
    )
    channels = shape[1]
    gamma, beta = rng.standard_normal(channels), rng.standard_normal(channels)
    eps = 1e-3
    bn_param = {"mode": "train", "momentum": momentum, "eps": eps}
    running_mean_t, running_var_t = (
        torch.zeros(channels, dtype=torch.float64),
        torch.ones(channels, dtype=torch.float64),
    )
    for step in range(4):
        x = 3 * rng.standard_normal(shape) + step
        dout = rng.standard_normal(shape)
        out, cache = forward(x, gamma, beta, bn_param)
        grads = backward(dout, cache)

        def train_t(x_t, gamma_t, beta_t):
            return functional.batch_norm(
                x_t,
                running_mean_t,  # updated in place by PyTorch
                running_var_t,
                gamma_t,
                beta_t,
                training=True,
                momentum=1 - momentum,
                eps=eps,
            )

        compare(train_t, out, grads, x, gamma, beta, dout)
        assert_close_to_torch(bn_param["running_mean"], running_mean_t)
        assert_close_to_torch(bn_param["running_var"], running_var_t)

    bn_param["mode"] = "test"
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    out, cache = forward(x, gamma, beta, bn_param)

    def test_t(x_t, gamma_t, beta_t):
        return functional.batch_norm(
            x_t, running_mean_t, running_var_t, gamma_t, beta_t, training=False, eps=eps
        )

    compare(test_t, out, backward(dout, cache), x, gamma, beta, dout)


@settings(max_examples=60)
@given(
    num=st.integers(1, 4),
    features=st.integers(3, 8),  # with 1 or 2 values dx is 0 up to eps: rounding noise
    eps=st.sampled_from([1e-5, 1e-2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_layernorm_matches_torch(num, features, eps, seed):
    rng = np.random.default_rng(seed)
    x = 2 * rng.standard_normal((num, features)) - 1
    gamma, beta = rng.standard_normal(features), rng.standard_normal(features)
    dout = rng.standard_normal(x.shape)
    out, cache = layernorm_forward(x, gamma, beta, {"eps": eps})
    compare(
        lambda x_t, g_t, b_t: functional.layer_norm(x_t, (features,), g_t, b_t, eps),
        out,
        layernorm_backward(dout, cache),
        x,
        gamma,
        beta,
        dout,
    )


@st.composite
def groupnorm_cases(draw):
    channels = draw(st.integers(1, 6))
    divisors = [g for g in range(1, channels + 1) if channels % g == 0]
    groups = draw(st.sampled_from([1, channels, *divisors]))  # G = 1 and G = C likelier
    height = draw(st.integers(1, 4))
    # At least 3 values a group (PyTorch refuses 1; with 2, dx is 0 up to eps).
    width = draw(st.integers(max(1, -(-3 * groups // (channels * height))), 4))
    return {
        "shape": (draw(st.integers(1, 3)), channels, height, width),
        "groups": groups,
        "gamma_4d": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=100)
@given(case=groupnorm_cases())
def test_groupnorm_matches_torch(case):
    rng = np.random.default_rng(case["seed"])
    shape, groups = case["shape"], case["groups"]
    channels = shape[1]
    x = 2 * rng.standard_normal(shape) + 0.5
    param_shape = (1, channels, 1, 1) if case["gamma_4d"] else (channels,)
    gamma, beta = rng.standard_normal(param_shape), rng.standard_normal(param_shape)
    dout = rng.standard_normal(shape)
    out, cache = spatial_groupnorm_forward(x, gamma, beta, groups, {})
    compare(
        lambda x_t, g_t, b_t: functional.group_norm(
            x_t, groups, g_t.reshape(channels), b_t.reshape(channels), 1e-5
        ),
        out,
        spatial_groupnorm_backward(dout, cache),
        x,
        gamma,
        beta,
        dout,
    )


@pytest.mark.parametrize("groups", [1, 4])
def test_groupnorm_g1_and_gc_match_torch_explicitly(groups):
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((3, 4, 5, 2))
    gamma, beta, dout = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(x.shape)
    out, cache = spatial_groupnorm_forward(x, gamma, beta, groups, {"eps": 1e-4})
    compare(
        lambda x_t, g_t, b_t: functional.group_norm(x_t, groups, g_t, b_t, 1e-4),
        out,
        spatial_groupnorm_backward(dout, cache),
        x,
        gamma,
        beta,
        dout,
    )
