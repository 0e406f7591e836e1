"""Argument checks and output-size arithmetic shared by the naive and the fast layers.

Every public layer validates here, once, before any computation; the compiled kernel
trusts what passes.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _physical_memory() -> int:
    """This machine's memory in bytes, at most ``sys.maxsize`` (the address space) and
    ``sys.maxsize`` where the platform does not say."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return sys.maxsize
    return min(memory, sys.maxsize) if memory > 0 else sys.maxsize


# No array a layer allocates may be larger: beyond it numpy's allocation fails (or, past
# the address space, the sizes the compiled kernels compute would overflow).
MEMORY_BYTES = _physical_memory()


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def check_allocation(shape: tuple[int, ...], dtype: Any, what: str) -> None:
    """Refuse, with a ``ValueError``, an array no allocation here could hold.

    Parameters
    ----------
    shape : tuple of int
        Its shape (Python ints: the product cannot overflow).
    dtype : numpy dtype
    what : str
        Names the array in the message (e.g. "the convolution's output").

    Raises
    ------
    ValueError
        When it would need more bytes than :data:`MEMORY_BYTES`, this machine's memory.
    """
    nbytes = math.prod(int(size) for size in shape) * np.dtype(dtype).itemsize
    if nbytes > MEMORY_BYTES:
        raise ValueError(
            f"{what} {tuple(int(size) for size in shape)} would need {_gib(nbytes)}, more "
            f"than this machine's memory ({_gib(MEMORY_BYTES)}): check the stride, pad and "
            "dilation"
        )


class ConvGeometry(NamedTuple):
    """Normalized convolution arguments and output size (new fields go at the end)."""

    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    out_h: int
    out_w: int
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1


class ConvTransposeGeometry(NamedTuple):
    """A transposed convolution: the convolution whose input gradient it is, and its
    output size ``(H - 1) * s - 2 * p + d * (k - 1) + output_pad + 1`` per axis.

    ``conv`` maps the transposed convolution's output (N, F, out_h, out_w) to its input
    (N, C, H, W): its ``out_h``, ``out_w`` are H and W.
    """

    conv: ConvGeometry
    out_h: int
    out_w: int


class PoolGeometry(NamedTuple):
    """Normalized pooling arguments and output size (new fields go at the end)."""

    pool_h: int
    pool_w: int
    stride_h: int
    stride_w: int
    out_h: int
    out_w: int
    pad_h: int = 0
    pad_w: int = 0
    count_include_pad: int = 1  # 1: an average divides by the window's size; 0: by its inputs


def check_float_array(array: Any, name: str) -> np.ndarray:
    """Return ``array`` as an ndarray of float32 or float64, refusing every other dtype.

    Integers, booleans, float16, complex numbers and objects raise ``TypeError``: convert
    them explicitly (``x.astype(np.float32)``) so no precision is lost silently. A
    non-native byte order is converted to native.
    """
    if isinstance(array, np.ndarray):
        result = array
    elif isinstance(array, (list, tuple, numbers.Number, np.generic)):
        result = np.asarray(array)
    else:
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if result.dtype.kind == "f" and not result.dtype.isnative:
        result = result.astype(result.dtype.newbyteorder("="))
    if result.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {result.dtype}; "
            f"convert it explicitly, e.g. {name}.astype(np.float32)"
        )
    return result


def check_ndim(array: np.ndarray, ndim: int, name: str, layout: str) -> None:
    """Raise ``ValueError`` unless ``array`` has ``ndim`` dimensions."""
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional {layout}, got shape {array.shape}")


def common_dtype(*arrays: np.ndarray) -> np.dtype:
    """The float dtype the computation runs in: float64 if any input is float64."""
    return np.result_type(*arrays)


MAX_PARAMETER = 2**31 - 1


def _positive_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(value: Any, name: str, *, low: float, low_inclusive: bool) -> float:
    """``value`` as a finite float above ``low`` (or equal to it, with ``low_inclusive``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    in_range = value >= low if low_inclusive else value > low
    if not math.isfinite(value) or not in_range:
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be finite and {bound} {low}, got {value}")
    return value


def check_seed(
    seed: Any, name: str = "seed", *, generator: bool = False
) -> int | np.random.Generator | None:
    """A seed: None, an int >= 0 (not a bool), or with ``generator`` a numpy Generator."""
    if seed is None or (generator and isinstance(seed, np.random.Generator)):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        kinds = "an int, a numpy Generator or None" if generator else "an int or None"
        raise TypeError(f"{name} must be {kinds}, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be >= 0, got {seed}")
    return int(seed)


def check_dtype(dtype: Any) -> np.dtype:
    """A model's dtype: float32 or float64 (a ``TypeError`` otherwise)."""
    try:
        result = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from error
    if result not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {result}")
    return result


