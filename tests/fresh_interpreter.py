"""Running code in a fresh Python interpreter, for the tests of what happens at import, under
environment variables, or with many threads (test_backend.py, test_channels_last_threads.py,
test_conv_algorithm_setting.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_python(
    code: str, *, pythonpath: Path, cwd: Path, unset: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that finds convnet only under ``pythonpath``,
    without ``CONVNET_BACKEND`` and the variables in ``unset``, with ``env`` added."""
    child_env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("CONVNET_BACKEND", "PYTHONPATH", *unset)
    }
    child_env.update(env, PYTHONPATH=str(pythonpath))
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
