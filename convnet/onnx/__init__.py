"""Models that travel: ONNX export and import.

:func:`export` writes a convnet model as an ONNX graph (the model in test mode), which
ONNX Runtime, PyTorch's tools and other runtimes read; :func:`load` reads a graph that
convnet or ``torch.onnx.export`` wrote back as a :class:`convnet.nn.Classifier`, which
predicts, evaluates and trains like any other convnet model.

The ``onnx`` package (``pip install "convnet[onnx]"``) is imported when one of these
functions runs, never by ``import convnet``.

The graph: input ``"input"`` of shape (N, C, H, W) or (N, D) with a symbolic batch size
``N``, output ``"logits"`` (N, classes), float32 or float64 as the model; one node per
layer (Conv, ConvTranspose, Pad, MaxPool, AveragePool, GlobalAveragePool + Flatten,
BatchNormalization, LayerNormalization, Relu, Flatten, Gemm, Add for a residual
connection), parameters and running statistics as initializers named as the model names
them (``model.params``, ``model.buffers()``). Dropout layers write no node.

Inside: :mod:`~convnet.onnx.graph_writer` builds graphs; :mod:`~convnet.onnx.files`
reads files without trusting them; :mod:`~convnet.onnx.folding` folds shape arithmetic;
:mod:`~convnet.onnx.spatial_operators` and :mod:`~convnet.onnx.feature_operators` turn
nodes into layers (with what they share in :mod:`~convnet.onnx.operators`) and
:mod:`~convnet.onnx.graph_reader` the graph into a network; :mod:`~convnet.onnx.common`
holds what both directions share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet._io import atomic_open
from convnet._validation import _positive_int
from convnet.nn import Classifier
from convnet.onnx.common import DEFAULT_OPSET

if TYPE_CHECKING:
    from convnet.runs import Preprocessing


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as error:
        raise ImportError(
            'convnet.onnx needs the onnx package: pip install "convnet[onnx]" (or pip install onnx)'
        ) from error
    return onnx


def to_onnx(
    model: Classifier,
    *,
    opset: int = DEFAULT_OPSET,
    input_scale: float | None = None,
    input_mean: np.ndarray | None = None,
    input_dim: tuple[int, ...] | None = None,
) -> Any:
    """The ONNX graph of ``model`` in test mode, as an ``onnx.ModelProto``.

    Parameters
    ----------
    model : convnet.nn.Classifier
    opset : int, default 17
        ONNX operator set version, from 9 to the newest the installed onnx knows.
    input_scale : float, optional
        Put ``input * input_scale`` in front of the network (the scaling of a
        ``convnet train`` run; positive).
    input_mean : ndarray, of the graph's sample shape, optional
        Then subtract ``input_mean`` (the run's mean image), so the graph takes raw images
        (:func:`load_with_preprocessing` reads both back).
    input_dim : tuple of int, optional
        The graph's sample shape: the model's (default), or for a model of vectors (D,)
        images of D values (C, H, W), which the graph flattens.

    Returns
    -------
    onnx.ModelProto
        Checked by ``onnx.checker.check_model(..., full_check=True)``.

    Raises
    ------
    TypeError
        For a model that is not a Classifier, or a non-integer opset.
    ValueError
        For a module convnet cannot export, an opset out of range, or preprocessing
        arrays of the wrong shape.
    """
    from convnet.onnx.graph_writer import build_model, check_opset

    if not isinstance(model, Classifier):
        raise TypeError(f"model must be a convnet.nn.Classifier, got {type(model).__name__}")
    onnx = _import_onnx()
    opset = check_opset(opset, onnx.defs.onnx_opset_version())
    return build_model(onnx, model, opset, input_scale, input_mean, _input_dim(input_dim))


def export(
    model: Classifier,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    input_scale: float | None = None,
    input_mean: np.ndarray | None = None,
    input_dim: tuple[int, ...] | None = None,
) -> Path:
    """Write ``model`` in test mode as an ONNX file at ``path`` (atomically).

    Parameters are those of :func:`to_onnx`; ``path`` is used as given.

    Returns
    -------
    Path
        Where the graph was written.
    """
    proto = to_onnx(
        model, opset=opset, input_scale=input_scale, input_mean=input_mean, input_dim=input_dim
    )
    path = Path(path)
    with atomic_open(path) as handle:
        handle.write(proto.SerializeToString())
    return path


def load(path: str | os.PathLike, *, input_dim: tuple[int, ...] | None = None) -> Classifier:
    """Read an ONNX graph as a :class:`convnet.nn.Classifier` (float32 or float64 as the
    graph).

    The graph may come from :func:`export` or from ``torch.onnx.export`` (either exporter)
    of an equivalent network in eval mode, at opset 7 or newer: Conv, ConvTranspose, Pad,
    MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean over (H, W),
    BatchNormalization, LayerNormalization, Relu, Add (a residual connection, or a bias),
    Flatten, Reshape to (N, -1), Squeeze, Gemm, MatMul, Identity, Dropout; unequal pads,
    ``auto_pad`` and max pooling's ``ceil_mode`` become a :class:`convnet.nn.Pad2d` in
    front. Shape arithmetic (Shape, Gather, Unsqueeze, Concat, Slice, Cast, Constant,
    ConstantOfShape, Transpose, Add, Sub, Mul, Div) is folded where it is static. A graph
    may branch only into the two paths of a residual connection.

    Parameters
    ----------
    path : str or path-like
        An ``.onnx`` file. External data must lie in files inside its folder.
    input_dim : tuple of int, optional
        The sample shape (C, H, W) or (D,), for a graph whose input leaves it symbolic.

    Returns
    -------
    convnet.nn.Classifier
        Its ``loss(X)`` gives the graph's output; it can be trained, saved with
        :func:`convnet.models.save_model` and exported again.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not a valid ONNX model, is tampered (data that does not match
        the declared shapes), or uses an operator, attribute or topology convnet cannot
        compute exactly: the message names the node and what is unsupported.
    """
    model, preprocessing = load_with_preprocessing(path, input_dim=input_dim)
    if preprocessing is not None:
        raise ValueError(_WITH_PREPROCESSING.format(source=path))
    return model


_WITH_PREPROCESSING = (
    "{source} begins with the preprocessing of raw images (input * scale - mean), which "
    "is no layer: load_with_preprocessing gives the network and the preprocessing apart "
    "(convnet.runs.load_run and convnet predict apply it)"
)


def load_with_preprocessing(
    path: str | os.PathLike, *, input_dim: tuple[int, ...] | None = None
) -> tuple[Classifier, Preprocessing | None]:
    """:func:`load` for a graph that may take raw images: the network, and the scaling and
    mean subtraction in front of it (as ``export(..., input_scale=, input_mean=)`` and
    ``convnet export --with-preprocessing`` write them) or None.

    Returns
    -------
    model : convnet.nn.Classifier
        The network, taking prepared images.
    preprocessing : convnet.runs.Preprocessing or None
        ``raw * scale - mean_image`` gives what ``model`` takes.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load`; a ValueError too for preprocessing of inputs that are not images.
    """
    from convnet.onnx.files import read_model
    from convnet.onnx.graph_reader import import_model

    onnx = _import_onnx()
    path = Path(path)
    proto = read_model(onnx, path)
    model, preprocessing = import_model(onnx, proto, path.parent, _input_dim(input_dim))
    return model, _preprocessing(preprocessing, path)


def _preprocessing(found: tuple[float, np.ndarray] | None, source: Any) -> Preprocessing | None:
    from convnet.runs import Preprocessing

    if found is None:
        return None
    scale, mean = found
    if mean.ndim != 3:
        raise ValueError(
            f"{source} begins with preprocessing of inputs {mean.shape}; convnet keeps "
            "preprocessing of images (C, H, W) only"
        )
    return Preprocessing(scale, mean)


def from_onnx(model: Any, *, input_dim: tuple[int, ...] | None = None) -> Classifier:
    """:func:`load` for an ``onnx.ModelProto`` in memory (which holds no external data).

    Raises
    ------
    TypeError
        If ``model`` is not an ``onnx.ModelProto``.
    ValueError
        As :func:`load`.
    """
    from convnet.onnx.files import check_model
    from convnet.onnx.graph_reader import import_model

    onnx = _import_onnx()
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto, got {type(model).__name__}")
    check_model(onnx, model, None)
    network, preprocessing = import_model(onnx, model, None, _input_dim(input_dim))
    if preprocessing is not None:
        raise ValueError(_WITH_PREPROCESSING.format(source="the model"))
    return network


def _input_dim(input_dim: Any) -> tuple[int, ...] | None:
    if input_dim is None:
        return None
    if isinstance(input_dim, (str, bytes)) or not isinstance(input_dim, (tuple, list)):
        raise TypeError(f"input_dim must be a tuple of ints, got {input_dim!r}")
    return tuple(_positive_int(d, "input_dim", 1) for d in input_dim)
