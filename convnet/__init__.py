"""convnet: small, readable, fast CPU convolutional-network layers.

``convnet.layers`` holds the reference layers, ``convnet.fast_layers`` the compiled fast
path (with a fallback to the reference when the extension is not built).
``convnet.BACKEND`` says which one runs; :func:`show_config` prints the details.

The backend is chosen when it is first needed (``convnet.BACKEND``, :func:`show_config`,
or importing a module that computes), not by ``import convnet`` itself: so the
``convnet`` command can report a bad ``CONVNET_BACKEND`` in one line.
"""

from typing import Any

from convnet._conv_setting import get_conv_algorithm, set_conv_algorithm
from convnet._memory import keep_freed_memory
from convnet._parallel import (
    get_num_threads,
    restore_blas_threads,
    set_num_threads,
    single_threaded_blas,
)
from convnet._version import __version__

__all__ = [
    "BACKEND",
    "__version__",
    "config_info",
    "get_conv_algorithm",
    "get_num_threads",
    "keep_freed_memory",
    "restore_blas_threads",
    "set_conv_algorithm",
    "set_num_threads",
    "show_config",
    "single_threaded_blas",
]


def __getattr__(name: str) -> Any:
    """``BACKEND``, ``config_info`` and ``show_config``, loaded with the backend on first use."""
    if name == "BACKEND":
        from convnet._backend import BACKEND

        return BACKEND
    if name in ("config_info", "show_config"):
        from convnet import _config

        return getattr(_config, name)
    raise AttributeError(f"module 'convnet' has no attribute {name!r}")
