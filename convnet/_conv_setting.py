"""The convolution algorithm the fast layers use unless ``conv_param`` names one.

``'auto'`` (the default) lets the measured rules of :mod:`convnet.conv_plan` choose:
Winograd F(4x4, 3x3) on most 3x3 stride-1 layers, the fastest, whose float32 rounding
is ~20x im2col's per layer. ``'im2col'`` never runs Winograd: float32 networks then
match float64 closely (see the algorithms and precision page of the documentation).
``'winograd'`` runs Winograd wherever it applies and leaves the other layers to
``'auto'``'s choice. The environment variable ``CONVNET_CONV_ALGORITHM`` sets the value
(read when a convolution first needs it: a bad value is then a ``ValueError`` naming the
variable); :func:`set_conv_algorithm` changes it for the whole process.
"""

from __future__ import annotations

from convnet import _environment
from convnet._validation import CONV_ALGORITHMS


def _checked(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {name!r}")
    if name not in CONV_ALGORITHMS:
        raise ValueError(
            f"{what} must be one of {', '.join(map(repr, CONV_ALGORITHMS))}, got {name!r}"
        )
    return name


_algorithm: str | None = None


def set_conv_algorithm(name: str) -> str | None:
    """Choose the convolution algorithm of every fast convolution whose ``conv_param``
    names none; return the previous choice.

    Parameters
    ----------
    name : {"auto", "im2col", "winograd"}
        ``"auto"``: the measured rules choose (Winograd on most 3x3 stride-1 layers).
        ``"im2col"``: never Winograd (float32 results closest to float64).
        ``"winograd"``: Winograd wherever it applies, ``"auto"``'s choice elsewhere.

    Returns
    -------
    str or None
        The choice before this call; None when there was none because
        ``CONVNET_CONV_ALGORITHM`` holds a bad value (which this call overrides).
    """
    global _algorithm
    checked = _checked(name, "the convolution algorithm")
    try:
        previous = get_conv_algorithm()
    except ValueError:
        previous = None
    _algorithm = checked
    return previous


def get_conv_algorithm() -> str:
    """The convolution algorithm of convolutions whose ``conv_param`` names none.

    Returns
    -------
    str
        ``"auto"``, ``"im2col"`` or ``"winograd"``.
    """
    global _algorithm
    if _algorithm is None:
        _algorithm = _environment.conv_algorithm()
    return _algorithm
