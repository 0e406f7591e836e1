"""Which algorithm runs a fast convolution: im2col, Winograd (on x or on the phases of a
dilated input) or the direct depthwise loops, in contiguous or channels-last memory, and
the measured rules of ``'auto'``.

A convolution whose ``conv_param`` names no algorithm uses the process-wide choice of
:func:`convnet.set_conv_algorithm` (``'auto'`` unless ``CONVNET_CONV_ALGORITHM`` says
otherwise). :func:`convnet.fast_layers.conv_algorithm_choice` reports the choice for given
shapes.
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

import numpy as np

from convnet import _backend, _depthwise_conv, _im2col_conv, winograd
from convnet._conv_setting import get_conv_algorithm
from convnet._phases import phase_pads
from convnet._validation import ConvGeometry

WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_PIXELS = 256
WINOGRAD_MIN_PIXEL_CHANNELS = 2**14
WINOGRAD_MIN_PIXELS_PER_CHANNEL = 2
DEPTHWISE_SCRATCH_RATIO = 4
SMALL_DEPTHWISE_SCRATCH = 2**16
CHANNELS_LAST_WINOGRAD_MIN_CHANNELS = 4
# The direct channels-last passes copy the input once, zero-padded: up to this many times
# its pixels (else im2col, whose padding is virtual, runs).
DIRECT_MAX_PADDED_RATIO = 4


def winograd_tile(geo: ConvGeometry) -> int:
    """The Winograd output tile needing the fewest multiplies, edge tiles' waste included;
    a tie goes to 2x2, the more accurate."""

    def multiplies(m: int) -> int:
        return (m + 2) ** 2 * -(-geo.out_h // m) * -(-geo.out_w // m)

    return min(winograd.TILE_SIZES, key=multiplies)


def winograd_applies(w_shape: tuple[int, ...], geo: ConvGeometry) -> bool:
    """Whether Winograd F(m x m, 3x3) can run the convolution: 3x3 filters, stride 1,
    dilation 1, one group."""
    return (
        w_shape[2:] == (3, 3)
        and (geo.stride_h, geo.stride_w) == (1, 1)
        and (geo.dilation_h, geo.dilation_w, geo.groups) == (1, 1, 1)
    )


def auto_prefers_winograd(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> bool:
    """The measured rule of ``algorithm='auto'`` for a convolution Winograd can do.

    Winograd needs at least ``WINOGRAD_MIN_CHANNELS`` input channels and filters (with
    fewer its transforms cost more than the multiplies they save), and enough output
    pixels in the batch to repay its per-call work (transforming the filters):
    ``WINOGRAD_MIN_PIXEL_CHANNELS / min(C, F)``, at least ``WINOGRAD_MIN_PIXELS``, and
    for wide layers ``WINOGRAD_MIN_PIXELS_PER_CHANNEL * min(C, F)`` (their transformed
    filters, 4 times the filters' size, outgrow the caches: 256 channels broke even at
    300-400 pixels, 512 at about 480). ``python benchmarks/bench_algorithms.py`` prints
    the measurements behind the rule (``--by-batch`` the batch-size table).
    """
    narrowest = min(x_shape[1], w_shape[0])
    pixels = x_shape[0] * geo.out_h * geo.out_w
    return narrowest >= WINOGRAD_MIN_CHANNELS and pixels >= max(
        WINOGRAD_MIN_PIXELS,
        WINOGRAD_MIN_PIXEL_CHANNELS // narrowest,
        WINOGRAD_MIN_PIXELS_PER_CHANNEL * narrowest,
    )


def depthwise_scratch(x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry) -> int:
    """Values of scratch the compiled depthwise loops allocate (``_FlatPlanes`` in
    ``_im2col.pyx``: a zero-padded plane, a flat output plane and a shifted gradient
    plane), computed here with Python's integers, which cannot overflow."""
    kernel_h, kernel_w = w_shape[2:]
    padded_width = x_shape[3] + 2 * geo.pad_w
    padded = (x_shape[2] + 2 * geo.pad_h) * padded_width + geo.dilation_w * (kernel_w - 1) + 1
    flat_out = geo.out_h * padded_width + 1
    max_shift = (kernel_h - 1) * geo.dilation_h * padded_width + (kernel_w - 1) * geo.dilation_w
    return 2 * padded + max_shift + flat_out


