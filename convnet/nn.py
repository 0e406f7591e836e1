"""Networks composed from layers: layer objects, containers and a softmax classifier.

A layer object runs one layer function of :mod:`convnet.layers` / :mod:`convnet.fast_layers`
and keeps what its backward pass needs::

    out = layer.forward(x)            # (N, ...) -> (N, ...)
    dx = layer.backward(dout)         # fills layer.grads; returns dx (None if not asked)

Containers (:class:`Sequential`, :class:`Residual`) nest freely. Every module shows the
parameters of its whole subtree as one flat ``params`` mapping with unique dotted names
(``"stem.conv.w"``, ``"stage1.0.residual.body.bn1.gamma"``), and after a backward pass a
``grads`` dict with the same names. ``params`` writes through: assigning
``net.params[name] = value`` replaces that layer's array, which is how the
:class:`convnet.solver.Solver` and the update rules of :mod:`convnet.optim` train a
:class:`Classifier` unchanged.

State that gradients do not train, batch norm's running statistics (``running_mean``,
``running_var``), is in ``buffers()``, a mapping like ``params`` with the same dotted
names (``"stem.bn.running_mean"``) that writes through in the same way. It is not in
``params``, so update rules never see it (PyTorch's and CS231n's convention); the Solver's
best-parameter snapshot, its checkpoints and :func:`convnet.serialization.save_model` keep
it beside the parameters.

Modules start in training mode; :meth:`Module.eval` selects test mode (dropout off, batch
norm on running statistics), :meth:`Module.train` switches back. :meth:`Classifier.loss`
selects the mode itself: training with labels, test without.

Initialization (:meth:`Module.initialize`): "he" draws each weight from a normal
distribution with std ``sqrt(2 / fan_in)`` (fan_in = in_channels / groups * kh * kw for a
convolution, in_features for a linear layer); "normal" uses std ``weight_scale``, as
:class:`convnet.models.ThreeLayerConvNet` does. Biases and normalization shifts start at 0,
normalization scales at 1, running means at 0 and running variances at 1. Every layer
declares the shapes of its arrays (:meth:`Layer.param_shapes`, :meth:`Layer.buffer_shapes`)
before drawing them, so inside :func:`without_arrays` a network or a classifier can be
built from a configuration and its sizes checked before anything is allocated (what
:func:`convnet.serialization.load_model` does with an untrusted file).

:class:`Classifier` is the one model class: a softmax classifier around a network, with
CS231n's ``loss(X, y=None)``. :class:`convnet.models.ThreeLayerConvNet` and
:class:`convnet.models.FullyConnectedNet` are Classifiers whose ``names`` give their
parameters the course's names (``W1``, ``b1``, ``gamma1``, ...).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import re
import threading
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar

import numpy as np

from convnet import _backend
from convnet._layout import contiguous, is_channels_last, to_channels_last
from convnet._parallel import single_threaded_blas
from convnet._validation import (
    _positive_int,
    check_allocation,
    check_dtype,
    check_float_array,
    check_labels,
    check_memory_format,
    check_real,
    check_seed,
    conv_algorithm,
    int_pair,
    output_size,
)
from convnet.dropout import layer_seed
from convnet.fast_activation import add_fast, relu_backward_fast, relu_forward_fast
from convnet.fast_layers import (
    affine_backward_fast,
    affine_forward_fast,
    avg_pool_backward_fast,
    avg_pool_forward_fast,
    conv_backward_fast,
    conv_forward_fast,
    conv_transpose_backward_fast,
    conv_transpose_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from convnet.fast_normalization import (
    spatial_batchnorm_backward_fast,
    spatial_batchnorm_forward_fast,
    spatial_batchnorm_relu_backward_fast,
    spatial_batchnorm_relu_forward_fast,
)
from convnet.layers import (
    batchnorm_backward,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    layernorm_backward,
    layernorm_forward,
    softmax_loss,
)

Shape = tuple[int, ...]
_APPLIED = "applied by the layer beside it"
# Where each parameter or buffer lives: dotted name -> (its layer, its name in the layer).
Index = dict[str, tuple["Layer", str]]
INITS = ("he", "normal")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def check_init(init: Any) -> str:
    """One of ``INITS``, or a ``ValueError``."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return init


_construction = threading.local()


@contextlib.contextmanager
def without_arrays() -> Iterator[None]:
    """Build modules and classifiers in this block (this thread) without drawing their
    parameters and buffers: their structure, names and :meth:`Module.array_shapes` are
    known, their arrays are not there, and they cannot compute. For checking the sizes a
    configuration asks for before allocating them."""
    previous = getattr(_construction, "without_arrays", False)
    _construction.without_arrays = True
    try:
        yield
    finally:
        _construction.without_arrays = previous


def _drawing_arrays() -> bool:
    """Whether construction draws arrays here (not inside :func:`without_arrays`)."""
    return not getattr(_construction, "without_arrays", False)


def _compact(pair: tuple[int, int]) -> int | list[int]:
    """An (h, w) pair as JSON: one int when both are equal."""
    return pair[0] if pair[0] == pair[1] else list(pair)


def _check_shape(shape: Any, ndim: int, layout: str, layer: Module) -> Shape:
    shape = tuple(shape)
    if len(shape) != ndim:
        raise ValueError(
            f"{type(layer).__name__} takes samples of shape {layout}, got {shape} "
            f"({layer.describe()})"
        )
    return shape


class ParamDict(MutableMapping):
    """The parameters (or buffers) of a module's subtree, by name; assignments write through.

    Keys are fixed by the network's structure: assigning an unknown name raises
    ``KeyError``, and deleting is refused. An assigned array must have the array's shape
    and is cast to its dtype. Reading gives the layer's own array, so changing it in place
    (as a numerical gradient check does) changes what the next forward pass uses.

    Parameters
    ----------
    index : dict
        Name -> (layer, the array's name in the layer).
    kind : {"parameter", "buffer"}
        Parameters live in ``layer._params``, buffers in ``layer._buffer_holder()``.
    """

    def __init__(self, index: Index, kind: str = "parameter") -> None:
        self._index = index
        self._kind = kind

    def _holder(self, layer: Layer) -> dict[str, Any]:
        return layer._params if self._kind == "parameter" else layer._buffer_holder()

    def __getitem__(self, name: str) -> np.ndarray:
        layer, local = self._index[name]
        return self._holder(layer)[local]

    def __setitem__(self, name: str, value: Any) -> None:
        kind = self._kind
        if name not in self._index:
            raise KeyError(f"no {kind} named {name!r}; the names are {list(self._index)}")
        layer, local = self._index[name]
        holder = self._holder(layer)
        current = holder[local]
        value = np.asarray(value)
        if value.shape != current.shape:
            raise ValueError(
                f"{kind} {name} has shape {current.shape}, got an array of shape {value.shape}"
            )
        if value.dtype.kind not in "iuf":
            raise TypeError(f"{kind} {name} must hold real numbers, got dtype {value.dtype}")
        holder[local] = value.astype(current.dtype, copy=False)

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"{self._kind}s belong to the network's structure and cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name!r}: {self[name].shape}" for name in self._index)
        return f"ParamDict({{{shapes}}})"


def _renamed(index: Index, names: Mapping[str, str]) -> Index:
    """``index`` with every name that ``names`` maps given its new name, in the same order."""
    return {names.get(name, name): entry for name, entry in index.items()}