def image_shape(input_dim: Any) -> tuple[int, int, int]:
    """A model's ``input_dim``: a sequence (C, H, W) of positive ints."""
    if isinstance(input_dim, (str, bytes)) or not isinstance(input_dim, Sequence):
        raise TypeError(f"input_dim must be a sequence (C, H, W), got {input_dim!r}")
    if len(input_dim) != 3:
        raise ValueError(f"input_dim must be (C, H, W), got {tuple(input_dim)!r}")
    channels, height, width = (_positive_int(d, "input_dim", 1) for d in input_dim)
    return channels, height, width


def _layer_int(value: Any, name: str, minimum: int) -> int:
    """A stride, pad or pool window: an int from ``minimum`` to 2**31 - 1, so the
    kernel's index arithmetic cannot overflow."""
    value = _positive_int(value, name, minimum)
    if value > MAX_PARAMETER:
        raise ValueError(f"{name} must be at most 2**31 - 1, got {value}")
    return value


def int_pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """Normalize an int or an ``(h, w)`` pair of ints, each at least ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return (
            _layer_int(value[0], f"{name}[0]", minimum),
            _layer_int(value[1], f"{name}[1]", minimum),
        )
    single = _layer_int(value, name, minimum)
    return single, single


def _param(params: Any, key: str, what: str) -> Any:
    if not isinstance(params, dict):
        raise TypeError(f"{what} must be a dict, got {type(params).__name__}")
    if key not in params:
        raise ValueError(f"{what} is missing the key {key!r}")
    return params[key]


CONV_ALGORITHMS = ("auto", "im2col", "winograd")


def conv_algorithm(conv_param: dict, default: str | None = "auto") -> str | None:
    """The convolution algorithm ``conv_param`` asks for, or ``default`` when it names none.

    ``'im2col'``, ``'winograd'`` or ``'auto'`` (the fast layers choose); the naive layers
    compute the same result whatever it says.
    """
    if not isinstance(conv_param, dict) or "algorithm" not in conv_param:
        return default
    algorithm = conv_param["algorithm"]
    if not isinstance(algorithm, str):
        raise TypeError(f"conv_param['algorithm'] must be a str, got {algorithm!r}")
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(
            f"conv_param['algorithm'] must be one of {', '.join(map(repr, CONV_ALGORITHMS))}, "
            f"got {algorithm!r}"
        )
    return algorithm


MEMORY_FORMATS = ("contiguous", "channels_last")


def check_memory_format(value: Any, name: str) -> str:
    """``value`` if it names a memory format of :data:`MEMORY_FORMATS`, else a
    ``TypeError`` or ``ValueError`` naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r}")
    if value not in MEMORY_FORMATS:
        raise ValueError(f"{name} must be 'contiguous' or 'channels_last', got {value!r}")
    return value


def conv_memory_format(conv_param: dict) -> str | None:
    """The memory format ``conv_param['memory_format']`` asks the output to have
    (``'contiguous'`` or ``'channels_last'``), or None to follow the input's."""
    if not isinstance(conv_param, dict) or "memory_format" not in conv_param:
        return None
    return check_memory_format(conv_param["memory_format"], "conv_param['memory_format']")


def output_size(size: int, window: int, stride: int, pad: int) -> int:
    """``floor((size + 2 * pad - window) / stride) + 1``; needs ``window <= size + 2 * pad``."""
    return (size + 2 * pad - window) // stride + 1


def _groups(conv_param: dict) -> int:
    return _layer_int(conv_param.get("groups", 1), "groups", 1)


def _check_groups(groups: int, channels: int, filters: int, c_name: str, f_name: str) -> None:
    if channels % groups:
        raise ValueError(f"groups = {groups} must divide the {c_name} channels, got {channels}")
    if filters % groups:
        raise ValueError(f"groups = {groups} must divide the {f_name} channels, got {filters}")


