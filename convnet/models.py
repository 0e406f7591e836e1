"""Classifiers built from the layers: ThreeLayerConvNet, FullyConnectedNet, resnet, vgg.

Every model holds its weights in ``model.params`` (a dict of arrays in the model's dtype),
computes ``model.loss(X)`` (class scores) or ``model.loss(X, y)`` (softmax loss and the
gradients, keyed like ``params``), predicts labels with ``model.predict(X)`` and describes
itself with ``model.config()``: the keyword arguments that rebuild it, as JSON-compatible
values. State that gradients do not train (batch norm's running statistics) is in
``model.buffers()``. ``save_model`` and ``load_model`` store a model
(configuration, parameters and buffers) in one ``.npz`` file; they live in
:mod:`convnet.serialization` and are importable from here too.

Unlike the layers, which refuse integer arrays, the models convert an integer ``X`` (uint8
pixels, say) explicitly to their dtype; booleans, complex numbers and objects are refused.

Composed networks (:mod:`convnet.nn`) are :class:`convnet.nn.Classifier` models, which keep
their running statistics in ``params`` (with a zero gradient) instead; the presets
:func:`resnet` (a small residual net) and :func:`vgg` (VGG-style, with batch norm and
dropout) come from :mod:`convnet.presets`.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from convnet._parallel import single_threaded_blas
from convnet._validation import FLOAT_DTYPES, _positive_int, check_labels, output_size
from convnet.dropout import layer_seed
from convnet.layer_utils import (
    affine_bn_relu_backward,
    affine_bn_relu_forward,
    affine_ln_relu_backward,
    affine_ln_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
)
from convnet.layers import (
    affine_backward,
    affine_forward,
    dropout_backward,
    dropout_forward,
    softmax_loss,
)
from convnet.presets import resnet as resnet
from convnet.presets import vgg as vgg

INITS = ("normal", "he")


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        result = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from error
    if result not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {result}")
    return result


def _check_real(value: Any, name: str, *, low: float, low_inclusive: bool) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    in_range = value >= low if low_inclusive else value > low
    if not math.isfinite(value) or not in_range:
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be finite and {bound} {low}, got {value}")
    return value


def _check_init(init: Any) -> str:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return init


def _check_seed(seed: Any) -> int | None:
    return None if seed is None else _positive_int(seed, "seed", 0)


def _check_keep_ratio(keep_ratio: Any, alias: Any) -> float:
    """``dropout_keep_ratio`` or its former name ``dropout`` (not both), in (0, 1]."""
    if keep_ratio is not None and alias is not None:
        raise ValueError(
            "give dropout_keep_ratio or its former name dropout, not both "
            f"(got {keep_ratio!r} and {alias!r})"
        )
    value = next((v for v in (keep_ratio, alias) if v is not None), 1.0)
    value = _check_real(value, "dropout_keep_ratio (keep probability)", low=0, low_inclusive=False)
    if value > 1:
        raise ValueError(
            f"dropout_keep_ratio is the keep probability and must lie in (0, 1], got {value}"
        )
    return value


class _Classifier:
    """What both models share: dtype, regularization, input checks and initialization."""

    params: dict[str, np.ndarray]
    dtype: np.dtype
    reg: float
    num_classes: int
    init: str
    weight_scale: float

    def _draw_weight(
        self, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int
    ) -> np.ndarray:
        """Gaussian weights: std ``sqrt(2 / fan_in)`` for "he" init, else ``weight_scale``."""
        std = math.sqrt(2.0 / fan_in) if self.init == "he" else self.weight_scale
        return (std * rng.standard_normal(shape)).astype(self.dtype)

    def predict(self, X: np.ndarray, batch_size: int = 200) -> np.ndarray:
        """The predicted class of every sample: the index of its highest score.

        Parameters
        ----------
        X : ndarray, shape (N, ...) as :meth:`loss` takes it
            Float or integer (converted to the model's dtype).
        batch_size : int
            Samples per forward pass.

        Returns
        -------
        ndarray of int64, shape (N,)
        """
        batch_size = _positive_int(batch_size, "batch_size", 1)
        X = np.asarray(X)
        if X.ndim == 0:
            raise ValueError("X must be a batch (N, ...), got a scalar")
        labels = np.empty(X.shape[0], dtype=np.int64)
        for start in range(0, X.shape[0], batch_size):
            scores = self.loss(X[start : start + batch_size])
            labels[start : start + batch_size] = np.argmax(scores, axis=1)
        return labels

    def _as_input(self, X: Any, sample_shape: tuple[int, ...]) -> np.ndarray:
        """``X`` cast to the model dtype, after checking it is a batch of ``sample_shape``."""
        X = np.asarray(X)
        if X.dtype.kind not in "iuf":
            raise TypeError(f"X must hold real numbers (float or integer), got dtype {X.dtype}")
        if X.ndim != len(sample_shape) + 1 or X.shape[1:] != sample_shape:
            raise ValueError(
                f"X must have shape (N, {', '.join(map(str, sample_shape))}) for this "
                f"{type(self).__name__}, got {X.shape}"
            )
        return X.astype(self.dtype, copy=False)

    def _buffer_slots(self) -> dict[str, tuple[dict[str, Any], str]]:
        """Each buffer's name, and the dict and key that hold it."""
        return {}

    def buffers(self) -> dict[str, np.ndarray]:
        """Arrays of the model's state that are not trained by gradients (batch norm's
        running statistics, named ``running_mean{i}`` and ``running_var{i}``): saved and
        loaded with the parameters, never updated by the Solver's update rule."""
        return {name: holder[key] for name, (holder, key) in self._buffer_slots().items()}

    def set_buffers(self, buffers: dict[str, np.ndarray]) -> None:
        """Replace buffers by copies of the given arrays (in the model dtype).

        Raises
        ------
        ValueError
            For a name the model has no buffer of, or an array of another shape.
        """
        slots = self._buffer_slots()
        for name, array in buffers.items():
            if name not in slots:
                raise ValueError(f"{type(self).__name__} has no buffer {name!r}")
            holder, key = slots[name]
            array = np.asarray(array)
            if array.shape != holder[key].shape or array.dtype.kind != "f":
                raise ValueError(
                    f"buffer {name} needs shape {holder[key].shape} of floats, got shape "
                    f"{array.shape} and dtype {array.dtype}"
                )
            holder[key] = array.astype(self.dtype)

    def _add_regularization(self, loss: float, grads: dict[str, np.ndarray]) -> float:
        """Add ``0.5 * reg * sum(W**2)`` over the weights (not biases) and its gradient."""
        if self.reg == 0:
            return loss
        for name, weight in self.params.items():
            if name.startswith("W"):
                loss += 0.5 * self.reg * float(np.vdot(weight, weight))
                grads[name] += self.reg * weight
        return loss


class ThreeLayerConvNet(_Classifier):
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax.

    The convolution has stride 1 and zero padding ``(filter_size - 1) // 2``: an odd
    filter keeps the height and width, an even one shrinks them by one. The pool has
    stride 2 and needs no divisibility (an odd size drops its last row or column).

    Parameters
    ----------
    input_dim : tuple (C, H, W), default (3, 32, 32)
    num_filters : int, default 32
    filter_size : int, default 7
    hidden_dim : int, default 100
    num_classes : int, default 10
    weight_scale : float, default 1e-3
        Standard deviation of the weights when ``init="normal"``.
    reg : float, default 0.0
        L2 strength: the loss gains ``0.5 * reg * sum(W**2)`` over W1, W2, W3.
    dtype : float32 or float64, default float32
    init : {"normal", "he"}, default "normal"
        "he" draws each weight with std ``sqrt(2 / fan_in)``. Biases start at zero.
    seed : int, optional
        Seed of the initialization.

    Attributes
    ----------
    params : dict
        ``W1`` (F, C, k, k), ``b1`` (F,), ``W2`` (F * Hp * Wp, hidden_dim), ``b2``
        (hidden_dim,), ``W3`` (hidden_dim, num_classes), ``b3`` (num_classes,), where
        Hp, Wp is the pooled size.
    """

    POOL_PARAM: ClassVar[dict[str, int]] = {"pool_height": 2, "pool_width": 2, "stride": 2}

    def __init__(
        self,
        input_dim: Sequence[int] = (3, 32, 32),
        num_filters: int = 32,
        filter_size: int = 7,
        hidden_dim: int = 100,
        num_classes: int = 10,
        weight_scale: float = 1e-3,
        reg: float = 0.0,
        dtype: Any = np.float32,
        init: str = "normal",
        seed: int | None = None,
    ) -> None:
        if isinstance(input_dim, (str, bytes)) or not isinstance(input_dim, Sequence):
            raise TypeError(f"input_dim must be a sequence (C, H, W), got {input_dim!r}")
        if len(input_dim) != 3:
            raise ValueError(f"input_dim must be (C, H, W), got {tuple(input_dim)!r}")
        self.input_dim = tuple(_positive_int(d, "input_dim", 1) for d in input_dim)
        self.num_filters = _positive_int(num_filters, "num_filters", 1)
        self.filter_size = _positive_int(filter_size, "filter_size", 1)
        self.hidden_dim = _positive_int(hidden_dim, "hidden_dim", 1)
        self.num_classes = _positive_int(num_classes, "num_classes", 1)
        self.weight_scale = _check_real(weight_scale, "weight_scale", low=0, low_inclusive=False)
        self.reg = _check_real(reg, "reg", low=0, low_inclusive=True)
        self.dtype = _check_dtype(dtype)
        self.init = _check_init(init)
        self.seed = _check_seed(seed)

        channels, height, width = self.input_dim
        pad = (self.filter_size - 1) // 2
        self.conv_param = {"stride": 1, "pad": pad}
        conv_h = output_size(height, self.filter_size, 1, pad)
        conv_w = output_size(width, self.filter_size, 1, pad)
        if conv_h < 2 or conv_w < 2:
            raise ValueError(
                f"input {height}x{width} is too small for a {self.filter_size}x"
                f"{self.filter_size} convolution followed by a 2x2 pool"
            )
        pooled = self.num_filters * output_size(conv_h, 2, 2, 0) * output_size(conv_w, 2, 2, 0)

        rng = np.random.default_rng(self.seed)
        kernel_shape = (self.num_filters, channels, self.filter_size, self.filter_size)
        fan_in_conv = channels * self.filter_size**2
        draw = self._draw_weight
        self.params = {
            "W1": draw(rng, kernel_shape, fan_in_conv),
            "b1": np.zeros(self.num_filters, dtype=self.dtype),
            "W2": draw(rng, (pooled, self.hidden_dim), pooled),
            "b2": np.zeros(self.hidden_dim, dtype=self.dtype),
            "W3": draw(rng, (self.hidden_dim, self.num_classes), self.hidden_dim),
            "b3": np.zeros(self.num_classes, dtype=self.dtype),
        }

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model, as JSON-compatible values."""
        return {
            "input_dim": list(self.input_dim),
            "num_filters": self.num_filters,
            "filter_size": self.filter_size,
            "hidden_dim": self.hidden_dim,
            "num_classes": self.num_classes,
            "weight_scale": self.weight_scale,
            "reg": self.reg,
            "dtype": self.dtype.name,
            "init": self.init,
            "seed": self.seed,
        }

    def loss(
        self, X: np.ndarray, y: np.ndarray | None = None
    ) -> np.ndarray | tuple[float, dict[str, np.ndarray]]:
        """Class scores, or the regularized softmax loss and its gradients.

        Parameters
        ----------
        X : ndarray, shape (N, C, H, W) as ``input_dim``
            Float, or integer (converted explicitly to the model's dtype).
        y : ndarray of int, shape (N,), optional
            Labels in ``[0, num_classes)``.

        Returns
        -------
        scores : ndarray, shape (N, num_classes)
            If ``y`` is None.
        loss : float
            Otherwise, with
        grads : dict
            Keyed like ``params``; each gradient has its parameter's shape and dtype.
        """
        X = self._as_input(X, self.input_dim)
        if y is not None:
            y = check_labels(y, X.shape[0], self.num_classes)
        with single_threaded_blas():
            return self._scores_or_loss(X, y)

    def _scores_or_loss(
        self, X: np.ndarray, y: np.ndarray | None
    ) -> np.ndarray | tuple[float, dict[str, np.ndarray]]:
        p = self.params
        pooled, conv_cache = conv_relu_pool_forward(
            X, p["W1"], p["b1"], self.conv_param, self.POOL_PARAM
        )
        hidden, hidden_cache = affine_relu_forward(pooled, p["W2"], p["b2"])
        scores, scores_cache = affine_forward(hidden, p["W3"], p["b3"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads: dict[str, np.ndarray] = {}
        dhidden, grads["W3"], grads["b3"] = affine_backward(dscores, scores_cache)
        dpooled, grads["W2"], grads["b2"] = affine_relu_backward(dhidden, hidden_cache)
        _, grads["W1"], grads["b1"] = conv_relu_pool_backward(dpooled, conv_cache, compute_dx=False)
        return self._add_regularization(loss, grads), grads


class FullyConnectedNet(_Classifier):
    """{affine - [norm] - relu - [dropout]} x (L - 1) - affine - softmax, for any L >= 1.

    CS231n's fully connected net: the same arguments (in the same order), parameter names
    and ``bn_params``. Giving ``y`` to :meth:`loss` selects train mode (batch statistics,
    dropout), leaving it out test mode (running statistics, no dropout).

    Parameters
    ----------
    hidden_dims : sequence of int
        Width of each hidden layer; empty gives a linear softmax classifier.
    input_dim : int, default 3 * 32 * 32
        Features per sample; ``X`` may be (N, input_dim) or any (N, ...) of that size.
    num_classes : int, default 10
    dropout_keep_ratio : float in (0, 1], default 1.0
        KEEP probability of each hidden unit in training; 1 means no dropout. Dropout is
        inverted (kept units are scaled by ``1 / dropout_keep_ratio``), so test mode needs
        no scaling.
    normalization : None, "batchnorm" or "layernorm", default None
        Normalization between each hidden affine layer and its ReLU (none after the last
        layer), with scale ``gamma{i}`` (ones) and shift ``beta{i}`` (zeros).
    reg : float, default 0.0
        L2 strength: the loss gains ``0.5 * reg * sum(W**2)`` over the weights.
    weight_scale : float, default 1e-2
        Standard deviation of the weights when ``init="normal"``.
    dtype : float32 or float64, default float32
    init : {"normal", "he"}, default "normal"
        "he" draws each weight with std ``sqrt(2 / fan_in)``. Biases start at zero.
    seed : int, optional
        Seeds the initialization and fixes the dropout masks, as CS231n's ``seed`` does:
        hidden layer ``l`` drops units with the mask seed ``layer_seed(seed, l)``
        (:func:`convnet.dropout.layer_seed`), the same mask at every call of the same
        batch size, so :meth:`loss` is a deterministic function of the parameters and a
        numerical gradient check of one model works. Without a seed every training call
        draws fresh masks.
    dropout : float, optional
        The keep probability under this class's former name (older saved models and
        callers use it); give it or ``dropout_keep_ratio``, not both.
    fresh_masks : bool, default False
        With a seed, draw fresh masks at every training call instead, from a generator
        seeded by ``seed`` (reproducible; the Solver's checkpoints save its state): for
        training a seeded model with dropout (``convnet train`` sets it).

    Attributes
    ----------
    params : dict
        ``W1``, ``b1``, ..., ``WL``, ``bL``; ``Wi`` is (fan_in, fan_out), ``bi`` (fan_out,);
        with a normalization also ``gamma1``, ``beta1``, ..., ``gamma{L-1}``,
        ``beta{L-1}``, each (fan_out,).
    bn_params : list of dict
        One per hidden layer with a normalization (else empty): ``'mode'`` and, for batch
        norm, ``'running_mean'`` and ``'running_var'`` (zeros and ones at first), updated by
        every training call and saved with the model (see :meth:`buffers`).

    Notes
    -----
    Batch norm's running variance is the unbiased batch variance (PyTorch's convention;
    see :mod:`convnet.normalization`).
    """

    NORMALIZATIONS = (None, "batchnorm", "layernorm")

    def __init__(
        self,
        hidden_dims: Sequence[int],
        input_dim: int = 3 * 32 * 32,
        num_classes: int = 10,
        dropout_keep_ratio: float | None = None,
        normalization: str | None = None,
        reg: float = 0.0,
        weight_scale: float = 1e-2,
        dtype: Any = np.float32,
        init: str = "normal",
        seed: int | None = None,
        *,
        dropout: float | None = None,
        fresh_masks: bool = False,
    ) -> None:
        if isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Sequence):
            raise TypeError(f"hidden_dims must be a sequence of ints, got {hidden_dims!r}")
        self.hidden_dims = [_positive_int(d, "hidden_dims", 1) for d in hidden_dims]
        self.input_dim = _positive_int(input_dim, "input_dim", 1)
        self.num_classes = _positive_int(num_classes, "num_classes", 1)
        self.dropout_keep_ratio = _check_keep_ratio(dropout_keep_ratio, dropout)
        if normalization not in self.NORMALIZATIONS:
            raise ValueError(
                f"normalization must be None, 'batchnorm' or 'layernorm', got {normalization!r}"
            )
        self.normalization = normalization
        self.reg = _check_real(reg, "reg", low=0, low_inclusive=True)
        self.weight_scale = _check_real(weight_scale, "weight_scale", low=0, low_inclusive=False)
        self.dtype = _check_dtype(dtype)
        self.init = _check_init(init)
        self.seed = _check_seed(seed)
        if not isinstance(fresh_masks, (bool, np.bool_)):
            raise TypeError(f"fresh_masks must be True or False, got {fresh_masks!r}")
        self.fresh_masks = bool(fresh_masks)
        self.num_layers = len(self.hidden_dims) + 1

        init_seed, dropout_seed = np.random.SeedSequence(self.seed).spawn(2)
        rng = np.random.default_rng(init_seed)
        self._dropout_rng = np.random.default_rng(dropout_seed)
        widths = [self.input_dim, *self.hidden_dims, self.num_classes]
        self.params = {}
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(widths), start=1):
            self.params[f"W{layer}"] = self._draw_weight(rng, (fan_in, fan_out), fan_in)
            self.params[f"b{layer}"] = np.zeros(fan_out, dtype=self.dtype)
        self.bn_params: list[dict[str, Any]] = []
        if self.normalization is not None:
            for layer, width in enumerate(self.hidden_dims, start=1):
                self.params[f"gamma{layer}"] = np.ones(width, dtype=self.dtype)
                self.params[f"beta{layer}"] = np.zeros(width, dtype=self.dtype)
                bn_param: dict[str, Any] = {"mode": "train"}
                if self.normalization == "batchnorm":
                    bn_param["running_mean"] = np.zeros(width, dtype=self.dtype)
                    bn_param["running_var"] = np.ones(width, dtype=self.dtype)
                self.bn_params.append(bn_param)

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model, as JSON-compatible values."""
        return {
            "hidden_dims": list(self.hidden_dims),
            "input_dim": self.input_dim,
            "num_classes": self.num_classes,
            "dropout_keep_ratio": self.dropout_keep_ratio,
            "normalization": self.normalization,
            "reg": self.reg,
            "weight_scale": self.weight_scale,
            "dtype": self.dtype.name,
            "init": self.init,
            "seed": self.seed,
            "fresh_masks": self.fresh_masks,
        }

    def _buffer_slots(self) -> dict[str, tuple[dict[str, Any], str]]:
        return {
            f"{key}{layer}": (bn_param, key)
            for layer, bn_param in enumerate(self.bn_params, start=1)
            for key in ("running_mean", "running_var")
            if key in bn_param
        }

    def _as_rows(self, X: Any) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim >= 2 and math.prod(X.shape[1:]) == self.input_dim:
            X = X.reshape(X.shape[0], self.input_dim)
        return self._as_input(X, (self.input_dim,))

    def _hidden_forward(self, hidden: np.ndarray, layer: int) -> tuple[np.ndarray, Any]:
        p = self.params
        w, b = p[f"W{layer}"], p[f"b{layer}"]
        if self.normalization is None:
            return affine_relu_forward(hidden, w, b)
        forward = (
            affine_bn_relu_forward if self.normalization == "batchnorm" else affine_ln_relu_forward
        )
        gamma, beta = p[f"gamma{layer}"], p[f"beta{layer}"]
        return forward(hidden, w, b, gamma, beta, self.bn_params[layer - 1])

    def _hidden_backward(
        self, dhidden: np.ndarray, cache: Any, layer: int, grads: dict[str, np.ndarray]
    ) -> np.ndarray:
        if self.normalization is None:
            dhidden, grads[f"W{layer}"], grads[f"b{layer}"] = affine_relu_backward(dhidden, cache)
            return dhidden
        backward = (
            affine_bn_relu_backward
            if self.normalization == "batchnorm"
            else affine_ln_relu_backward
        )
        dhidden, *layer_grads = backward(dhidden, cache)
        for name, grad in zip(("W", "b", "gamma", "beta"), layer_grads, strict=True):
            grads[f"{name}{layer}"] = grad
        return dhidden

    def loss(
        self, X: np.ndarray, y: np.ndarray | None = None
    ) -> np.ndarray | tuple[float, dict[str, np.ndarray]]:
        """Class scores (test mode), or the loss and gradients (train mode).

        Parameters
        ----------
        X : ndarray, shape (N, input_dim) or (N, d_1, ..., d_k) with d_1 * ... * d_k = input_dim
            Float, or integer (converted explicitly to the model's dtype).
        y : ndarray of int, shape (N,), optional
            Labels in ``[0, num_classes)``. Giving them selects train mode: batch norm uses
            (and updates the running statistics with) the batch's statistics, dropout
            drops units (the same ones at every call of a seeded model; see ``seed``).

        Returns
        -------
        scores : ndarray, shape (N, num_classes)
            If ``y`` is None (running statistics, no dropout).
        loss : float
            Otherwise, with
        grads : dict
            Keyed like ``params``; each gradient has its parameter's shape and dtype.
        """
        hidden = self._as_rows(X)
        training = y is not None
        if training:
            y = check_labels(y, hidden.shape[0], self.num_classes)
        for bn_param in self.bn_params:
            bn_param["mode"] = "train" if training else "test"
        use_dropout = training and self.dropout_keep_ratio < 1
        fixed_masks = self.seed is not None and not self.fresh_masks
        caches = []
        for layer in range(1, self.num_layers):
            hidden, cache = self._hidden_forward(hidden, layer)
            dropout_cache = None
            if use_dropout:
                dropout_param = {
                    "mode": "train",
                    "p": self.dropout_keep_ratio,
                    "seed": layer_seed(self.seed, layer) if fixed_masks else self._dropout_rng,
                }
                hidden, dropout_cache = dropout_forward(hidden, dropout_param)
            caches.append((cache, dropout_cache))
        last = self.num_layers
        scores, scores_cache = affine_forward(
            hidden, self.params[f"W{last}"], self.params[f"b{last}"]
        )
        if not training:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads: dict[str, np.ndarray] = {}
        dhidden, grads[f"W{last}"], grads[f"b{last}"] = affine_backward(dscores, scores_cache)
        for layer in range(self.num_layers - 1, 0, -1):
            cache, dropout_cache = caches[layer - 1]
            if dropout_cache is not None:
                dhidden = dropout_backward(dhidden, dropout_cache)
            dhidden = self._hidden_backward(dhidden, cache, layer, grads)
        return self._add_regularization(loss, grads), grads


# save_model and load_model moved to convnet.serialization, which imports this module; this
# keeps ``from convnet.models import save_model, load_model`` working without an import cycle.
_SERIALIZATION = ("save_model", "load_model", "ARCHITECTURES", "FORMAT_VERSION")


def __getattr__(name: str) -> Any:
    if name in _SERIALIZATION:
        from convnet import serialization

        return getattr(serialization, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