class Module:
    """What every layer and container offers: forward, backward, params, grads, modes."""

    training: bool

    def __init__(self) -> None:
        self.training = True
        self._in_container = False
        self._param_view: ParamDict | None = None
        self._buffer_view: ParamDict | None = None

    # -- structure
    def _index(self) -> Index:
        """Every parameter of the subtree: dotted name -> (layer, its local name)."""
        return self._children_index("_index")

    def _buffer_index(self) -> Index:
        """Every buffer of the subtree: dotted name -> (layer, its local name)."""
        return self._children_index("_buffer_index")

    def _children_index(self, method: str) -> Index:
        return {
            f"{name}.{inner}": entry
            for name, child in self.children()
            for inner, entry in getattr(child, method)().items()
        }

    def children(self) -> list[tuple[str, Module]]:
        """The named modules directly inside this one (none for a layer)."""
        return []

    def array_shapes(self) -> dict[str, Shape]:
        """The shape of every parameter and buffer of the subtree, by dotted name: what
        :meth:`initialize` draws, known without drawing it."""
        return {
            **{name: layer.param_shapes()[local] for name, (layer, local) in self._index().items()},
            **{
                name: layer.buffer_shapes()[local]
                for name, (layer, local) in self._buffer_index().items()
            },
        }

    def layers(self) -> Iterator[Layer]:
        """Every layer of the subtree, in forward order."""
        for _, child in self.children():
            yield from child.layers()

    @property
    def params(self) -> ParamDict:
        """Flat, write-through mapping of every parameter of the subtree."""
        if self._param_view is None:
            self._param_view = ParamDict(self._index())
        return self._param_view

    def buffers(self) -> ParamDict:
        """Flat, write-through mapping of every buffer of the subtree (batch norm's
        running statistics): state that gradients do not train."""
        if self._buffer_view is None:
            self._buffer_view = ParamDict(self._buffer_index(), "buffer")
        return self._buffer_view

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The gradients of the last backward pass, keyed like ``params`` (a new dict)."""
        grads = {}
        for name, (layer, local) in self._index().items():
            if local not in layer._grads:
                raise RuntimeError(f"no gradient for {name} yet: run forward and backward first")
            grads[name] = layer._grads[local]
        return grads

    def regularized(self) -> list[str]:
        """Names of the parameters that L2 regularization applies to (the weights)."""
        return [
            name for name, (layer, local) in self._index().items() if local in layer.REGULARIZED
        ]

    def _adopt(self, child: Any, name: str) -> Module:
        if not isinstance(child, Module):
            raise TypeError(
                f"{type(self).__name__} takes convnet.nn modules, got {type(child).__name__} "
                f"for {name!r}"
            )
        if child._in_container:
            raise ValueError(
                f"this {type(child).__name__} already belongs to a container: a module can be "
                "used once (build a new one to repeat a layer)"
            )
        child._in_container = True
        return child

    # -- modes
    def train(self, mode: bool = True) -> Module:
        """Training mode (``mode=True``) or test mode, for the whole subtree; returns self."""
        self.training = bool(mode)
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Test mode for the whole subtree (dropout off, batch norm on running statistics)."""
        return self.train(False)

    # -- computation
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Output for a batch ``x`` (N, ...); keeps what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        """Gradients of the last :meth:`forward`: fills ``grads``, returns dx.

        ``compute_dx=False`` skips the input gradient where the layers can (the first
        convolution of a network) and returns None.
        """
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        """Shape of one output sample for one input sample (no batch axis); raises
        ``ValueError`` when the input does not fit the layer."""
        raise NotImplementedError

    # -- initialization and description
    def initialize(
        self,
        rng: np.random.Generator,
        init: str = "he",
        weight_scale: float = 1e-2,
        dtype: Any = np.float32,
    ) -> Module:
        """Draw fresh parameters for the whole subtree and reset its buffers (see the module
        docstring); returns self."""
        check_init(init)
        dtype = check_dtype(dtype)
        for layer in self.layers():
            layer._params = layer._initial_params(rng, init, float(weight_scale), dtype)
            layer._buffer_holder().update(layer._initial_buffers(dtype))
            layer._grads = {}
        return self

    def config(self) -> dict[str, Any]:
        """JSON-compatible description that :func:`from_config` rebuilds the module from."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line: the type and its arguments."""
        arguments = ", ".join(
            f"{key}={value}" for key, value in self.config().items() if key != "type"
        )
        return f"{type(self).__name__}({arguments})"

    def __repr__(self) -> str:
        return self.describe()


class Layer(Module):
    """A module that runs one layer function; holds its own parameters and buffers (maybe
    none)."""

    REGULARIZED: ClassVar[tuple[str, ...]] = ()
    BUFFERS: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self._params: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}
        self._cache: Any = None

    def _index(self) -> Index:
        return {local: (self, local) for local in self.param_shapes()}

    def _buffer_index(self) -> Index:
        return {local: (self, local) for local in self.BUFFERS}

    def param_shapes(self) -> dict[str, Shape]:
        """The shape of each of this layer's parameters, by local name (none here)."""
        return {}

    def buffer_shapes(self) -> dict[str, Shape]:
        """The shape of each of this layer's ``BUFFERS``, by local name (none here)."""
        return {}

    def _first_initialize(self) -> None:
        """Draw the parameters of a new layer (not inside :func:`without_arrays`)."""
        if _drawing_arrays():
            self.initialize(np.random.default_rng())

    def _buffer_holder(self) -> dict[str, Any]:
        """The dict that holds this layer's ``BUFFERS`` under their names (a new empty
        dict for a layer without buffers)."""
        return {}

    def layers(self) -> Iterator[Layer]:
        yield self

    def _initial_params(
        self, rng: np.random.Generator, init: str, weight_scale: float, dtype: np.dtype
    ) -> dict[str, np.ndarray]:
        return {}

    def _initial_buffers(self, dtype: np.dtype) -> dict[str, np.ndarray]:
        return {}

    def _cached(self) -> Any:
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward pass first")
        return self._cache


def _normal(
    rng: np.random.Generator,
    shape: Shape,
    fan_in: int,
    init: str,
    weight_scale: float,
    dtype: np.dtype,
) -> np.ndarray:
    std = math.sqrt(2.0 / fan_in) if init == "he" else weight_scale
    return (std * rng.standard_normal(shape)).astype(dtype)


