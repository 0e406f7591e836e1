"""Classifiers built from the layers: ThreeLayerConvNet, FullyConnectedNet, resnet, vgg.

Every model is a :class:`convnet.nn.Classifier`: it holds its weights in ``model.params``
(a write-through mapping of arrays in the model's dtype), computes ``model.loss(X)`` (class
scores) or ``model.loss(X, y)`` (softmax loss and the gradients, keyed like ``params``),
predicts labels with ``model.predict(X)`` and describes itself with ``model.config()``: the
keyword arguments that rebuild it, as JSON-compatible values. State that gradients do not
train (batch norm's running statistics) is in ``model.buffers()``. ``save_model`` and
``load_model`` store a model (configuration, parameters and buffers) in one ``.npz`` file;
they live in :mod:`convnet.serialization` and are importable from here too.

:class:`ThreeLayerConvNet` and :class:`FullyConnectedNet` are CS231n's models, with the
course's arguments, parameter names (``W1``, ``b1``, ``gamma1``, ...) and attributes
(``bn_params``, ``dropout_param``), built from :mod:`convnet.nn` layers (``model.net``).
The presets :func:`resnet` (a small residual net) and :func:`vgg` (VGG-style, with batch
norm and dropout) come from :mod:`convnet.presets`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from convnet._validation import _positive_int, check_real, image_shape, output_size
from convnet.nn import (
    BatchNorm1d,
    Classifier,
    Conv2d,
    Dropout,
    Flatten,
    LayerNorm,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Sequential,
)
from convnet.presets import resnet as resnet
from convnet.presets import vgg as vgg


def _check_keep_ratio(keep_ratio: Any, alias: Any) -> float:
    """``dropout_keep_ratio`` or its former name ``dropout`` (not both), in (0, 1]."""
    if keep_ratio is not None and alias is not None:
        raise ValueError(
            "give dropout_keep_ratio or its former name dropout, not both "
            f"(got {keep_ratio!r} and {alias!r})"
        )
    value = next((v for v in (keep_ratio, alias) if v is not None), 1.0)
    value = check_real(value, "dropout_keep_ratio (keep probability)", low=0, low_inclusive=False)
    if value > 1:
        raise ValueError(
            f"dropout_keep_ratio is the keep probability and must lie in (0, 1], got {value}"
        )
    return value


class ThreeLayerConvNet(Classifier):
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
        Seed of the initialization: W1, W2, W3 are drawn in turn from
        ``np.random.default_rng(seed)``.

    Attributes
    ----------
    params : ParamDict
        ``W1`` (F, C, k, k), ``b1`` (F,), ``W2`` (F * Hp * Wp, hidden_dim), ``b2``
        (hidden_dim,), ``W3`` (hidden_dim, num_classes), ``b3`` (num_classes,), where
        Hp, Wp is the pooled size.
    net : convnet.nn.Sequential
        ``conv``, ``pool``, ``relu``, ``flatten``, ``hidden``, ``hidden_relu``, ``scores``:
        the pool runs before the ReLU, which gives the same values (ReLU commutes with a
        maximum) for a quarter of the ReLU's work.
    """

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
        channels, height, width = image_shape(input_dim)
        self.num_filters = _positive_int(num_filters, "num_filters", 1)
        self.filter_size = _positive_int(filter_size, "filter_size", 1)
        self.hidden_dim = _positive_int(hidden_dim, "hidden_dim", 1)
        num_classes = _positive_int(num_classes, "num_classes", 1)
        pad = (self.filter_size - 1) // 2
        conv_h = output_size(height, self.filter_size, 1, pad)
        conv_w = output_size(width, self.filter_size, 1, pad)
        if conv_h < 2 or conv_w < 2:
            raise ValueError(
                f"input {height}x{width} is too small for a {self.filter_size}x"
                f"{self.filter_size} convolution followed by a 2x2 pool"
            )
        pooled = self.num_filters * output_size(conv_h, 2, 2, 0) * output_size(conv_w, 2, 2, 0)
        net = Sequential(
            Conv2d(channels, self.num_filters, self.filter_size, pad=pad),
            MaxPool2d(2),
            ReLU(),
            Flatten(),
            Linear(pooled, self.hidden_dim),
            ReLU(),
            Linear(self.hidden_dim, num_classes),
            names=["conv", "pool", "relu", "flatten", "hidden", "hidden_relu", "scores"],
        )
        names = {
            f"{layer}.{local}": f"{public}{index}"
            for index, layer in enumerate(("conv", "hidden", "scores"), start=1)
            for local, public in (("w", "W"), ("b", "b"))
        }
        super().__init__(
            net,
            (channels, height, width),
            reg=reg,
            dtype=dtype,
            init=init,
            weight_scale=weight_scale,
            seed=seed,
            names=names,
        )

    def _initial_generator(self, init_seed: np.random.SeedSequence) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model, as JSON-compatible values."""
        return {
            "input_dim": list(self.input_dim),
            "num_filters": self.num_filters,
            "filter_size": self.filter_size,
            "hidden_dim": self.hidden_dim,
            "num_classes": self.num_classes,
            **self._training_config(),
        }


class FullyConnectedNet(Classifier):
    """{affine - [norm] - relu - [dropout]} x (L - 1) - affine - softmax, for any L >= 1.

    CS231n's fully connected net: the same arguments (in the same order), parameter names,
    ``bn_params`` and ``dropout_param``. Giving ``y`` to :meth:`loss` selects train mode
    (batch statistics, dropout), leaving it out test mode (running statistics, no dropout).

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
    params : ParamDict
        ``W1``, ``b1``, ..., ``WL``, ``bL``; ``Wi`` is (fan_in, fan_out), ``bi`` (fan_out,);
        with a normalization also ``gamma1``, ``beta1``, ..., ``gamma{L-1}``,
        ``beta{L-1}``, each (fan_out,).
    bn_params : list of dict
        One per hidden layer with a normalization (else empty): the dict its layer computes
        with (``model.net["norm{i}"].norm_param``), so it shows the current state:
        ``'mode'`` (set by every :meth:`loss` call), ``'eps'`` and, for batch norm,
        ``'momentum'``, ``'running_mean'`` and ``'running_var'`` (zeros and ones at first),
        updated by every training call and saved with the model (``running_mean{i}``,
        ``running_var{i}`` in :meth:`buffers`).
    use_dropout : bool
        ``dropout_keep_ratio < 1``.
    dropout_param : dict
        CS231n's description of the dropout layers (empty without dropout): ``'mode'``
        (set by every :meth:`loss` call), ``'p'`` (the keep probability) and, for a seeded
        model, ``'seed'``. The layers themselves are ``model.net["drop{i}"]``.
    net : convnet.nn.Sequential
        ``fc{i}``, ``norm{i}``, ``relu{i}``, ``drop{i}`` for each hidden layer, then
        ``fc{L}``.

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
        features = _positive_int(input_dim, "input_dim", 1)
        num_classes = _positive_int(num_classes, "num_classes", 1)
        self.dropout_keep_ratio = _check_keep_ratio(dropout_keep_ratio, dropout)
        if normalization not in self.NORMALIZATIONS:
            raise ValueError(
                f"normalization must be None, 'batchnorm' or 'layernorm', got {normalization!r}"
            )
        self.normalization = normalization
        self.num_layers = len(self.hidden_dims) + 1
        self.use_dropout = self.dropout_keep_ratio < 1

        modules: list[Module] = []
        names: list[str] = []
        public: dict[str, str] = {}
        widths = [features, *self.hidden_dims, num_classes]
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(widths), start=1):
            modules.append(Linear(fan_in, fan_out))
            names.append(f"fc{layer}")
            public.update({f"fc{layer}.w": f"W{layer}", f"fc{layer}.b": f"b{layer}"})
            if layer == self.num_layers:
                break
            if normalization is not None:
                norm = BatchNorm1d if normalization == "batchnorm" else LayerNorm
                modules.append(norm(fan_out))
                names.append(f"norm{layer}")
                for name in ("gamma", "beta", *norm.BUFFERS):
                    public[f"norm{layer}.{name}"] = f"{name}{layer}"
            modules.append(ReLU())
            names.append(f"relu{layer}")
            if self.use_dropout:
                modules.append(Dropout(self.dropout_keep_ratio))
                names.append(f"drop{layer}")
        super().__init__(
            Sequential(*modules, names=names),
            (features,),
            reg=reg,
            dtype=dtype,
            init=init,
            weight_scale=weight_scale,
            seed=seed,
            fresh_masks=fresh_masks,
            names=public,
        )
        self.input_dim = features
        self.bn_params: list[dict[str, Any]] = []
        if normalization is not None:
            self.bn_params = [
                self.net[f"norm{layer}"].norm_param for layer in range(1, self.num_layers)
            ]
        self.dropout_param: dict[str, Any] = {}
        if self.use_dropout:
            self.dropout_param = {"mode": "train", "p": self.dropout_keep_ratio}
            if self.seed is not None:
                self.dropout_param["seed"] = self.seed

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model, as JSON-compatible values."""
        return {
            "hidden_dims": list(self.hidden_dims),
            "input_dim": self.input_dim,
            "num_classes": self.num_classes,
            "dropout_keep_ratio": self.dropout_keep_ratio,
            "normalization": self.normalization,
            **self._training_config(),
            "fresh_masks": self.fresh_masks,
        }

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
        if self.use_dropout:
            self.dropout_param["mode"] = "test" if y is None else "train"
        return super().loss(X, y)


# save_model and load_model moved to convnet.serialization, which imports this module; this
# keeps ``from convnet.models import save_model, load_model`` working without an import cycle.
_SERIALIZATION = ("save_model", "load_model", "ARCHITECTURES", "FORMAT_VERSION")


def __getattr__(name: str) -> Any:
    if name in _SERIALIZATION:
        from convnet import serialization

        return getattr(serialization, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