def _check_kernel(w: np.ndarray) -> tuple[int, int]:
    kernel_h, kernel_w = w.shape[2], w.shape[3]
    if kernel_h < 1 or kernel_w < 1:
        raise ValueError(f"filter size must be at least 1x1, got w shape {w.shape}")
    return kernel_h, kernel_w


def conv_geometry(x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict) -> ConvGeometry:
    """Check a convolution's arguments and return its normalized geometry.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C // groups, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'`` (int >= 1 or pair), ``'pad'`` (int >= 0 or pair), optional
        ``'dilation'`` (int >= 1 or pair, default 1), ``'groups'`` (int >= 1 dividing C
        and F, default 1) and ``'algorithm'`` (see :func:`conv_algorithm`).
    """
    check_ndim(x, 4, "x", "(N, C, H, W)")
    check_ndim(w, 4, "w", "(F, C // groups, HH, WW)")
    check_ndim(b, 1, "b", "(F,)")
    stride_h, stride_w = int_pair(_param(conv_param, "stride", "conv_param"), "stride", 1)
    pad_h, pad_w = int_pair(_param(conv_param, "pad", "conv_param"), "pad", 0)
    dilation_h, dilation_w = int_pair(conv_param.get("dilation", 1), "dilation", 1)
    groups = _groups(conv_param)
    _check_groups(groups, x.shape[1], w.shape[0], "input", "output (F)")
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(
            f"channel mismatch: x has {x.shape[1]} channels (shape {x.shape}), "
            f"w expects {w.shape[1] * groups} ({w.shape[1]} per group x {groups} groups; "
            f"shape {w.shape})"
        )
    if b.shape[0] != w.shape[0]:
        raise ValueError(f"b must have length F = {w.shape[0]}, got shape {b.shape}")
    conv_algorithm(conv_param)
    conv_memory_format(conv_param)
    _, _, height, width = x.shape
    kernel_h, kernel_w = _check_kernel(w)
    span_h, span_w = dilation_h * (kernel_h - 1) + 1, dilation_w * (kernel_w - 1) + 1
    if span_h > height + 2 * pad_h or span_w > width + 2 * pad_w:
        raise ValueError(
            f"filter {kernel_h}x{kernel_w} with dilation ({dilation_h}, {dilation_w}) spans "
            f"{span_h}x{span_w}, larger than the padded input "
            f"{height + 2 * pad_h}x{width + 2 * pad_w} (H={height}, W={width}, "
            f"pad=({pad_h}, {pad_w}))"
        )
    geometry = ConvGeometry(
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        output_size(height, span_h, stride_h, pad_h),
        output_size(width, span_w, stride_w, pad_w),
        dilation_h,
        dilation_w,
        groups,
    )
    out_shape = (x.shape[0], w.shape[0], geometry.out_h, geometry.out_w)
    check_allocation(out_shape, common_dtype(x, w, b), "the convolution's output")
    return geometry