class Conv2d(Layer):
    """2-D convolution: ``w`` (out_channels, in_channels // groups, kh, kw), ``b`` (out_channels,).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or pair (kh, kw)
    stride : int or pair, default 1
    pad : int or pair, default 0
        Zero padding on each side.
    dilation : int or pair, default 1
    groups : int, default 1
        Divides both channel counts; each group of in_channels // groups inputs feeds
        out_channels // groups outputs (groups = in_channels: depthwise).
    bias : bool, default True
        False leaves ``b`` out (e.g. before batch norm, whose shift replaces it).
    algorithm : {"auto", "im2col", "winograd"}, optional
        Forces this layer's algorithm (``conv_param['algorithm']``, see
        :func:`convnet.fast_layers.conv_algorithm_choice`); by default the process-wide
        choice of :func:`convnet.set_conv_algorithm`.

    Attributes
    ----------
    conv_param : dict
        What the layer function gets at every call.
    memory_format : {"contiguous", "channels_last"} or None
        The layout the layer asks its output to have (``conv_param['memory_format']``);
        None follows the input's. A :class:`Classifier` sets it on its convolutions (see
        its ``memory_format``).
    """

    REGULARIZED = ("w",)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        pad: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        algorithm: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels", 1)
        self.out_channels = _positive_int(out_channels, "out_channels", 1)
        self.kernel_size = int_pair(kernel_size, "kernel_size", 1)
        self.stride = int_pair(stride, "stride", 1)
        self.pad = int_pair(pad, "pad", 0)
        self.dilation = int_pair(dilation, "dilation", 1)
        self.groups = _positive_int(groups, "groups", 1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.bias = bool(bias)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} and "
                f"out_channels={self.out_channels}"
            )
        self.conv_param: dict[str, Any] = {"stride": self.stride, "pad": self.pad}
        if self.dilation != (1, 1):
            self.conv_param["dilation"] = self.dilation
        if self.groups != 1:
            self.conv_param["groups"] = self.groups
        self.algorithm = None if algorithm is None else conv_algorithm({"algorithm": algorithm})
        if self.algorithm is not None:
            self.conv_param["algorithm"] = self.algorithm
        self._first_initialize()

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {"w": (self.out_channels, self.in_channels // self.groups, *self.kernel_size)}
        if self.bias:
            shapes["b"] = (self.out_channels,)
        return shapes

    def _initial_params(
        self, rng: np.random.Generator, init: str, weight_scale: float, dtype: np.dtype
    ) -> dict[str, np.ndarray]:
        """``w`` drawn by :func:`_normal` (fan-in: in_channels // groups * kh * kw, for
        the transposed convolution too), the bias zeros."""
        fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
        return {
            name: _normal(rng, shape, fan_in, init, weight_scale, dtype)
            if name == "w"
            else np.zeros(shape, dtype=dtype)
            for name, shape in self.param_shapes().items()
        }

    def forward(self, x: np.ndarray) -> np.ndarray:
        w = self._params["w"]
        b = self._params["b"] if self.bias else np.zeros(self.out_channels, dtype=w.dtype)
        out, self._cache = conv_forward_fast(x, w, b, self.conv_param)
        return out

    @property
    def memory_format(self) -> str | None:
        return self.conv_param.get("memory_format")

    @memory_format.setter
    def memory_format(self, value: str | None) -> None:
        if value is None:
            self.conv_param.pop("memory_format", None)
        else:
            self.conv_param["memory_format"] = check_memory_format(value, "memory_format")

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        dx, dw, db = conv_backward_fast(
            dout, self._cached(), compute_dx=compute_dx, compute_db=self.bias
        )
        self._grads = {"w": dw, "b": db} if self.bias else {"w": dw}
        return dx

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        channels, height, width = _check_shape(input_shape, 3, "(C, H, W)", self)
        if channels != self.in_channels:
            raise ValueError(
                f"{self.describe()} expects {self.in_channels} input channels, got {channels}"
            )
        sizes = []
        for size, kernel, stride, pad, dilation in zip(
            (height, width), self.kernel_size, self.stride, self.pad, self.dilation, strict=True
        ):
            span = dilation * (kernel - 1) + 1
            if span > size + 2 * pad:
                raise ValueError(
                    f"{self.describe()}: the filter spans {span} pixels, more than the padded "
                    f"input {size + 2 * pad} (input {height}x{width})"
                )
            sizes.append(output_size(size, span, stride, pad))
        return (self.out_channels, *sizes)

    def config(self) -> dict[str, Any]:
        return {
            "type": "Conv2d",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            "pad": _compact(self.pad),
            "dilation": _compact(self.dilation),
            "groups": self.groups,
            "bias": self.bias,
            **({} if self.algorithm is None else {"algorithm": self.algorithm}),
        }


class ConvTranspose2d(Conv2d):
    """Transposed 2-D convolution (the input gradient of a convolution), as PyTorch's
    ``ConvTranspose2d``: ``w`` (in_channels, out_channels // groups, kh, kw), ``b``
    (out_channels,); output size ``(H - 1) * stride - 2 * pad + dilation * (k - 1) +
    output_pad + 1`` per axis.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, pad, dilation, groups, bias
        As for :class:`Conv2d` (``pad`` is removed from the output's border).
    output_pad : int or pair, default 0
        Added to one side of the output; each smaller than the stride or the dilation.

    He initialization draws ``w`` with fan_in = in_channels // groups * kh * kw.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        pad: int | Sequence[int] = 0,
        output_pad: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        self.output_pad = int_pair(output_pad, "output_pad", 0)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, pad, dilation, groups, bias
        )
        for axis in (0, 1):
            if self.output_pad[axis] >= max(self.stride[axis], self.dilation[axis]):
                raise ValueError(
                    f"output_pad {self.output_pad} must be smaller than the stride "
                    f"{self.stride} or the dilation {self.dilation} on each axis"
                )
        if self.output_pad != (0, 0):
            self.conv_param["output_pad"] = self.output_pad

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {"w": (self.in_channels, self.out_channels // self.groups, *self.kernel_size)}
        if self.bias:
            shapes["b"] = (self.out_channels,)
        return shapes

    def forward(self, x: np.ndarray) -> np.ndarray:
        w = self._params["w"]
        b = self._params["b"] if self.bias else np.zeros(self.out_channels, dtype=w.dtype)
        out, self._cache = conv_transpose_forward_fast(x, w, b, self.conv_param)
        return out

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        dx, dw, db = conv_transpose_backward_fast(dout, self._cached())
        self._grads = {"w": dw, "b": db} if self.bias else {"w": dw}
        return dx if compute_dx else None

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        channels, height, width = _check_shape(input_shape, 3, "(C, H, W)", self)
        if channels != self.in_channels:
            raise ValueError(
                f"{self.describe()} expects {self.in_channels} input channels, got {channels}"
            )
        sizes = tuple(
            (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + extra + 1
            for size, kernel, stride, pad, dilation, extra in zip(
                (height, width),
                self.kernel_size,
                self.stride,
                self.pad,
                self.dilation,
                self.output_pad,
                strict=True,
            )
        )
        if min(sizes) < 1:
            raise ValueError(
                f"{self.describe()}: the output of input {height}x{width} would be "
                f"{sizes[0]}x{sizes[1]}"
            )
        return (self.out_channels, *sizes)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "type": "ConvTranspose2d",
            "output_pad": _compact(self.output_pad),
        }


def _side(value: Any) -> int:
    """A padding side: any integer within 2**31 - 1 of zero (negative crops)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"pad must hold integers, got {value!r}")
    if abs(int(value)) > 2**31 - 1:
        raise ValueError(f"pad must lie within 2**31 - 1 of 0, got {value}")
    return int(value)


class Pad2d(Layer):
    """Constant padding of (N, C, H, W): ``pad`` rows and columns of ``value`` around
    every plane, as PyTorch's ``ConstantPad2d`` and ONNX's ``Pad``; a negative side crops.

    Parameters
    ----------
    pad : int, pair (h, w) or 4-tuple (top, left, bottom, right)
        ONNX's order for four; an int or a pair pads both sides alike. A negative side
        removes that many rows or columns (at least one of each must remain).
    value : float, default 0.0
        May be -inf (in front of a max pool) or any finite number.
    """

    def __init__(self, pad: int | Sequence[int], value: float = 0.0) -> None:
        super().__init__()
        if isinstance(pad, (tuple, list)) and len(pad) in (2, 4):
            sides = tuple(_side(p) for p in pad)
        elif isinstance(pad, (tuple, list)):
            raise ValueError(f"pad must be an int, a pair or four ints, got {pad!r}")
        else:
            sides = (_side(pad),)
        self.pad = (sides * 4)[:4] if len(sides) == 1 else (sides * 2)[:4]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"value must be a real number, got {value!r}")
        if math.isnan(value) or value == math.inf:
            raise ValueError(f"value must be a number or -inf, got {value}")
        self.value = float(value)

    def _kept(self, height: int, width: int) -> tuple[slice, slice]:
        """The rows and columns of the input that remain after cropping."""
        top, left, bottom, right = self.pad
        return (
            slice(max(-top, 0), height - max(-bottom, 0)),
            slice(max(-left, 0), width - max(-right, 0)),
        )

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_float_array(x, "x")
        out_shape = (x.shape[0], *self.output_shape(x.shape[1:]))
        check_allocation(out_shape, x.dtype, "the padded output")
        top, left, bottom, right = self.pad
        self._cache = x.shape
        rows, cols = self._kept(*x.shape[2:])
        widths = ((0, 0), (0, 0), (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0)))
        return np.pad(x[:, :, rows, cols], widths, constant_values=x.dtype.type(self.value))

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        shape = self._cached()
        expected = (*shape[:2], *self.output_shape(shape[1:])[1:])
        dout = check_float_array(dout, "dout")
        if dout.shape != expected:
            raise ValueError(f"dout has shape {dout.shape}, Pad2d produced {expected}")
        if not compute_dx:
            return None
        rows, cols = self._kept(*shape[2:])
        top, left = max(self.pad[0], 0), max(self.pad[1], 0)
        kept = dout[:, :, top : top + rows.stop - rows.start, left : left + cols.stop - cols.start]
        dx = np.zeros(shape, dtype=dout.dtype)
        dx[:, :, rows, cols] = kept
        return dx

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        channels, height, width = _check_shape(input_shape, 3, "(C, H, W)", self)
        rows, cols = self._kept(height, width)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            raise ValueError(f"{self.describe()} crops all of an input {height}x{width}")
        top, left, bottom, right = self.pad
        return (channels, height + top + bottom, width + left + right)

    def config(self) -> dict[str, Any]:
        return {"type": "Pad2d", "pad": list(self.pad), "value": self.value}


