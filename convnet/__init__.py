"""convnet: small, readable, fast CPU convolutional-network layers.

``convnet.layers`` holds the reference layers, ``convnet.fast_layers`` the compiled fast
path (with a fallback to the reference when the extension is not built).
``convnet.BACKEND`` says which one runs; :func:`show_config` prints the details.
"""

from convnet._backend import BACKEND
from convnet._config import config_info, show_config
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
    "get_num_threads",
    "keep_freed_memory",
    "restore_blas_threads",
    "set_num_threads",
    "show_config",
    "single_threaded_blas",
]
