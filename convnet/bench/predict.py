"""Inference beside the deployment engine: predict time of convnet's models in convnet and
in ONNX Runtime (CPU provider, the same threads) running convnet's own exported graph.

Both take the same float32 images (3, 32, 32) and weights; convnet computes
``model.loss(X)`` (the class scores, test mode), ONNX Runtime ``session.run`` on the graph
:func:`convnet.onnx.to_onnx` writes, with its default graph optimizations. onnx and
onnxruntime are imported only here, when the table is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from convnet._parallel import restore_blas_threads, set_num_threads
from convnet.bench.harness import interleaved_medians
from convnet.models import ThreeLayerConvNet, resnet, vgg
from convnet.nn import Classifier

PREDICT_NETWORKS: dict[str, Callable[[], Classifier]] = {
    "3layer": lambda: ThreeLayerConvNet(seed=0),
    "resnet": lambda: resnet((3, 32, 32), seed=0),
    "vgg": lambda: vgg((3, 32, 32), seed=0),
}
PREDICT_BATCHES = (1, 64)
HEADER = (
    "| predict (float32, 3x32x32) | batch | thr | steady: convnet ms | onnxruntime ms "
    "| convnet/ORT | cold: convnet ms | onnxruntime ms | convnet/ORT |"
)


def load_onnxruntime() -> Any:
    """The onnxruntime module, or None (with onnx absent too) when it cannot run."""
    try:
        import onnx  # noqa: F401 - convnet.onnx needs it to export
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def predict_candidates(
    model: Classifier, batch: int, threads: int, onnxruntime: Any, rng: np.random.Generator
) -> dict[str, Callable[[], object]]:
    """Class scores of a batch of random images in convnet and in ONNX Runtime, with
    ``threads`` intra-operator threads and one inter-operator thread."""
    from convnet.onnx import to_onnx

    images = rng.standard_normal((batch, *model.input_dim)).astype(np.float32)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        to_onnx(model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return {
        "convnet": lambda: model.loss(images),
        "onnxruntime": lambda: session.run(None, {"input": images}),
    }


def _cells(times: dict[str, float]) -> str:
    ours, theirs = times["convnet"], times["onnxruntime"]
    return f"{ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}"


def predict_table(args: Any, rng: np.random.Generator) -> list[str]:
    """Print and return the predict table: every network of ``args.predict`` at every
    batch of ``args.predict_batches``, for each thread count, in both regimes (steady:
    ``--steady-calls`` back-to-back calls; cold: one call after ``--cold-pause``)."""
    onnxruntime = load_onnxruntime()
    if onnxruntime is None:
        print('(skipped: needs onnx and onnxruntime, pip install "convnet[onnx]" onnxruntime)')
        return []
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    print("\n".join(lines), flush=True)
    for threads in args.threads:
        set_num_threads(threads)
        restore_blas_threads()  # else a pending restore could lift the limit below
        with threadpool_limits(threads):
            for name in args.predict:
                model = PREDICT_NETWORKS[name]()
                for batch in args.predict_batches:
                    candidates = predict_candidates(model, batch, threads, onnxruntime, rng)
                    steady = interleaved_medians(
                        candidates, args.repeats, args.pause, args.steady_calls
                    )
                    cold = interleaved_medians(candidates, args.repeats, args.cold_pause, 1)
                    row = f"| {name} | {batch} | {threads} | {_cells(steady)} | {_cells(cold)} |"
                    lines.append(row)
                    print(row, flush=True)
    return lines