class Linear(Layer):
    """Fully connected layer ``x.reshape(N, in_features) @ w + b``.

    ``w`` is (in_features, out_features), ``b`` (out_features,).
    """

    REGULARIZED = ("w",)

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", 1)
        self.out_features = _positive_int(out_features, "out_features", 1)
        self._first_initialize()

    def param_shapes(self) -> dict[str, Shape]:
        return {"w": (self.in_features, self.out_features), "b": (self.out_features,)}

    def _initial_params(
        self, rng: np.random.Generator, init: str, weight_scale: float, dtype: np.dtype
    ) -> dict[str, np.ndarray]:
        shapes = self.param_shapes()
        return {
            "w": _normal(rng, shapes["w"], self.in_features, init, weight_scale, dtype),
            "b": np.zeros(shapes["b"], dtype=dtype),
        }

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = affine_forward_fast(x, self._params["w"], self._params["b"])
        return out

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        dx, dw, db = affine_backward_fast(dout, self._cached())
        self._grads = {"w": dw, "b": db}
        return dx if compute_dx else None

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        features = math.prod(input_shape)
        if features != self.in_features:
            raise ValueError(
                f"{self.describe()} expects {self.in_features} features per sample, got "
                f"{features} (sample shape {tuple(input_shape)})"
            )
        return (self.out_features,)

    def config(self) -> dict[str, Any]:
        return {
            "type": "Linear",
            "in_features": self.in_features,
            "out_features": self.out_features,
        }


class ReLU(Layer):
    """Elementwise ``max(x, 0)``."""

    def forward(self, x: np.ndarray, *, applied: bool = False) -> np.ndarray:
        """``max(x, 0)``; with ``applied``, ``x`` itself: the layer beside this one
        applies the ReLU (``forward(x, relu=True)`` of the :class:`BatchNorm2d` before it
        or of the :class:`MaxPool2d` after it, as :class:`Sequential` runs the pairs), and
        :meth:`backward` passes ``dout`` on to that layer's fused backward pass."""
        if applied:
            self._cache = _APPLIED
            return x
        out, self._cache = relu_forward_fast(x)
        return out

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        cache = self._cached()
        if not compute_dx:
            return None
        return dout if cache is _APPLIED else relu_backward_fast(dout, cache)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return tuple(input_shape)

    def config(self) -> dict[str, Any]:
        return {"type": "ReLU"}


class MaxPool2d(Layer):
    """Max pooling over ``kernel_size`` windows (int or pair), ``stride`` defaulting to it.

    ``pad`` (int or pair, below the window) pads each side with -inf, as PyTorch's
    ``padding``: a window's maximum is over the inputs it holds.
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        pad: int | Sequence[int] = 0,
    ) -> None:
        super().__init__()
        self.kernel_size = int_pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else int_pair(stride, "stride", 1)
        self.pad = int_pair(pad, "pad", 0)
        if self.pad[0] >= self.kernel_size[0] or self.pad[1] >= self.kernel_size[1]:
            raise ValueError(
                f"pad {self.pad} must be smaller than the window {self.kernel_size}, so that "
                "every window holds an input element"
            )
        self.pool_param: dict[str, Any] = {
            "pool_height": self.kernel_size[0],
            "pool_width": self.kernel_size[1],
            "stride": self.stride,
        }
        if self.pad != (0, 0):
            self.pool_param["pad"] = self.pad

    def forward(self, x: np.ndarray, *, relu: bool = False) -> np.ndarray:
        """The windows' maxima; with ``relu``, ``max(pooled, 0)``: what a :class:`ReLU`
        before this layer and this layer compute, bit for bit, on a quarter of the
        elements for 2x2 windows (the ReLU then runs ``forward(x, applied=True)``), and
        :meth:`backward` takes the ReLU's gradient too: a window whose maximum is not
        positive passes no gradient, as the ReLU's zero gradient would stop it."""
        out, pool_cache = max_pool_forward_fast(x, self.pool_param)
        relu_cache = None
        if relu:
            out, relu_cache = relu_forward_fast(out)
        self._cache = (pool_cache, relu_cache)
        return out

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        pool_cache, relu_cache = self._cached()
        if not compute_dx:
            return None
        if relu_cache is not None:
            dout = relu_backward_fast(dout, relu_cache)
        return max_pool_backward_fast(dout, pool_cache)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        channels, height, width = _check_shape(input_shape, 3, "(C, H, W)", self)
        padded = (height + 2 * self.pad[0], width + 2 * self.pad[1])
        if self.kernel_size[0] > padded[0] or self.kernel_size[1] > padded[1]:
            raise ValueError(
                f"{self.describe()}: the window exceeds the input {height}x{width}"
                + (f" padded to {padded[0]}x{padded[1]}" if self.pad != (0, 0) else "")
            )
        out_h = output_size(height, self.kernel_size[0], self.stride[0], self.pad[0])
        out_w = output_size(width, self.kernel_size[1], self.stride[1], self.pad[1])
        return (channels, out_h, out_w)

    def config(self) -> dict[str, Any]:
        pad = {"pad": _compact(self.pad)} if self.pad != (0, 0) else {}
        return {
            "type": type(self).__name__,
            "kernel_size": _compact(self.kernel_size),
            "stride": _compact(self.stride),
            **pad,
        }


class Flatten(Layer):
    """(N, d_1, ..., d_k) -> (N, d_1 * ... * d_k)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError("Flatten needs a batch axis, got a scalar")
        self._cache = (x.shape, is_channels_last(x))
        return contiguous(x).reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        """``dout`` in the shape and memory format of the forward pass's input."""
        shape, channels_last = self._cached()
        dout = np.asarray(dout)
        if dout.shape != (shape[0], math.prod(shape[1:])):
            raise ValueError(
                f"dout has shape {dout.shape}, Flatten produced {(shape[0], math.prod(shape[1:]))}"
            )
        if not compute_dx:
            return None
        dx = dout.reshape(shape)
        return to_channels_last(dx) if channels_last else dx

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return (math.prod(input_shape),)

    def config(self) -> dict[str, Any]:
        return {"type": "Flatten"}


