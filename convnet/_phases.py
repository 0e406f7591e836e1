"""The phases of a dilated convolution: its d*d undilated convolutions, stacked in a batch.

With stride 1, output (d*i + r, d*j + s) of a convolution with dilation d reads only
padded input (d*(i+a) + r, d*(j+e) + s): each of the d*d phases of the padded input,
convolved with the undilated filters, gives one phase of the output. When the phases have
one shape they run as one batch of d*d*N images, which Winograd can take (see
:func:`phase_pads` for their two layouts). The copies run in the compiled kernel, on the
worker threads.
"""

from __future__ import annotations

import numpy as np

from convnet import _backend
from convnet._parallel import map_groups, work_groups
from convnet._validation import ConvGeometry

SMALL_PHASE_COPY_ELEMENTS = 2**18


def phase_pads(
    x_shape: tuple[int, ...], geo: ConvGeometry, dilation: int
) -> tuple[int, int] | None:
    """The padding of the phase convolution when its phases come from x itself, else None.

    When x's height and width and both pads are multiples of d, phase (r, s) of the
    padded input is phase (r, s) of x padded by pad / d: the phases are taken from x and
    the Winograd convolution pads them, so its input gradient is x's phases themselves
    (no cropping) and covers fewer tiles (on (32,64,16,16) with dilation 2 and pad 2, 4
    instead of 9 per phase). Otherwise the phases are those of the zero-padded input,
    convolved without padding.
    """
    sizes = (x_shape[2], x_shape[3], geo.pad_h, geo.pad_w)
    if any(size % dilation for size in sizes):
        return None
    return geo.pad_h // dilation, geo.pad_w // dilation


def split_phases(images: np.ndarray, dilation: int) -> np.ndarray:
    """(N, C, d*h, d*w) -> (d*d*N, C, h, w): phase (r, s) of image n at (r*d + s)*N + n.

    ``images`` is contiguous; the compiled copy runs on the workers, images split.
    """
    num, channels, height, width = images.shape
    phases = np.empty(
        (dilation**2 * num, channels, height // dilation, width // dilation), images.dtype
    )

    def split_group(start: int, stop: int) -> None:
        _backend.kernel.split_phases(images, phases, dilation, start, stop)

    map_groups(split_group, num, work_groups(images.size, SMALL_PHASE_COPY_ELEMENTS))
    return phases


def merge_phases(stacked: np.ndarray, dilation: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`split_phases`: a new array of ``shape`` (N, C, d*h, d*w)."""
    stacked_c = np.ascontiguousarray(stacked)
    out = np.empty(shape, dtype=stacked.dtype)

    def merge_group(start: int, stop: int) -> None:
        _backend.kernel.merge_phases(stacked_c, out, dilation, start, stop)

    map_groups(merge_group, shape[0], work_groups(stacked.size, SMALL_PHASE_COPY_ELEMENTS))
    return out


def phase_input(
    x_c: np.ndarray, geo: ConvGeometry, dilation: int
) -> tuple[np.ndarray, ConvGeometry, bool]:
    """The stacked phases of a dilated convolution, the geometry of their undilated
    convolution, and whether the phases are x's own (else the padded input's)."""
    out_h, out_w = geo.out_h // dilation, geo.out_w // dilation
    pads = phase_pads(x_c.shape, geo, dilation)
    if pads is not None:
        return split_phases(x_c, dilation), ConvGeometry(1, 1, *pads, out_h, out_w), True
    padded = np.pad(x_c, ((0, 0), (0, 0), (geo.pad_h,) * 2, (geo.pad_w,) * 2))
    return split_phases(padded, dilation), ConvGeometry(1, 1, 0, 0, out_h, out_w), False