def is_depthwise(x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry) -> bool:
    """A grouped convolution with one input channel per group runs straight from x, by
    loops over zero-padded copies of whole planes; unless those copies would be more
    than ``DEPTHWISE_SCRATCH_RATIO`` times the input and output planes (pads far beyond
    the image, up to 2**31 - 1 by the rules, overflowed them once): im2col, whose
    padding is virtual, runs those."""
    if not (geo.groups > 1 and w_shape[1] == 1):
        return False
    planes = x_shape[2] * x_shape[3] + geo.out_h * geo.out_w
    bound = DEPTHWISE_SCRATCH_RATIO * planes + SMALL_DEPTHWISE_SCRATCH
    return depthwise_scratch(x_shape, w_shape, geo) <= bound


class ConvPlan(NamedTuple):
    """How a convolution runs: ``name`` is ``'im2col'``, ``'direct'`` (the depthwise loops),
    ``'winograd'`` or ``'winograd-phases'`` (Winograd on the phases of a dilated input), or
    in channels-last memory ``'winograd-channels-last'``, ``'direct-channels-last'`` (the
    columns read in place from the padded input) or ``'im2col-channels-last'``; ``tile``
    is the m of Winograd's F(m x m, 3x3), 0 for the others."""

    name: str
    tile: int

    @property
    def memory_format(self) -> str:
        """``'channels_last'`` for the channels-last kernels, else ``'contiguous'``."""
        return "channels_last" if self.name.endswith("-channels-last") else "contiguous"


def default_algorithm(w_shape: tuple[int, ...], geo: ConvGeometry) -> str:
    """What a convolution whose ``conv_param`` names no algorithm asks for: the
    process-wide choice (:func:`convnet.set_conv_algorithm`), with ``'winograd'`` turned
    into ``'auto'`` where Winograd does not apply."""
    chosen = get_conv_algorithm()
    if chosen == "winograd" and not winograd_applies(w_shape, geo):
        return "auto"
    return chosen


def memory_format_of(
    wanted: str, dtype: np.dtype, geo: ConvGeometry, w_shape: tuple[int, ...]
) -> str:
    """The memory format a convolution with filters of ``w_shape`` runs in: channels-last
    when it is ``wanted`` (by ``conv_param['memory_format']``, else by a channels-last
    input) and the channels-last kernels can run it (float32, one group, at least one
    filter and one input channel, the compiled ``convnet._channels_last`` loaded); else
    contiguous."""
    if (
        wanted == "channels_last"
        and dtype == np.float32
        and geo.groups == 1
        and min(w_shape[:2]) > 0
        and _backend.channels_last_kernel is not None
    ):
        return "channels_last"
    return "contiguous"


def _check_winograd_request(w_shape: tuple[int, ...], geo: ConvGeometry) -> None:
    if not winograd_applies(w_shape, geo):
        raise ValueError(
            "algorithm 'winograd' needs 3x3 filters and stride 1 (dilation 1, groups 1), "
            f"got filters {w_shape[2]}x{w_shape[3]}, stride ({geo.stride_h}, "
            f"{geo.stride_w}), dilation ({geo.dilation_h}, {geo.dilation_w}) and groups "
            f"{geo.groups}; use 'auto' or 'im2col'"
        )