class _Normalization(Layer):
    """Shared by the normalizations: ``gamma`` (ones), ``beta`` (zeros) of ``num_features``,
    and the dict ``norm_param`` handed to the layer function at every call."""

    def __init__(self, num_features: int, eps: float, **settings: Any) -> None:
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features", 1)
        self.norm_param: dict[str, Any] = {
            "mode": "train",
            "eps": check_real(eps, "eps", low=0, low_inclusive=False),
            **settings,
        }
        self._first_initialize()

    @property
    def eps(self) -> float:
        return self.norm_param["eps"]

    def param_shapes(self) -> dict[str, Shape]:
        return {"gamma": (self.num_features,), "beta": (self.num_features,)}

    def _initial_params(
        self, rng: np.random.Generator, init: str, weight_scale: float, dtype: np.dtype
    ) -> dict[str, np.ndarray]:
        shapes = self.param_shapes()
        return {
            "gamma": np.ones(shapes["gamma"], dtype=dtype),
            "beta": np.zeros(shapes["beta"], dtype=dtype),
        }

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def _run_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.norm_param["mode"] = "train" if self.training else "test"
        out, self._cache = self._run(x)
        return out

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        dx, dgamma, dbeta = self._run_backward(dout, self._cached())
        self._grads = {"gamma": dgamma, "beta": dbeta}
        return dx if compute_dx else None

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        """(D,) features, D = num_features."""
        shape = _check_shape(input_shape, 1, "(D,)", self)
        if shape[0] != self.num_features:
            raise ValueError(f"{self.describe()} expects {self.num_features} features, got {shape}")
        return shape

    def config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "num_features": self.num_features, "eps": self.eps}


