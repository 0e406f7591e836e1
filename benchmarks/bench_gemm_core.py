"""Time numpy's OpenBLAS GEMM kernels against each other: OPENBLAS_CORETYPE=A vs B.

OpenBLAS picks its kernels when it loads, so every measurement runs in a fresh
subprocess with the variable set; the core types alternate round by round and the
table shows medians. Measured: float32 GEMM GFLOP/s on one thread and on all threads
((64x576)@(576x256), the shape of convnet's per-chunk conv GEMMs, and a square 1024^3),
and a fast convolution forward+backward (case c of ``convnet bench``, 2 threads).

    python benchmarks/bench_gemm_core.py --cores Haswell,SkylakeX --rounds 5

Unlike the other scripts it never picks a core type itself: it compares them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from convnet._blas_core import cpu_name

PROBE = "probe"
GEMM_SHAPES = {"64x576x256": (64, 576, 256), "1024^3": (1024, 1024, 1024)}


def gflops(m: int, k: int, n: int, seconds: float) -> float:
    return 2 * m * k * n / seconds / 1e9


def median_seconds(run, duration: float = 0.3) -> float:
    """Median time of single calls made back to back for about ``duration`` seconds
    (a median, because this shared machine stalls a call for milliseconds now and then)."""
    run()
    samples = []
    stop = time.perf_counter() + duration
    while time.perf_counter() < stop or len(samples) < 5:
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def probe() -> dict[str, float | str]:
    """Measure in this process (its OpenBLAS core was fixed when numpy loaded)."""
    from threadpoolctl import threadpool_limits

    from convnet._blas_core import openblas_cores
    from convnet._memory import keep_freed_memory
    from convnet.fast_layers import conv_backward_fast, conv_forward_fast

    keep_freed_memory()
    rng = np.random.default_rng(0)
    result: dict[str, float | str] = {"core": ",".join(openblas_cores())}
    for name, (m, k, n) in GEMM_SHAPES.items():
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        for threads in (1, 2):
            with threadpool_limits(threads):
                seconds = median_seconds(lambda a=a, b=b: a @ b)
            result[f"{name} {threads}t"] = gflops(m, k, n, seconds)
    x = rng.standard_normal((64, 64, 16, 16)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    bias = np.zeros(64, dtype=np.float32)
    dout = rng.standard_normal((64, 64, 16, 16)).astype(np.float32)

    def conv() -> None:
        _, cache = conv_forward_fast(x, w, bias, {"stride": 1, "pad": 1})
        conv_backward_fast(dout, cache)

    result["conv c f+b ms"] = 1e3 * median_seconds(conv)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default="Haswell,SkylakeX", help="core types to compare")
    parser.add_argument("--rounds", type=int, default=5, help="subprocesses per core type")
    args = parser.parse_args(argv)
    cores = [core for core in args.cores.split(",") if core]
    results: dict[str, list[dict]] = {core: [] for core in cores}
    for _ in range(args.rounds):
        for core in cores:
            env = {**os.environ, "OPENBLAS_CORETYPE": core}
            output = subprocess.run(
                [sys.executable, __file__, PROBE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[core].append(json.loads(output))
    keys = [key for key in results[cores[0]][0] if key != "core"]
    print(f"median of {args.rounds} processes per core type; CPU: {cpu_name()}")
    print(
        "| OPENBLAS_CORETYPE | runs | "
        + " | ".join(f"{key} GFLOP/s" if "ms" not in key else key for key in keys)
        + " |"
    )
    print("|---|---|" + "---|" * len(keys))
    for core, runs in results.items():
        medians = [float(np.median([run[key] for run in runs])) for key in keys]
        print(f"| {core} | {runs[0]['core']} | " + " | ".join(f"{v:.1f}" for v in medians) + " |")


if __name__ == "__main__":
    if sys.argv[1:] == [PROBE]:
        print(json.dumps(probe()))
    else:
        main()
