"""The (forward, backward) pairs of the naive and the fast layers, by name, for the tests
that run one check over both implementations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convnet.fast_layers import (
    avg_pool_backward_fast,
    avg_pool_forward_fast,
    conv_backward_fast,
    conv_forward_fast,
    conv_transpose_backward_fast,
    conv_transpose_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from convnet.layers import (
    avg_pool_backward_naive,
    avg_pool_forward_naive,
    conv_backward_naive,
    conv_forward_naive,
    conv_transpose_backward_naive,
    conv_transpose_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)

Layer = tuple[Callable[..., Any], Callable[..., Any]]

CONV: dict[str, Layer] = {
    "naive": (conv_forward_naive, conv_backward_naive),
    "fast": (conv_forward_fast, conv_backward_fast),
}
TRANSPOSE: dict[str, Layer] = {
    "naive": (conv_transpose_forward_naive, conv_transpose_backward_naive),
    "fast": (conv_transpose_forward_fast, conv_transpose_backward_fast),
}
MAX_POOL: dict[str, Layer] = {
    "naive": (max_pool_forward_naive, max_pool_backward_naive),
    "fast": (max_pool_forward_fast, max_pool_backward_fast),
}
AVG_POOL: dict[str, Layer] = {
    "naive": (avg_pool_forward_naive, avg_pool_backward_naive),
    "fast": (avg_pool_forward_fast, avg_pool_backward_fast),
}