class _BatchNorm(_Normalization):
    """Shared by the batch norms: running statistics in ``norm_param`` (CS231n's
    ``bn_param``), updated in training mode."""

    BUFFERS = ("running_mean", "running_var")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.9) -> None:
        if isinstance(momentum, (bool, np.bool_)) or not isinstance(momentum, numbers.Real):
            raise TypeError(f"momentum must be a real number, got {momentum!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        super().__init__(num_features, eps, momentum=float(momentum))

    @property
    def momentum(self) -> float:
        return self.norm_param["momentum"]

    def _buffer_holder(self) -> dict[str, Any]:
        return self.norm_param

    def buffer_shapes(self) -> dict[str, Shape]:
        return {name: (self.num_features,) for name in self.BUFFERS}

    def _initial_buffers(self, dtype: np.dtype) -> dict[str, np.ndarray]:
        shapes = self.buffer_shapes()
        return {
            "running_mean": np.zeros(shapes["running_mean"], dtype=dtype),
            "running_var": np.ones(shapes["running_var"], dtype=dtype),
        }

    def forward(self, x: np.ndarray) -> np.ndarray:
        statistics = self.norm_param
        dtypes = {key: statistics[key].dtype for key in self.BUFFERS}
        out = super().forward(x)
        for key, dtype in dtypes.items():  # a float64 x would promote them
            statistics[key] = statistics[key].astype(dtype, copy=False)
        return out

    def config(self) -> dict[str, Any]:
        return {**super().config(), "momentum": self.momentum}


class BatchNorm2d(_BatchNorm):
    """Spatial batch norm of (N, C, H, W): one mean and variance per channel.

    Parameters ``gamma``, ``beta`` (C,) and buffers ``running_mean``, ``running_var``
    (C,), updated in training mode as
    ``running = momentum * running + (1 - momentum) * batch`` (PyTorch's momentum is
    ``1 - momentum``; the batch variance is the unbiased one, as PyTorch's).

    Parameters
    ----------
    num_features : int
        C.
    eps : float, default 1e-5
    momentum : float in [0, 1), default 0.9

    Attributes
    ----------
    norm_param : dict
        CS231n's ``bn_param``, handed to the layer function at every call: ``'mode'``
        (set from the module's mode), ``'eps'``, ``'momentum'``, ``'running_mean'``,
        ``'running_var'`` (the buffers: ``buffers()`` reads and writes them here).
    """

    def forward(self, x: np.ndarray, *, relu: bool = False) -> np.ndarray:
        """The normalized ``x``; with ``relu``, ``max(normalized, 0)`` in the same pass
        (what this layer and a following :class:`ReLU` compute, bit for bit; the ReLU
        then runs ``forward(out, applied=True)``), and :meth:`backward` takes the ReLU's
        gradient too."""
        self._relu = relu
        return super().forward(x)

    _relu = False

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        p = self._params
        run = spatial_batchnorm_relu_forward_fast if self._relu else spatial_batchnorm_forward_fast
        return run(x, p["gamma"], p["beta"], self.norm_param)

    def _run_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
        if self._relu:
            return spatial_batchnorm_relu_backward_fast(dout, cache)
        return spatial_batchnorm_backward_fast(dout, cache)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = _check_shape(input_shape, 3, "(C, H, W)", self)
        if shape[0] != self.num_features:
            raise ValueError(f"{self.describe()} expects {self.num_features} channels, got {shape}")
        return shape


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, D) features; otherwise as :class:`BatchNorm2d`."""

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        p = self._params
        return batchnorm_forward(x, p["gamma"], p["beta"], self.norm_param)

    def _run_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
        return batchnorm_backward(dout, cache)


class LayerNorm(_Normalization):
    """Layer norm of (N, D) features: each sample normalized over its own D features,
    then scaled by ``gamma`` and shifted by ``beta`` (D,); the same in both modes.

    Parameters
    ----------
    num_features : int
        D.
    eps : float, default 1e-5

    Attributes
    ----------
    norm_param : dict
        CS231n's ``ln_param``, handed to the layer function at every call: ``'mode'``
        (set from the module's mode; layer norm does not depend on it) and ``'eps'``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        p = self._params
        return layernorm_forward(x, p["gamma"], p["beta"], self.norm_param)

    def _run_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
        return layernorm_backward(dout, cache)


class Dropout(Layer):
    """Inverted dropout in training mode, the identity in test mode.

    Parameters
    ----------
    p : float in (0, 1], default 0.5
        KEEP probability (CS231n's convention; PyTorch's ``p`` is the drop probability).
        Kept units are scaled by ``1 / p``.
    seed : int, optional
        Fixes this layer's mask, as CS231n's ``dropout_param['seed']`` does: every
        training call on inputs of one shape drops the same units, so a loss through the
        layer is a deterministic function of the parameters (what a numerical gradient
        check needs). Without a seed every call draws a fresh mask from ``rng``. A
        :class:`Classifier` decides for its layers (see its ``seed`` and ``fresh_masks``).

    Attributes
    ----------
    mask_seed : int or None
        The seed of the fixed mask, or None for a fresh mask from ``rng`` at every call.
    rng : numpy.random.Generator
        Where fresh masks come from.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
            raise TypeError(f"p (the keep probability) must be a real number, got {p!r}")
        if not 0 < p <= 1:
            raise ValueError(f"p is the keep probability and must lie in (0, 1], got {p}")
        self.p = float(p)
        self.seed = check_seed(seed)
        self.mask_seed = self.seed
        self.rng = np.random.default_rng()

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training:
            self._cache = "identity"
            return x
        source = self.rng if self.mask_seed is None else self.mask_seed
        out, self._cache = dropout_forward(x, {"p": self.p, "mode": "train", "seed": source})
        return out

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        cache = self._cached()
        if not compute_dx:
            return None
        return dout if isinstance(cache, str) else dropout_backward(dout, cache)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return tuple(input_shape)

    def config(self) -> dict[str, Any]:
        seed = {} if self.seed is None else {"seed": self.seed}
        return {"type": "Dropout", "p": self.p, **seed}


class AvgPool2d(MaxPool2d):
    """Average pooling over ``kernel_size`` windows, ``stride`` defaulting to the window.

    ``pad`` (int or pair, below the window) pads each side with zeros, as PyTorch's
    ``padding``; ``count_include_pad`` (default True, PyTorch's default) divides every
    average by the window's size, False by the inputs the window holds.
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        pad: int | Sequence[int] = 0,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, pad)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise TypeError(f"count_include_pad must be True or False, got {count_include_pad!r}")
        self.count_include_pad = bool(count_include_pad)
        if not self.count_include_pad:
            self.pool_param["count_include_pad"] = False

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = avg_pool_forward_fast(x, self.pool_param)
        return out

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        cache = self._cached()
        return avg_pool_backward_fast(dout, cache) if compute_dx else None

    def config(self) -> dict[str, Any]:
        divisor = {} if self.count_include_pad else {"count_include_pad": False}
        return {**super().config(), **divisor}


class GlobalAvgPool(Layer):
    """(N, C, H, W) -> (N, C): the mean of every channel."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = global_avg_pool_forward(x)
        return out

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        cache = self._cached()
        return global_avg_pool_backward(dout, cache) if compute_dx else None

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return (_check_shape(input_shape, 3, "(C, H, W)", self)[0],)

    def config(self) -> dict[str, Any]:
        return {"type": "GlobalAvgPool"}


class Sequential(Module):
    """Modules applied one after the other.

    Parameters
    ----------
    *modules : Module
        At least one.
    names : sequence of str, optional
        One name per module (letters, digits, underscores; unique); default "0", "1", ....
        A parameter's name is the path of names down to its layer, then its own name:
        ``Sequential(Conv2d(...), names=["conv"]).params`` has ``"conv.w"``, ``"conv.b"``.
    """

    def __init__(self, *modules: Module, names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not modules:
            raise ValueError("Sequential needs at least one module")
        if names is None:
            names = [str(index) for index in range(len(modules))]
        names = list(names)
        if len(names) != len(modules):
            raise ValueError(f"got {len(modules)} modules but {len(names)} names")
        for name in names:
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(
                    f"module names must be non-empty strings of letters, digits and "
                    f"underscores, got {name!r}"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"module names must be unique, got {names}")
        self._modules = [
            (name, self._adopt(module, name)) for name, module in zip(names, modules, strict=True)
        ]

    def children(self) -> list[tuple[str, Module]]:
        return list(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, key: int | str) -> Module:
        if isinstance(key, str):
            for name, module in self._modules:
                if name == key:
                    return module
            raise KeyError(f"no module named {key!r}")
        return self._modules[key][1]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Each module on the output of the one before. A :class:`BatchNorm2d` followed by
        a :class:`ReLU` runs as one pass (``forward(x, relu=True)``, then the ReLU passes
        its input on): the same numbers, one pass over memory fewer each way; so does a
        :class:`Residual` followed by a ReLU (the sum and the ReLU in one pass). A ReLU
        followed by a :class:`MaxPool2d` runs after the pooling, on the pooled elements
        (the ReLU passes its input on, then ``forward(x, relu=True)``): the same numbers
        and gradients, as the ReLU and the maximum commute."""
        modules = [module for _, module in self._modules]
        position = 0
        while position < len(modules):
            module, following = modules[position], _next(modules, position)
            if type(module) is BatchNorm2d and type(following) is ReLU:
                x = following.forward(module.forward(x, relu=True), applied=True)
                position += 2
            elif type(module) is Residual and type(following) is ReLU:
                x = following.forward(module.forward(x, relu=True), applied=True)
                position += 2
            elif type(module) is ReLU and type(following) is MaxPool2d:
                x = following.forward(module.forward(x, applied=True), relu=True)
                position += 2
            else:
                x = module.forward(x)
                position += 1
        return x

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        for position in range(len(self._modules) - 1, -1, -1):
            needed = compute_dx or position > 0
            dout = self._modules[position][1].backward(dout, compute_dx=needed)
        return dout

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = tuple(input_shape)
        for name, module in self._modules:
            try:
                shape = module.output_shape(shape)
            except ValueError as error:
                raise ValueError(f"module {name!r}: {error}") from error
        return shape

    def config(self) -> dict[str, Any]:
        return {
            "type": "Sequential",
            "modules": [module.config() for _, module in self._modules],
            "names": [name for name, _ in self._modules],
        }

    def describe(self) -> str:
        inner = ", ".join(f"{name}={module.describe()}" for name, module in self._modules)
        return f"Sequential({inner})"


def _next(modules: list[Module], position: int) -> Module | None:
    return modules[position + 1] if position + 1 < len(modules) else None


class Residual(Module):
    """``body(x) + shortcut(x)``: the shortcut is the identity unless a module is given.

    Parameters
    ----------
    body : Module
    shortcut : Module, optional
        E.g. ``Sequential(Conv2d(C, F, 1, stride=2, bias=False), BatchNorm2d(F))``, a 1x1
        projection for a body that changes the channels or the size. Without it the body
        must keep the sample shape.

    Parameter names start with ``body.`` and ``shortcut.``.
    """

    def __init__(self, body: Module, shortcut: Module | None = None) -> None:
        super().__init__()
        self.body = self._adopt(body, "body")
        self.shortcut = None if shortcut is None else self._adopt(shortcut, "shortcut")

    def children(self) -> list[tuple[str, Module]]:
        named = [("body", self.body)]
        if self.shortcut is not None:
            named.append(("shortcut", self.shortcut))
        return named

    def forward(self, x: np.ndarray, *, relu: bool = False) -> np.ndarray:
        """``body(x) + shortcut(x)``; with ``relu``, ``max(sum, 0)`` in the same pass
        (what this module and a following :class:`ReLU` compute, bit for bit; the ReLU
        then runs ``forward(out, applied=True)``), and :meth:`backward` takes the ReLU's
        gradient too."""
        out = self.body.forward(x)
        skip = x if self.shortcut is None else self.shortcut.forward(x)
        if out.shape != np.shape(skip):
            raise ValueError(
                f"Residual: the body gives {out.shape} but the shortcut {np.shape(skip)}; "
                "give a shortcut projection that matches the body"
            )
        out = add_fast(out, np.asarray(skip), relu=relu)
        self._relu_out = out if relu else None
        return out

    _relu_out: np.ndarray | None = None

    def backward(self, dout: np.ndarray, *, compute_dx: bool = True) -> np.ndarray | None:
        if self._relu_out is not None:
            dout = relu_backward_fast(dout, self._relu_out)
        dx = self.body.backward(dout, compute_dx=compute_dx)
        if self.shortcut is None:
            dskip = dout
        else:
            dskip = self.shortcut.backward(dout, compute_dx=compute_dx)
        if not compute_dx:
            return None
        return add_fast(dx, dskip)

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = tuple(input_shape)
        try:
            body = self.body.output_shape(shape)
        except ValueError as error:
            raise ValueError(f"residual body: {error}") from error
        try:
            skip = shape if self.shortcut is None else self.shortcut.output_shape(shape)
        except ValueError as error:
            raise ValueError(f"residual shortcut: {error}") from error
        if body != skip:
            what = "the identity" if self.shortcut is None else "the shortcut"
            raise ValueError(
                f"Residual: the body maps {shape} to {body} but {what} gives {skip}; "
                "a body that changes the shape needs a matching shortcut (e.g. a 1x1 Conv2d)"
            )
        return body

    def config(self) -> dict[str, Any]:
        return {
            "type": "Residual",
            "body": self.body.config(),
            "shortcut": None if self.shortcut is None else self.shortcut.config(),
        }

    def describe(self) -> str:
        shortcut = "identity" if self.shortcut is None else self.shortcut.describe()
        return f"Residual(body={self.body.describe()}, shortcut={shortcut})"


MODULES: dict[str, type[Module]] = {
    cls.__name__: cls
    for cls in (
        Conv2d,
        ConvTranspose2d,
        Pad2d,
        Linear,
        ReLU,
        MaxPool2d,
        AvgPool2d,
        GlobalAvgPool,
        BatchNorm2d,
        BatchNorm1d,
        LayerNorm,
        Dropout,
        Flatten,
        Sequential,
        Residual,
    )
}


def from_config(config: Mapping[str, Any]) -> Module:
    """Rebuild a module (with fresh parameters) from its :meth:`Module.config`.

    Raises
    ------
    ValueError
        For an unknown type or arguments that do not fit it.
    """
    if not isinstance(config, Mapping) or "type" not in config:
        raise ValueError(f"a module config is a dict with a 'type', got {config!r}")
    kind = config["type"]
    if kind not in MODULES:
        raise ValueError(f"unknown module type {kind!r}; known: {', '.join(MODULES)}")
    arguments = {key: value for key, value in config.items() if key != "type"}
    try:
        if kind == "Sequential":
            modules = [from_config(inner) for inner in arguments.pop("modules")]
            return Sequential(*modules, **arguments)
        if kind == "Residual":
            shortcut = arguments.get("shortcut")
            return Residual(
                from_config(arguments["body"]),
                None if shortcut is None else from_config(shortcut),
            )
        return MODULES[kind](**arguments)
    except (KeyError, TypeError) as error:
        raise ValueError(f"invalid {kind} config {dict(config)!r}: {error}") from error


def class_scores(model: Any, X: np.ndarray, batch_size: int = 200) -> np.ndarray:
    """Class scores ``model.loss(X)``, (N, num_classes), computed ``batch_size`` at a time.

    Any model with CS231n's ``loss(X, y=None)`` (scores when ``y`` is None) will do.
    """
    batch_size = _positive_int(batch_size, "batch_size", 1)
    parts = [model.loss(X[start : start + batch_size]) for start in range(0, len(X), batch_size)]
    if not parts:
        raise ValueError("X holds no images")
    return np.concatenate(parts)


def predict_labels(model: Any, X: np.ndarray, batch_size: int = 200) -> np.ndarray:
    """The predicted class of every sample: the index of its highest score.

    Parameters
    ----------
    model
        Has CS231n's ``loss(X, y=None)``.
    X : ndarray, shape (N, ...) as ``model.loss`` takes it
    batch_size : int
        Samples per forward pass.

    Returns
    -------
    ndarray of int64, shape (N,)
    """
    batch_size = _positive_int(batch_size, "batch_size", 1)
    if len(X) == 0:
        return np.empty(0, dtype=np.int64)
    return np.argmax(class_scores(model, X, batch_size), axis=1).astype(np.int64)


class Classifier:
    """A softmax classifier around a composed network: convnet's one model class.

    ``loss(X)`` gives class scores (test mode), ``loss(X, y)`` the regularized softmax loss
    and the gradients of every entry of ``params`` (training mode), so the
    :class:`convnet.solver.Solver` trains it; :func:`convnet.serialization.save_model` /
    ``load_model`` store and rebuild it. :class:`convnet.models.ThreeLayerConvNet` and
    :class:`convnet.models.FullyConnectedNet` are Classifiers.

    Unlike the layers, which refuse integer arrays, a Classifier converts an integer ``X``
    (uint8 pixels, say) explicitly to its dtype; booleans, complex numbers and objects are
    refused.

    Parameters
    ----------
    net : Module or dict
        Maps ``(N, *input_dim)`` to scores (N, num_classes); or its :meth:`Module.config`.
        Its parameters are drawn afresh (see ``init``).
    input_dim : sequence of int
        Shape of one sample, e.g. (C, H, W); checked against the network here. With one
        dimension (D,), ``X`` may also be any (N, d_1, ..., d_k) with D = d_1 * ... * d_k.
    reg : float, default 0.0
        L2 strength: the loss gains ``0.5 * reg * sum(w**2)`` over the weights of the
        convolutions and linear layers (not biases or normalization parameters).
    dtype : float32 or float64, default float32
    init : {"he", "normal"}, default "he"
        "he": std ``sqrt(2 / fan_in)``; "normal": std ``weight_scale``.
    weight_scale : float, default 1e-2
    seed : int, optional
        Seeds the initialization and fixes the dropout masks, as CS231n's ``seed`` does:
        the ``l``-th :class:`Dropout` layer (in :meth:`Module.layers` order) uses the mask
        seed ``layer_seed(seed, l)`` (:func:`convnet.dropout.layer_seed`) at every call, so
        :meth:`loss` is a deterministic function of the parameters and a numerical gradient
        check of one model works. Without a seed, Dropout layers given a seed of their own
        keep their fixed mask and the others draw fresh masks at every training call.
    fresh_masks : bool, default False
        Every Dropout layer draws a fresh mask at every training call, from one generator
        seeded by ``seed`` (reproducible; the Solver's checkpoints save its state): for
        training a seeded model (``convnet train`` sets it).
    names : dict, optional
        Public names for some or all of the network's parameters and buffers: dotted name
        -> name (e.g. ``{"0.w": "W1"}``); ``params``, ``grads`` and ``buffers()`` use them.
    memory_format : {"auto", "channels_last", "contiguous"}, default "auto"
        Where images travel between the layers (:mod:`convnet.memory_format`): with
        ``"channels_last"`` :meth:`loss` converts ``X`` once and every convolution keeps
        its output channels-last, so the channels-last kernels run the whole network;
        ``"auto"`` does so for float32 images when those kernels are built. Only speed
        depends on it (and, within float32 rounding, the numbers).

    Attributes
    ----------
    params : ParamDict
        The network's parameters (write-through); assigning a whole dict replaces the
        values of the same names.
    num_classes : int
    memory_format : str
        As given; assigning another value takes effect at the next call.
    """

    def __init__(
        self,
        net: Module | Mapping[str, Any],
        input_dim: Sequence[int],
        reg: float = 0.0,
        dtype: Any = np.float32,
        init: str = "he",
        weight_scale: float = 1e-2,
        seed: int | None = None,
        *,
        fresh_masks: bool = False,
        names: Mapping[str, str] | None = None,
        memory_format: str = "auto",
    ) -> None:
        if isinstance(net, Mapping):
            net = from_config(net)
        if not isinstance(net, Module):
            raise TypeError(f"net must be a convnet.nn Module, got {type(net).__name__}")
        if net._in_container:
            raise ValueError(
                "this network already belongs to a container or a Classifier: build a new one "
                "(two models sharing one network would share its parameters)"
            )
        if isinstance(input_dim, (str, bytes)) or not isinstance(input_dim, Sequence):
            raise TypeError(f"input_dim must be a sequence of ints, got {input_dim!r}")
        self.input_dim = tuple(_positive_int(d, "input_dim", 1) for d in input_dim)
        self._sample_shape = self.input_dim
        out = net.output_shape(self.input_dim)
        if len(out) != 1:
            raise ValueError(
                f"the network must end in class scores (num_classes,), but it maps "
                f"{self.input_dim} to {out}: end it with Flatten/GlobalAvgPool and Linear"
            )
        self.num_classes = out[0]
        self.reg = check_real(reg, "reg", low=0, low_inclusive=True)
        self.weight_scale = check_real(weight_scale, "weight_scale", low=0, low_inclusive=False)
        self.init = check_init(init)
        self.dtype = check_dtype(dtype)
        self.seed = check_seed(seed)
        if not isinstance(fresh_masks, (bool, np.bool_)):
            raise TypeError(f"fresh_masks must be True or False, got {fresh_masks!r}")
        self.fresh_masks = bool(fresh_masks)
        self._names = self._check_names(net, names)
        net._in_container = True
        self.net = net
        self._params = ParamDict(_renamed(net._index(), self._names))
        self._buffers = ParamDict(_renamed(net._buffer_index(), self._names), "buffer")
        self._regularized = [self._names.get(name, name) for name in net.regularized()]
        init_seed, dropout_seed = np.random.SeedSequence(self.seed).spawn(2)
        if _drawing_arrays():
            net.initialize(self._initial_generator(init_seed), init, self.weight_scale, self.dtype)
        dropouts = [layer for layer in net.layers() if isinstance(layer, Dropout)]
        if dropouts:  # the generator the Solver's checkpoints save, only where it is used
            self._dropout_rng = np.random.default_rng(dropout_seed)
        for index, layer in enumerate(dropouts, start=1):
            layer.rng = self._dropout_rng
            if self.fresh_masks:
                layer.mask_seed = None
            elif self.seed is not None:
                layer.mask_seed = layer_seed(self.seed, index)
        self.memory_format = memory_format

    @property
    def memory_format(self) -> str:
        return self._memory_format

    @memory_format.setter
    def memory_format(self, value: str) -> None:
        if value != "auto":
            check_memory_format(value, "memory_format")
        self._memory_format = value
        images = len(self._sample_shape) == 3
        self._channels_last = images and (
            value == "channels_last"
            or (
                value == "auto"
                and self.dtype == np.float32
                and _backend.channels_last_kernel is not None
            )
        )
        for layer in self.net.layers():
            if isinstance(layer, Conv2d):
                layer.memory_format = "channels_last" if self._channels_last else None

    @staticmethod
    def _check_names(net: Module, names: Mapping[str, str] | None) -> dict[str, str]:
        if names is None:
            return {}
        if not isinstance(names, Mapping):
            raise TypeError(f"names must be a dict of dotted name -> name, got {names!r}")
        known = [*net._index(), *net._buffer_index()]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"names renames {unknown}, which the network does not have")
        public = [names.get(name, name) for name in known]
        for name in public:
            if not isinstance(name, str) or not name:
                raise ValueError(f"names must map to non-empty strings, got {name!r}")
        repeated = sorted({name for name in public if public.count(name) > 1})
        if repeated:
            raise ValueError(f"names gives several parameters or buffers the name {repeated}")
        return dict(names)

    def _initial_generator(self, init_seed: np.random.SeedSequence) -> np.random.Generator:
        """What draws the initial parameters: the first of the two streams spawned from
        ``seed`` (the second draws the dropout masks)."""
        return np.random.default_rng(init_seed)

    @property
    def params(self) -> ParamDict:
        return self._params

    @params.setter
    def params(self, values: Mapping[str, np.ndarray]) -> None:
        if set(values) != set(self._params):
            raise ValueError(
                f"params must have exactly the names {sorted(self._params)}, got {sorted(values)}"
            )
        self._params.update(values)

    def buffers(self) -> ParamDict:
        """The state the model trains without gradients (batch norm's running statistics),
        by name: a write-through mapping like ``params``. Saved and loaded with the
        parameters, never updated by an update rule."""
        return self._buffers

    def array_shapes(self) -> dict[str, Shape]:
        """The shape of every parameter and buffer, by its name in ``params`` or
        ``buffers()``: known without the arrays (see :func:`without_arrays`)."""
        return {
            self._names.get(name, name): shape for name, shape in self.net.array_shapes().items()
        }

    def set_buffers(self, buffers: Mapping[str, np.ndarray]) -> None:
        """Replace buffers by copies of the given arrays (in the model dtype).

        Raises
        ------
        ValueError
            For a name the model has no buffer of, or an array of another shape or not of
            floats (nothing is replaced then).
        """
        for name, array in buffers.items():
            if name not in self._buffers:
                raise ValueError(f"{type(self).__name__} has no buffer {name!r}")
            array, current = np.asarray(array), self._buffers[name]
            if array.shape != current.shape or array.dtype.kind != "f":
                raise ValueError(
                    f"buffer {name} needs shape {current.shape} of floats, got shape "
                    f"{array.shape} and dtype {array.dtype}"
                )
        for name, array in buffers.items():
            self._buffers[name] = np.array(array, dtype=self.dtype)

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model, as JSON-compatible values."""
        names = {"names": dict(self._names)} if self._names else {}
        layout = {} if self.memory_format == "auto" else {"memory_format": self.memory_format}
        return {
            "net": self.net.config(),
            "input_dim": list(self.input_dim),
            **self._training_config(),
            "fresh_masks": self.fresh_masks,
            **names,
            **layout,
        }

    def _training_config(self) -> dict[str, Any]:
        """The arguments every model takes: ``reg``, ``dtype``, ``init``, ``weight_scale``,
        ``seed`` (for :meth:`config`)."""
        return {
            "reg": self.reg,
            "dtype": self.dtype.name,
            "init": self.init,
            "weight_scale": self.weight_scale,
            "seed": self.seed,
        }

    def _as_input(self, X: Any) -> np.ndarray:
        """``X`` cast to the model dtype, after checking it is a batch of samples."""
        X = np.asarray(X)
        if X.dtype.kind not in "iuf":
            raise TypeError(f"X must hold real numbers (float or integer), got dtype {X.dtype}")
        shape = self._sample_shape
        if len(shape) == 1 and X.ndim >= 2 and math.prod(X.shape[1:]) == shape[0]:
            X = X.reshape(X.shape[0], shape[0])
        if X.ndim != len(shape) + 1 or X.shape[1:] != shape:
            raise ValueError(
                f"X must have shape (N, {', '.join(map(str, shape))}) for this "
                f"{type(self).__name__}, got {X.shape}"
            )
        if self._channels_last:
            return to_channels_last(X, self.dtype)
        return X.astype(self.dtype, copy=False)

    def loss(
        self, X: np.ndarray, y: np.ndarray | None = None
    ) -> np.ndarray | tuple[float, dict[str, np.ndarray]]:
        """Class scores (test mode), or the loss and its gradients (training mode).

        Parameters
        ----------
        X : ndarray, shape ``(N, *input_dim)``
            Float, or integer (converted explicitly to the model's dtype).
        y : ndarray of int, shape (N,), optional
            Labels in ``[0, num_classes)``; giving them selects training mode (dropout
            on, batch norm on batch statistics, running statistics updated).

        Returns
        -------
        scores : ndarray, shape (N, num_classes)
            If ``y`` is None.
        loss : float
            Otherwise, with
        grads : dict
            Keyed like ``params``, each of its parameter's shape and dtype.
        """
        X = self._as_input(X)
        training = y is not None
        if training:
            y = check_labels(y, X.shape[0], self.num_classes)
        self.net.train(training)
        with single_threaded_blas():
            scores = self.net.forward(X)
            if not training:
                return scores
            loss, dscores = softmax_loss(scores, y)
            self.net.backward(dscores, compute_dx=False)
        grads = {self._names.get(name, name): grad for name, grad in self.net.grads.items()}
        if self.reg:
            for name in self._regularized:
                weight = self._params[name]
                loss += 0.5 * self.reg * float(np.vdot(weight, weight))
                grads[name] = grads[name] + self.reg * weight
        return loss, grads

    def predict(self, X: np.ndarray, batch_size: int = 200) -> np.ndarray:
        """The predicted class of every sample (test mode): the index of its highest score.

        Parameters
        ----------
        X : ndarray, shape ``(N, *input_dim)`` as :meth:`loss` takes it
            Float or integer (converted to the model's dtype).
        batch_size : int
            Samples per forward pass.

        Returns
        -------
        ndarray of int64, shape (N,)
        """
        return predict_labels(self, self._as_input(X), batch_size)
