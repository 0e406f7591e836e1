"""The process-wide convolution algorithm: convnet.set_conv_algorithm / get_conv_algorithm,
the environment variable CONVNET_CONV_ALGORITHM (in fresh interpreters), the global
'winograd' (where it applies) against conv_param's (strict), nn.Conv2d(algorithm=)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from channels_last_helpers import needs_channels_last
from fresh_interpreter import run_python

import convnet
from convnet import _channels_last_conv, nn
from convnet.fast_layers import conv_algorithm_choice, conv_backward_fast, conv_forward_fast
from convnet.layers import conv_forward_naive
from convnet.memory_format import to_channels_last

THREE_BY_THREE = {"stride": 1, "pad": 1}


def test_set_conv_algorithm_returns_the_previous_choice(restore_conv_algorithm):
    convnet.set_conv_algorithm("auto")
    assert convnet.set_conv_algorithm("im2col") == "auto"
    assert convnet.get_conv_algorithm() == "im2col"
    assert convnet.set_conv_algorithm("winograd") == "im2col"
    assert convnet.get_conv_algorithm() == "winograd"


@pytest.mark.parametrize(
    "bad, error",
    [
        ("fft", ValueError),
        ("IM2COL", ValueError),
        ("", ValueError),
        (None, TypeError),
        (1, TypeError),
        (b"im2col", TypeError),
    ],
)
def test_set_conv_algorithm_refuses_what_it_does_not_know(bad, error, restore_conv_algorithm):
    convnet.set_conv_algorithm("im2col")
    with pytest.raises(error, match="convolution algorithm"):
        convnet.set_conv_algorithm(bad)
    assert convnet.get_conv_algorithm() == "im2col"


@needs_channels_last
def test_the_global_choice_decides_where_conv_param_names_none(restore_conv_algorithm):
    wide = ((2, 16, 8, 8), (16, 16, 3, 3))
    narrow = ((2, 2, 8, 8), (2, 2, 3, 3))
    five = ((2, 16, 8, 8), (16, 16, 5, 5))

    def choice(shapes, memory_format="channels_last", **extra):
        return conv_algorithm_choice(
            *shapes, {**THREE_BY_THREE, **extra}, memory_format=memory_format
        )[0]

    convnet.set_conv_algorithm("im2col")
    assert choice(wide) == "direct-channels-last"
    assert choice(wide, "contiguous") == "im2col"
    assert choice(wide, algorithm="winograd") == "winograd-channels-last"  # conv_param wins
    convnet.set_conv_algorithm("winograd")
    assert choice(narrow) == "winograd-channels-last"  # 'auto' would not
    assert choice(narrow, "contiguous") == "winograd"
    assert choice(five) == "direct-channels-last"  # not strict: 'auto' where it cannot
    assert choice(wide, stride=2) == "direct-channels-last"
    assert choice(wide, algorithm="im2col") == "direct-channels-last"
    with pytest.raises(ValueError, match="algorithm 'winograd' needs"):
        choice(five, algorithm="winograd")  # conv_param's is strict
    convnet.set_conv_algorithm("auto")
    assert choice(narrow) == "direct-channels-last"
    assert choice(wide) == "winograd-channels-last"


@needs_channels_last
@pytest.mark.parametrize("algorithm", ["auto", "im2col", "winograd"])
def test_every_global_choice_computes_the_convolution(algorithm, restore_conv_algorithm):
    """Whatever the global choice, every convolution is right, the strided and 5x5 ones
    that Winograd cannot do included."""
    convnet.set_conv_algorithm(algorithm)
    rng = np.random.default_rng(0)
    for w_shape, param in (
        ((6, 5, 3, 3), THREE_BY_THREE),
        ((6, 5, 5, 5), {"stride": 1, "pad": 2}),
        ((6, 5, 3, 3), {"stride": 2, "pad": 1}),
    ):
        x = rng.standard_normal((2, 5, 9, 9)).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        b = rng.standard_normal(6).astype(np.float32)
        expected, _ = conv_forward_naive(x.astype(float), w.astype(float), b.astype(float), param)
        for x_in in (x, to_channels_last(x)):
            out, _ = conv_forward_fast(x_in, w, b, param)
            np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@needs_channels_last
def test_the_backward_pass_keeps_the_forward_passes_algorithm(restore_conv_algorithm, monkeypatch):
    """Changing the global choice between the passes changes nothing: the cache keeps it."""
    ran = []
    original = _channels_last_conv.winograd_backward
    monkeypatch.setattr(
        _channels_last_conv,
        "winograd_backward",
        lambda *args: ran.append("winograd") or original(*args),
    )
    x = to_channels_last(np.ones((2, 2, 6, 6), np.float32))
    w, b = np.ones((2, 2, 3, 3), np.float32), np.zeros(2, np.float32)
    convnet.set_conv_algorithm("winograd")
    out, cache = conv_forward_fast(x, w, b, THREE_BY_THREE)
    convnet.set_conv_algorithm("im2col")
    conv_backward_fast(np.ones_like(out), cache)
    assert ran == ["winograd"]


def test_conv2d_takes_an_algorithm():
    layer = nn.Conv2d(3, 4, 3, pad=1, algorithm="im2col")
    assert layer.conv_param["algorithm"] == "im2col"
    assert layer.config()["algorithm"] == "im2col"
    assert (
        nn.from_config(json.loads(json.dumps(layer.config()))).conv_param["algorithm"] == "im2col"
    )
    assert "algorithm" not in nn.Conv2d(3, 4, 3).conv_param
    assert "algorithm" not in nn.Conv2d(3, 4, 3).config()
    with pytest.raises(ValueError, match="algorithm"):
        nn.Conv2d(3, 4, 3, algorithm="fft")
    with pytest.raises(TypeError, match="algorithm"):
        nn.Conv2d(3, 4, 3, algorithm=1)


ENVIRONMENT_SCRIPT = """
import json
import convnet
import numpy as np
from convnet.fast_layers import conv_forward_fast
x, w = np.ones((1, 8, 6, 6), np.float32), np.ones((8, 8, 3, 3), np.float32)
b = np.zeros(8, np.float32)
try:
    conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    print(json.dumps({"algorithm": convnet.get_conv_algorithm()}))
except ValueError as error:
    print(json.dumps({"error": str(error)}))
"""


def run_with_environment(value: str | None, tmp_path: Path) -> dict:
    """What a fresh interpreter with CONVNET_CONV_ALGORITHM=value (unset: None) reports
    after its first convolution (it imports this checkout's convnet, from an empty
    directory)."""
    extra = {} if value is None else {"CONVNET_CONV_ALGORITHM": value}
    result = run_python(
        ENVIRONMENT_SCRIPT,
        pythonpath=Path(convnet.__file__).resolve().parents[1],
        cwd=tmp_path,
        unset=("CONVNET_CONV_ALGORITHM",),
        **extra,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "auto"),
        ("", "auto"),
        ("im2col", "im2col"),
        (" Winograd ", "winograd"),
        ("AUTO", "auto"),
    ],
)
def test_the_environment_variable_sets_the_default(value, expected, tmp_path):
    assert run_with_environment(value, tmp_path) == {"algorithm": expected}


def test_a_bad_environment_value_is_an_error_naming_the_variable(tmp_path):
    """import convnet still works; the first convolution says what is wrong."""
    report = run_with_environment("fastest", tmp_path)
    assert "CONVNET_CONV_ALGORITHM" in report["error"] and "fastest" in report["error"]
