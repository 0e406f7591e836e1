"""Every compiled path with strides, pads and dilations up to 2**31 - 1 on tiny inputs:
the right answer or a ValueError, never a crash (tests/huge_geometry_programs.py runs the
properties in a child process, so a crash fails the test instead of killing pytest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convnet
from convnet import _backend, fast_layers
from convnet._validation import MEMORY_BYTES

PROGRAMS = Path(__file__).with_name("huge_geometry_programs.py")
ROOT = Path(convnet.__file__).resolve().parents[1]
needs_kernel = pytest.mark.skipif(_backend.kernel is None, reason="needs the compiled kernel")


@needs_kernel
@pytest.mark.parametrize(
    "family",
    ["reported", "conv", "depthwise", "winograd", "phases", "transposed", "pool", "elementwise"],
)
def test_huge_geometry_gives_the_right_answer_or_a_value_error(family: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(PROGRAMS.parent)])}
    result = subprocess.run(
        [sys.executable, str(PROGRAMS), family],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"status {result.returncode}\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith(f"ok {family} "), result.stdout


def test_the_reported_depthwise_pads_run_by_im2col() -> None:
    """Pads far beyond the image would make the depthwise loops' padded planes overflow:
    im2col runs them (its padding is virtual); "reported" above checks the answer."""
    conv_param = {
        "stride": 2**31 - 1,
        "pad": (2**31 - 1, 2147483629),
        "dilation": (1431655777, 1073742463),
        "groups": 2,
    }
    choice = fast_layers.conv_algorithm_choice((1, 2, 38, 2), (2, 1, 4, 3), conv_param)
    assert choice == ("im2col", 0)


def test_depthwise_convolutions_with_ordinary_pads_keep_their_direct_loops() -> None:
    for pad, dilation in ((1, 1), (4, 4), (40, 1)):
        conv_param = {"stride": 1, "pad": pad, "dilation": dilation, "groups": 64}
        choice = fast_layers.conv_algorithm_choice((8, 64, 16, 16), (64, 1, 3, 3), conv_param)
        assert choice == ("direct", 0), (pad, dilation)


@pytest.mark.parametrize(
    ("forward", "args"),
    [
        (
            fast_layers.conv_forward_fast,
            (
                np.ones((1, 1, 2, 2)),
                np.ones((1, 1, 1, 1)),
                np.zeros(1),
                {"stride": 1, "pad": 2**30},
            ),
        ),
        (
            fast_layers.conv_transpose_forward_fast,
            (
                np.ones((1, 1, 2, 2)),
                np.ones((1, 1, 1, 1)),
                np.zeros(1),
                {"stride": 2**30, "pad": 0},
            ),
        ),
        (
            convnet.layers.conv_forward_naive,
            (
                np.ones((1, 1, 2, 2)),
                np.ones((1, 1, 1, 1)),
                np.zeros(1),
                {"stride": 1, "pad": 2**30},
            ),
        ),
    ],
)
def test_an_output_larger_than_memory_is_a_value_error_before_any_allocation(forward, args) -> None:
    with pytest.raises(ValueError, match="more than this machine's memory"):
        forward(*args)


def test_memory_bound_is_this_machines() -> None:
    assert 2**20 < MEMORY_BYTES <= sys.maxsize
