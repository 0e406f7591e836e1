"""Choose the backend: the compiled kernel when it imports, else the naive layers.

``BACKEND`` is ``"cython"`` or ``"naive"``. ``CONVNET_BACKEND=naive`` forces the naive
layers; ``CONVNET_BACKEND=cython`` demands the extension and fails loudly without it. The
first fast-layer call on the naive backend emits one ``RuntimeWarning`` naming the cause.
``unbuilt_checkout`` is true when this convnet was imported from a source checkout whose
kernel was never built (``python -m pytest`` or ``python -m convnet`` in the checkout): the
test suite and the ``convnet`` command refuse to run the naive layers silently then.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from pathlib import Path
from types import ModuleType

from convnet import _environment

CHECKOUT_FIX = (
    "build the kernel in the checkout with `python setup.py build_ext --inplace`, or run "
    "the installed convnet from another directory (`pytest`, not `python -m pytest`, "
    "after `pip install .`), or set CONVNET_BACKEND=naive to use the slow layers on purpose"
)
BUILD_HINT = (
    "reinstall from the source tree with `pip install .` on a machine with a C compiler "
    "and the Python headers (set CONVNET_REQUIRE_EXTENSION=1 to make a failed build an error)"
)


def _in_checkout() -> bool:
    return (Path(__file__).resolve().parents[1] / "setup.py").exists()


def _load_kernel() -> tuple[ModuleType | None, str]:
    requested = _environment.backend()
    if requested == "naive":
        return None, "CONVNET_BACKEND=naive is set"
    try:
        from convnet import _im2col
    except ImportError as error:
        if importlib.util.find_spec("convnet._im2col") is None:
            cause = "the compiled kernel convnet._im2col is not installed (it was not built)"
            if _in_checkout():
                cause += (
                    "; this convnet was imported from its source tree: run from another "
                    "directory to use the installed one, or build here with "
                    "`python setup.py build_ext --inplace`"
                )
        else:
            cause = f"the compiled kernel convnet._im2col did not import ({error})"
        if requested == "cython":
            raise ImportError(f"CONVNET_BACKEND=cython but {cause}") from error
        return None, cause
    return _im2col, ""


def _load_companion(name: str) -> ModuleType | None:
    """One of the compiled kernels built beside _im2col (``_winograd``, ``_batchnorm``,
    ``_relu``, ``_channels_last``), or None without it: convolutions then run by im2col,
    batch norm and ReLU in numpy, channels-last images by the contiguous kernels."""
    if kernel is None:
        return None
    try:
        return importlib.import_module(f"convnet.{name}")
    except ImportError:
        return None


kernel, naive_reason = _load_kernel()
winograd_kernel = _load_companion("_winograd")
batchnorm_kernel = _load_companion("_batchnorm")
relu_kernel = _load_companion("_relu")
channels_last_kernel = _load_companion("_channels_last")
# What each compiled kernel runs, and what runs instead without it (for `convnet info`).
KERNELS = {
    "_im2col": ("convolution, pooling", "every fast layer runs the naive layers"),
    "_winograd": ("Winograd 3x3 convolution", "every convolution runs by im2col"),
    "_batchnorm": ("spatial batch norm", "batch norm runs in numpy"),
    "_relu": ("ReLU", "ReLU runs in numpy"),
    "_channels_last": (
        "channels-last convolution, batch norm, ReLU, max pool",
        "channels-last images run the contiguous kernels",
    ),
}


def loaded_kernels() -> dict[str, bool]:
    """Whether each compiled kernel of ``KERNELS`` was loaded."""
    modules = {
        "_im2col": kernel,
        "_winograd": winograd_kernel,
        "_batchnorm": batchnorm_kernel,
        "_relu": relu_kernel,
        "_channels_last": channels_last_kernel,
    }
    return {name: modules[name] is not None for name in KERNELS}


BACKEND = "naive" if kernel is None else "cython"
unbuilt_checkout = kernel is None and "source tree" in naive_reason
_warned = False


def warn_if_naive() -> None:
    """Emit the naive-backend ``RuntimeWarning``, once per process."""
    global _warned
    if kernel is None and not _warned:
        _warned = True
        message = f"convnet is using the slow naive layers: {naive_reason}"
        if naive_reason.startswith("the compiled"):
            message += f"; {BUILD_HINT}"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