def conv_transpose_geometry(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict
) -> ConvTransposeGeometry:
    """Check a transposed convolution's arguments and return its geometry.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), H and W >= 1
    w : ndarray, shape (C, F // groups, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict
        ``'stride'`` (int >= 1 or pair), ``'pad'`` (int >= 0 or pair), optional
        ``'output_pad'`` (int >= 0 or pair, default 0; each smaller than the stride or
        the dilation of its axis), ``'dilation'`` and ``'groups'`` as in a convolution.
    """
    check_ndim(x, 4, "x", "(N, C, H, W)")
    check_ndim(w, 4, "w", "(C, F // groups, HH, WW)")
    check_ndim(b, 1, "b", "(F,)")
    stride = int_pair(_param(conv_param, "stride", "conv_param"), "stride", 1)
    pad = int_pair(_param(conv_param, "pad", "conv_param"), "pad", 0)
    output_pad = int_pair(conv_param.get("output_pad", 0), "output_pad", 0)
    dilation = int_pair(conv_param.get("dilation", 1), "dilation", 1)
    groups = _groups(conv_param)
    if x.shape[1] != w.shape[0]:
        raise ValueError(
            f"channel mismatch: x has {x.shape[1]} channels (shape {x.shape}), "
            f"w (C, F // groups, HH, WW) expects {w.shape[0]} (shape {w.shape})"
        )
    filters = w.shape[1] * groups
    _check_groups(groups, x.shape[1], filters, "input", "output (F)")
    if b.shape[0] != filters:
        raise ValueError(
            f"b must have length F = {filters} (w.shape[1] * groups), got shape {b.shape}"
        )
    kernel = _check_kernel(w)
    for axis in range(2):
        if output_pad[axis] >= stride[axis] and output_pad[axis] >= dilation[axis]:
            raise ValueError(
                f"output_pad[{axis}] = {output_pad[axis]} must be smaller than the stride "
                f"({stride[axis]}) or the dilation ({dilation[axis]})"
            )
    size = x.shape[2:]
    out = [
        (size[a] - 1) * stride[a] - 2 * pad[a] + dilation[a] * (kernel[a] - 1) + output_pad[a] + 1
        for a in range(2)
    ]
    if min(size) < 1 or min(out) < 1:
        raise ValueError(
            f"transposed convolution of a {size[0]}x{size[1]} input gives a "
            f"{out[0]}x{out[1]} output: both must be at least 1x1 "
            f"(stride {stride}, pad {pad}, dilation {dilation}, output_pad {output_pad})"
        )
    out_shape = (x.shape[0], filters, out[0], out[1])
    check_allocation(out_shape, common_dtype(x, w, b), "the transposed convolution's output")
    conv = ConvGeometry(*stride, *pad, size[0], size[1], *dilation, groups)
    return ConvTransposeGeometry(conv, out[0], out[1])


