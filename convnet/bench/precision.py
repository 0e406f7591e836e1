"""How far a float32 training step's loss and gradients are from the float64 step's, under
each convolution algorithm, and PyTorch's float32 beside them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from convnet import nn, set_conv_algorithm
from convnet.bench.torch_reference import torch_gradients, torch_network
from convnet.nn import Classifier, Module


@contextmanager
def forced_conv_algorithm(algorithm: str) -> Iterator[None]:
    """Every convolution whose ``conv_param`` names no algorithm runs ``algorithm``
    (``"auto"``, ``"im2col"`` or ``"winograd"``: :func:`convnet.set_conv_algorithm`)
    inside the block; the previous choice comes back on exit, also after an exception."""
    previous = set_conv_algorithm(algorithm)
    try:
        yield
    finally:
        set_conv_algorithm(previous)


def loss_error(loss: float, reference: float) -> float:
    """``|loss - reference| / |reference|`` (the absolute error for a zero reference)."""
    return abs(loss - reference) / (abs(reference) or 1.0)


def gradient_error(grads: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """The largest error of any parameter's gradient, relative to that parameter's largest
    reference gradient: ``max_p max|g_p - r_p| / max|r_p|`` (the absolute error for a
    parameter whose reference gradient is zero).

    Raises
    ------
    ValueError
        If the two hold different parameters.
    """
    if set(grads) != set(reference):
        raise ValueError(f"gradients of {sorted(grads)} against a reference of {sorted(reference)}")
    errors = []
    for name, expected in reference.items():
        expected = np.asarray(expected, dtype=np.float64)
        scale = float(np.max(np.abs(expected))) or 1.0
        errors.append(float(np.max(np.abs(np.asarray(grads[name], np.float64) - expected))) / scale)
    return max(errors)


def float64_twin(model: Classifier, build) -> Classifier:
    """``build(float64)`` with ``model``'s parameters and buffers, exactly (widened)."""
    twin = build(np.dtype(np.float64))
    for name, value in model.params.items():
        twin.params[name] = value.astype(np.float64)
    twin.set_buffers({name: value for name, value in model.buffers().items()})
    return twin


def _loss_and_grads(model: Classifier, X: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """The training loss and the network's gradients (keyed by dotted name)."""
    loss, _ = model.loss(X, y)
    return float(loss), model.net.grads


def precision_errors(
    model: Classifier, build, X: np.ndarray, y: np.ndarray, algorithms: tuple[str, ...], torch
) -> dict[str, tuple[float, float]]:
    """The loss's and the gradients' errors (:func:`loss_error`, :func:`gradient_error`)
    of one float32 training step of ``model`` on (X, y), relative to the same step in
    float64 (the same weights and images, widened).

    Parameters
    ----------
    model : Classifier
        float32, without dropout (its masks would differ between libraries).
    build : callable
        dtype -> a model of ``model``'s architecture (the float64 twin).
    X : ndarray, shape (N, C, H, W), float32
    y : ndarray of int, shape (N,)
    algorithms : tuple of str
        Convolution algorithms to force (:func:`forced_conv_algorithm`); ``"default"``
        forces none.
    torch : module or None
        Adds PyTorch's float32 step (NCHW) under the name ``"torch"``.

    Returns
    -------
    dict
        algorithm (and ``"torch"``) -> (loss error, gradient error).
    """
    if any(isinstance(layer, nn.Dropout) for layer in model.net.layers()):
        raise ValueError("the precision of a network with dropout is not comparable")
    reference_loss, reference_grads = _loss_and_grads(
        float64_twin(model, build), X.astype(np.float64), y
    )
    errors = {}
    for algorithm in algorithms:
        if algorithm == "default":
            loss, grads = _loss_and_grads(model, X, y)
        else:
            with forced_conv_algorithm(algorithm):
                loss, grads = _loss_and_grads(model, X, y)
        errors[algorithm] = (
            loss_error(loss, reference_loss),
            gradient_error(grads, reference_grads),
        )
    if torch is not None:
        loss, grads = _torch_loss_and_grads(model.net, X, y, torch)
        errors["torch"] = (
            loss_error(loss, reference_loss),
            gradient_error(grads, reference_grads),
        )
    return errors


def _torch_loss_and_grads(net: Module, X: np.ndarray, y: np.ndarray, torch) -> tuple[float, dict]:
    counterparts: dict[Module, object] = {}
    torch_net = torch_network(net, torch, counterparts).train()
    loss = torch.nn.functional.cross_entropy(torch_net(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    return float(loss.item()), torch_gradients(net, counterparts)
