"""What keep_freed_memory saves: a ThreeLayerConvNet training step with and without it.

glibc's malloc setting is process-wide and cannot be undone, so each setting runs in its
own subprocess, alternating. One thread and CPU time (not wall time), so that a busy
machine does not blur the comparison; page faults are counted with getrusage.

    python benchmarks/bench_malloc.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

STEPS = 40
SETTINGS = ("keep_freed_memory", "glibc default")


def probe(setting: str) -> dict[str, float]:
    """CPU ms, minor page faults and system ms per step, measured in this process."""
    from threadpoolctl import threadpool_limits

    import convnet
    from convnet.bench.train_step import CONVNET, train_step_candidates

    if setting == SETTINGS[0]:
        convnet.keep_freed_memory()
    convnet.set_num_threads(1)
    rng = np.random.default_rng(0)
    step = train_step_candidates("3layer", 50, np.dtype(np.float32), None, rng)[CONVNET]
    with threadpool_limits(1):
        for _ in range(5):
            step()
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        for _ in range(STEPS):
            step()
        cpu, after = time.process_time() - started, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_ms": 1e3 * cpu / STEPS,
        "faults": (after.ru_minflt - before.ru_minflt) / STEPS,
        "sys_ms": 1e3 * (after.ru_stime - before.ru_stime) / STEPS,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="subprocesses per setting")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {setting: [] for setting in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            output = subprocess.run(
                [sys.executable, __file__, "--probe", setting],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[setting].append(json.loads(output))
    print(
        f"ThreeLayerConvNet training step, batch 50, float32, 1 thread: median of "
        f"{args.rounds} processes x {STEPS} steps"
    )
    print("| malloc | CPU ms/step | page faults/step | system ms/step |")
    print("|---|---|---|---|")
    for setting, runs in results.items():
        cpu, faults, system = (np.median([run[key] for run in runs]) for key in runs[0])
        print(f"| {setting} | {cpu:.2f} | {faults:.0f} | {system:.2f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        print(json.dumps(probe(sys.argv[2])))
    else:
        from convnet._blas_core import use_fast_core

        use_fast_core()
        main()