def _float_arrays(x: Any, w: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return check_float_array(x, "x"), check_float_array(w, "w"), check_float_array(b, "b")


def check_affine_arrays(x: Any, w: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a fully connected layer's x (N, d_1, ..., d_k), w (D, M) and b (M,)."""
    x, w, b = _float_arrays(x, w, b)
    if x.ndim < 1:
        raise ValueError("x must have a batch dimension, got a scalar")
    check_ndim(w, 2, "w", "(D, M)")
    check_ndim(b, 1, "b", "(M,)")
    features = int(np.prod(x.shape[1:], dtype=np.int64))
    if features != w.shape[0]:
        raise ValueError(
            f"x of shape {x.shape} has D = {features} features per sample "
            f"but w has shape {w.shape} (expected ({features}, M))"
        )
    if b.shape[0] != w.shape[1]:
        raise ValueError(f"b must have length M = {w.shape[1]}, got shape {b.shape}")
    check_allocation((x.shape[0], w.shape[1]), common_dtype(x, w, b), "the affine output")
    return x, w, b


def check_conv_arrays(
    x: Any, w: Any, b: Any, conv_param: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ConvGeometry]:
    """Check a convolution's arrays and parameters; return the arrays and the geometry."""
    x, w, b = _float_arrays(x, w, b)
    return x, w, b, conv_geometry(x, w, b, conv_param)


def check_conv_transpose_arrays(
    x: Any, w: Any, b: Any, conv_param: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ConvTransposeGeometry]:
    """Check a transposed convolution's arrays and parameters; return them and the geometry."""
    x, w, b = _float_arrays(x, w, b)
    return x, w, b, conv_transpose_geometry(x, w, b, conv_param)


def pool_geometry(x: np.ndarray, pool_param: dict) -> PoolGeometry:
    """Check a pool's arguments and return its normalized geometry.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    pool_param : dict
        ``'pool_height'``, ``'pool_width'`` (ints >= 1) and ``'stride'`` (int >= 1 or
        pair); optional ``'pad'`` (int or pair, default 0: that many rows and columns on
        each side, smaller than the window, so every window holds an input element) and,
        for average pooling, ``'count_include_pad'`` (bool, default True: divide by the
        window's size; False: by the input elements it holds), as PyTorch's pools.
    """
    check_ndim(x, 4, "x", "(N, C, H, W)")
    pool_h = _layer_int(_param(pool_param, "pool_height", "pool_param"), "pool_height", 1)
    pool_w = _layer_int(_param(pool_param, "pool_width", "pool_param"), "pool_width", 1)
    stride_h, stride_w = int_pair(_param(pool_param, "stride", "pool_param"), "stride", 1)
    pad_h, pad_w = int_pair(pool_param.get("pad", 0), "pad", 0)
    count_include_pad = pool_param.get("count_include_pad", True)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(
            f"pool_param['count_include_pad'] must be True or False, got {count_include_pad!r}"
        )
    if pad_h >= pool_h or pad_w >= pool_w:
        raise ValueError(
            f"pool_param['pad'] ({pad_h}, {pad_w}) must be smaller than the window "
            f"{pool_h}x{pool_w}, so that every window holds an input element"
        )
    _, _, height, width = x.shape
    if pool_h > height + 2 * pad_h or pool_w > width + 2 * pad_w:
        raise ValueError(
            f"pool window {pool_h}x{pool_w} is larger than the input {height}x{width}"
            + (f" padded by ({pad_h}, {pad_w})" if pad_h or pad_w else "")
        )
    if pad_h or pad_w:  # (unpadded, the output is never larger than x)
        padded = (*x.shape[:2], height + 2 * pad_h, width + 2 * pad_w)
        check_allocation(padded, x.dtype, "the padded input of the pooling")
    return PoolGeometry(
        pool_h,
        pool_w,
        stride_h,
        stride_w,
        output_size(height, pool_h, stride_h, pad_h),
        output_size(width, pool_w, stride_w, pad_w),
        pad_h,
        pad_w,
        int(count_include_pad),
    )


def check_dout(dout: Any, expected_shape: tuple[int, ...]) -> np.ndarray:
    """Check an upstream gradient against the shape its forward pass produced."""
    dout = check_float_array(dout, "dout")
    if dout.shape != tuple(expected_shape):
        raise ValueError(
            f"dout has shape {dout.shape} but the forward pass produced {tuple(expected_shape)}"
        )
    return dout


def check_labels(y: Any, num_samples: int, num_classes: int) -> np.ndarray:
    """Check integer class labels ``y`` of shape (N,) with ``0 <= y[i] < num_classes``."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels y must be integers, got dtype {y.dtype}")
    if y.shape != (num_samples,):
        raise ValueError(f"labels y must have shape ({num_samples},), got {y.shape}")
    if num_samples and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]"
        )
    return y.astype(np.intp, copy=False)


MODES = ("train", "test")


def check_mode(params: Any, what: str) -> str:
    """The required ``'mode'`` of a ``bn_param`` or ``dropout_param``: 'train' or 'test'."""
    mode = _param(params, "mode", what)
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{what}['mode'] must be 'train' or 'test', got {mode!r}")
    return mode


def real_param(
    params: dict, key: str, what: str, default: float, low: float, high: float, low_open: bool
) -> float:
    """``params[key]`` (or ``default``) as a finite float in ``(low, high]`` or ``[low, high]``."""
    value = params.get(key, default)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}[{key!r}] must be a real number, got {value!r}")
    value = float(value)
    above = value > low if low_open else value >= low
    if not (np.isfinite(value) and above and value <= high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{what}[{key!r}] must lie in {interval}, got {value!r}")
    return value


def check_scale_shift(
    array: Any, name: str, shapes: tuple[tuple[int, ...], ...], what: str
) -> np.ndarray:
    """A normalization's ``gamma`` or ``beta``: a float array of one of the ``shapes``."""
    array = check_float_array(array, name)
    if array.shape not in shapes:
        allowed = " or ".join(str(shape) for shape in shapes)
        raise ValueError(f"{name} must have shape {allowed} for {what}, got {array.shape}")
    return array


# Caches: a backward function gets back what its forward pass returned. Anything else (None,
# a tuple of the wrong length, arrays swapped for others) is refused here, before any
# compiled kernel sees it: a TypeError for a cache of the wrong kind, a ValueError for one
# whose parts do not fit together.


def _unpack_cache(cache: Any, fields: tuple[str, ...], layer: str) -> tuple[Any, ...]:
    if not isinstance(cache, tuple) or len(cache) != len(fields):
        raise TypeError(
            f"{layer} cache must be the tuple ({', '.join(fields)}) its forward pass returned, "
            f"got {type(cache).__name__}"
            + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
        )
    return cache


def _cache_array(value: Any, name: str, layer: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{layer} cache: {name} must be a numpy array, got {type(value).__name__}")
    return check_float_array(value, f"{layer} cache {name}")


def _cache_geometry(value: Any, kind: type, layer: str) -> Any:
    if not isinstance(value, tuple) or len(value) != len(kind._fields):
        raise TypeError(
            f"{layer} cache: geometry must be a {kind.__name__}, got {type(value).__name__}"
        )
    if not all(
        isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_))
        for item in value
    ):
        raise TypeError(f"{layer} cache: geometry must hold integers, got {value!r}")
    return kind(*(int(item) for item in value))


def check_affine_cache(cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (x, w, b) of an affine forward pass, checked to fit together."""
    x, w, b = _unpack_cache(cache, ("x", "w", "b"), "affine")
    for name, value in (("x", x), ("w", w), ("b", b)):
        _cache_array(value, name, "affine")
    return check_affine_arrays(x, w, b)


def check_relu_cache(cache: Any) -> np.ndarray:
    """The x of a ReLU forward pass."""
    return _cache_array(cache, "x", "relu")


def _conv_param_of(geo: ConvGeometry) -> dict:
    """The ``conv_param`` (stride, pad, dilation, groups) that gave a cached geometry."""
    return {
        "stride": (geo.stride_h, geo.stride_w),
        "pad": (geo.pad_h, geo.pad_w),
        "dilation": (geo.dilation_h, geo.dilation_w),
        "groups": geo.groups,
    }


def check_conv_cache(
    cache: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ConvGeometry, str, str]:
    """The (x, w, b, geometry, algorithm, memory format) of a convolution's forward pass,
    checked to fit together (a cache without the algorithm asked for gets ``'auto'``,
    without the memory format its forward pass ran in ``'contiguous'``).

    The geometry is derived again from x, w and the cached strides and pads; a cache whose
    arrays were swapped for others of another size is a ``ValueError``.
    """
    fields = ("x", "w", "b", "geometry", "algorithm", "memory_format")
    defaults = ("auto", "contiguous")
    if isinstance(cache, tuple) and len(fields) - len(defaults) <= len(cache) < len(fields):
        cache = (*cache, *defaults[len(cache) - len(fields) :])
    x, w, b, geo, algorithm, memory_format = _unpack_cache(cache, fields, "conv")
    algorithm = conv_algorithm({"algorithm": algorithm})
    memory_format = check_memory_format(memory_format, "conv cache's memory_format")
    x = _cache_array(x, "x", "conv")
    w = _cache_array(w, "w", "conv")
    b = _cache_array(b, "b", "conv")
    geo = _cache_geometry(geo, ConvGeometry, "conv")
    expected = conv_geometry(x, w, b, _conv_param_of(geo))
    if expected != geo:
        raise ValueError(
            f"conv cache does not fit together: x {x.shape} and w {w.shape} give output "
            f"{expected.out_h}x{expected.out_w}, the cache says {geo.out_h}x{geo.out_w}"
        )
    return x, w, b, geo, algorithm, memory_format


def check_conv_transpose_cache(
    cache: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ConvTransposeGeometry]:
    """The (x, w, b, geometry) of a transposed convolution's forward pass, checked to fit
    together: the geometry is derived again from x, w and the cached parameters."""
    layer = "conv transpose"
    x, w, b, geo = _unpack_cache(cache, ("x", "w", "b", "geometry"), layer)
    x = _cache_array(x, "x", layer)
    w = _cache_array(w, "w", layer)
    b = _cache_array(b, "b", layer)
    if not isinstance(geo, tuple) or len(geo) != len(ConvTransposeGeometry._fields):
        raise TypeError(
            f"{layer} cache: geometry must be a ConvTransposeGeometry, got {type(geo).__name__}"
        )
    conv = _cache_geometry(geo[0], ConvGeometry, layer)
    out_h, out_w = geo[1:]
    check_ndim(x, 4, "x", "(N, C, H, W)")
    check_ndim(w, 4, "w", "(C, F // groups, HH, WW)")
    conv_param = {
        **_conv_param_of(conv),
        "output_pad": tuple(
            _positive_int(size, f"{layer} cache output size", 0)
            - ((x.shape[2 + a] - 1) * stride - 2 * pad + dilation * (w.shape[2 + a] - 1) + 1)
            for a, size, stride, pad, dilation in (
                (0, out_h, conv.stride_h, conv.pad_h, conv.dilation_h),
                (1, out_w, conv.stride_w, conv.pad_w, conv.dilation_w),
            )
        ),
    }
    expected = conv_transpose_geometry(x, w, b, conv_param)
    if expected != (conv, out_h, out_w):
        raise ValueError(
            f"{layer} cache does not fit together: x {x.shape} and w {w.shape} do not give "
            f"the cached geometry {geo!r}"
        )
    return x, w, b, expected


def check_conv_transpose_backward(
    dout: Any, cache: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, ConvTransposeGeometry]:
    """A transposed convolution's backward arguments: ``(dout, x, w, b, geometry)``, the
    cache checked as by :func:`check_conv_transpose_cache` and ``dout`` of its output shape."""
    x, w, b, geo = check_conv_transpose_cache(cache)
    dout = check_dout(dout, (x.shape[0], b.shape[0], geo.out_h, geo.out_w))
    return dout, x, w, b, geo


def check_global_pool_cache(cache: Any) -> np.ndarray:
    """The x of a global average pool's forward pass."""
    x = _cache_array(cache, "x", "global avg pool")
    check_ndim(x, 4, "global avg pool cache x", "(N, C, H, W)")
    return x


def _check_pool_fits(x: np.ndarray, geo: PoolGeometry, layer: str) -> None:
    """Refuse a pool cache whose geometry is not the one its ``x`` gives."""
    pool_param = {
        "pool_height": geo.pool_h,
        "pool_width": geo.pool_w,
        "stride": (geo.stride_h, geo.stride_w),
        "pad": (geo.pad_h, geo.pad_w),
        "count_include_pad": bool(geo.count_include_pad),
    }
    expected = pool_geometry(x, pool_param)
    if expected != geo:
        raise ValueError(
            f"{layer} cache does not fit together: x {x.shape} gives output "
            f"{expected.out_h}x{expected.out_w}, the cache says {geo.out_h}x{geo.out_w}"
        )


def check_pool_cache(cache: Any) -> tuple[np.ndarray, PoolGeometry, np.ndarray | None]:
    """The (x, geometry, argmax) of a max pool's forward pass, checked to fit together.

    ``argmax`` (None from the naive layer) must be C-contiguous or channels-last ``intc``
    of the output's shape, with every index inside its input plane: one pass over it (as
    unsigned, so a negative index counts as too large) bounds the kernel's writes.
    """
    x, geo, argmax = _unpack_cache(cache, ("x", "geometry", "argmax"), "max pool")
    x = _cache_array(x, "x", "max pool")
    geo = _cache_geometry(geo, PoolGeometry, "max pool")
    _check_pool_fits(x, geo, "max pool")
    if argmax is None:
        return x, geo, None
    if not isinstance(argmax, np.ndarray):
        raise TypeError(f"max pool cache: argmax must be an array, got {type(argmax).__name__}")
    out_shape = (*x.shape[:2], geo.out_h, geo.out_w)
    laid_out = argmax.flags.c_contiguous or (
        argmax.ndim == 4 and argmax.transpose(0, 2, 3, 1).flags.c_contiguous
    )
    if argmax.shape != out_shape or argmax.dtype != np.intc or not laid_out:
        raise ValueError(
            f"the max pool cache's argmax (shape {argmax.shape}, dtype {argmax.dtype}) does "
            f"not belong to a forward pass of x {x.shape} with output shape {out_shape}"
        )
    plane = x.shape[2] * x.shape[3]
    if argmax.size and int(argmax.view(np.dtype(f"u{argmax.itemsize}")).max()) >= plane:
        raise ValueError(
            f"the max pool cache's argmax holds indices outside the {x.shape[2]}x{x.shape[3]} "
            "input plane: it does not belong to this x"
        )
    return x, geo, argmax


def check_avg_pool_cache(cache: Any) -> tuple[np.ndarray, PoolGeometry]:
    """The (x, geometry) of an average pool's forward pass, checked to fit together."""
    x, geo, argmax = _unpack_cache(cache, ("x", "geometry", "argmax"), "avg pool")
    x = _cache_array(x, "x", "avg pool")
    geo = _cache_geometry(geo, PoolGeometry, "avg pool")
    if argmax is not None:
        raise ValueError("avg pool cache holds an argmax: it comes from a max pool")
    _check_pool_fits(x, geo, "avg pool")
    return x, geo