def plan_convolution(
    requested: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    geo: ConvGeometry,
    memory_format: str = "contiguous",
) -> ConvPlan:
    """The one place the order of the algorithms is decided: what the forward and backward
    passes run and :func:`convnet.fast_layers.conv_algorithm_choice` reports.

    Parameters
    ----------
    requested : str
        ``'auto'``, ``'im2col'`` or ``'winograd'`` (validated already).
    x_shape : (N, C, H, W)
    w_shape : (F, C // groups, HH, WW)
    geo : ConvGeometry
        The convolution's validated geometry.
    memory_format : {"contiguous", "channels_last"}
        Where the convolution runs (:func:`memory_format_of`).

    Returns
    -------
    ConvPlan
        A request for Winograd gets it or a ``ValueError``. In channels-last memory,
        Winograd under ``'auto'`` where it applies and both channel counts reach
        ``CHANNELS_LAST_WINOGRAD_MIN_CHANNELS``, else im2col. In contiguous memory a
        depthwise convolution runs the direct loops, whatever the request; under
        ``'auto'``, Winograd where it applies and :func:`auto_prefers_winograd` expects
        it to be faster, then Winograd on the phases of a dilated input
        (:func:`phase_dilation`); im2col for everything else.
    """
    if memory_format == "channels_last":
        return _plan_channels_last(requested, x_shape, w_shape, geo)
    applies = winograd_applies(w_shape, geo)
    if requested == "winograd":
        _check_winograd_request(w_shape, geo)
        if _backend.winograd_kernel is None:
            raise ValueError("algorithm 'winograd' needs the compiled kernel convnet._winograd")
        return ConvPlan("winograd", winograd_tile(geo))
    if is_depthwise(x_shape, w_shape, geo):
        return ConvPlan("direct", 0)
    if (
        requested == "auto"
        and applies
        and _backend.winograd_kernel is not None
        and auto_prefers_winograd(x_shape, w_shape, geo)
    ):
        return ConvPlan("winograd", winograd_tile(geo))
    dilation = phase_dilation(requested, x_shape, w_shape, geo)
    if dilation:
        return ConvPlan("winograd-phases", winograd_tile(_phase_geometry(geo, dilation)))
    return ConvPlan("im2col", 0)


def _plan_channels_last(
    requested: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> ConvPlan:
    """The plan in channels-last memory. Its Winograd transforms work on vectors of
    channels and keep each block of tiles in cache, so it pays off from a few channels on
    and for any batch; the other convolutions read their columns in place unless the
    padding would blow the input up (``python benchmarks/bench_channels_last.py``
    measures the rules)."""
    if requested == "winograd":
        _check_winograd_request(w_shape, geo)
        return ConvPlan("winograd-channels-last", 4)
    if (
        requested == "auto"
        and winograd_applies(w_shape, geo)
        and min(x_shape[1], w_shape[0]) >= CHANNELS_LAST_WINOGRAD_MIN_CHANNELS
    ):
        return ConvPlan("winograd-channels-last", 4)
    padded = (x_shape[2] + 2 * geo.pad_h) * (x_shape[3] + 2 * geo.pad_w)
    if geo.dilation_w == 1 and padded <= DIRECT_MAX_PADDED_RATIO * x_shape[2] * x_shape[3]:
        return ConvPlan("direct-channels-last", 0)
    return ConvPlan("im2col-channels-last", 0)


def direct_or_im2col(plan: ConvPlan) -> ModuleType:
    """The passes (``correlate``, ``gradients``) of the depthwise loops for a ``'direct'``
    plan, else of im2col: they run every plan but Winograd's, and recompute a Winograd
    call that met a value that is not finite."""
    return _depthwise_conv if plan.name == "direct" else _im2col_conv


def _phase_geometry(geo: ConvGeometry, dilation: int) -> ConvGeometry:
    """One phase's convolution as far as the plan looks at it: its output size."""
    return ConvGeometry(1, 1, 0, 0, geo.out_h // dilation, geo.out_w // dilation)


def phase_dilation(
    requested: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: ConvGeometry
) -> int:
    """The dilation d when a dilated 3x3 stride-1 convolution runs as Winograd on its d*d
    phases (:mod:`convnet._phases`), else 0.

    The phases run as one batch of d*d*N images when they have one shape (measured on
    (32,64,16,16), dilation 2, one thread: 18.7 -> 12.6 ms forward + backward). Only
    under ``algorithm='auto'``, where its rule picks Winograd.
    """
    dilation = geo.dilation_h
    padded_h, padded_w = x_shape[2] + 2 * geo.pad_h, x_shape[3] + 2 * geo.pad_w
    if (
        requested != "auto"
        or dilation == 1
        or geo.dilation_w != dilation
        or (geo.stride_h, geo.stride_w, geo.groups) != (1, 1, 1)
        or w_shape[2:] != (3, 3)
        or (
            phase_pads(x_shape, geo, dilation) is None
            and (padded_h % dilation or padded_w % dilation)
        )
        or _backend.winograd_kernel is None
    ):
        return 0
    phase_geo = _phase_geometry(geo, dilation)
    stacked = (x_shape[0] * dilation**2, x_shape[1], padded_h // dilation, padded_w // dilation)
    return dilation if auto_prefers_winograd(stacked, w_shape, phase_geo) else 0
