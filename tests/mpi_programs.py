"""Programs that tests/test_distributed.py runs under ``mpiexec``:
``python -m mpi4py mpi_programs.py NAME ...``.

Each check asserts on every rank; a failed assertion on any rank ends every rank at once
with a non-zero exit (the Solver's abort on error inside ``train``, ``python -m mpi4py``'s
``MPI_Abort`` anywhere else), and a passing rank prints ``ok <rank>``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from convnet.distributed import Ranks, running_statistics, set_running_statistics
from convnet.layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
)
from convnet.models import FullyConnectedNet, ThreeLayerConvNet
from convnet.solver import Solver

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()


def _data(num_train: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "X_train": rng.standard_normal((num_train, 1, 6, 6)),
        "y_train": rng.integers(0, 3, num_train),
        "X_val": rng.standard_normal((7, 1, 6, 6)),
        "y_val": rng.integers(0, 3, 7),
    }


def _conv_net(seed: int) -> ThreeLayerConvNet:
    return ThreeLayerConvNet(
        input_dim=(1, 6, 6),
        num_filters=3,
        filter_size=3,
        hidden_dim=5,
        num_classes=3,
        dtype=np.float64,
        init="he",
        seed=seed,
        reg=0.01,
    )


def _solver(model: Any, data: dict[str, np.ndarray], comm: Any, **options: Any) -> Solver:
    settings = {
        "update_rule": "adam",
        "optim_config": {"learning_rate": 1e-2},
        "batch_size": 2,
        "num_epochs": 2,
        "progress": False,
        "num_train_samples": 5,
    }
    return Solver(model, data, comm=comm, **{**settings, **options})


def _assert_close(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        scale = max(float(np.max(np.abs(value))), 1e-300)
        error = float(np.max(np.abs(actual[name] - value))) / scale
        assert error < 1e-10, f"rank {RANK}: {name} differs by {error:.3g} relative"


def uneven_slices() -> None:
    """Batches of 2 images over 3 ranks (shares 0, 1, 1 and a last batch of 1) train
    as one process does, from a model each rank built with another seed."""
    data = _data(11)
    alone = _solver(_conv_net(seed=0), data, None)
    alone.train()
    together = _solver(_conv_net(seed=RANK), data, COMM)
    assert np.array_equal(together.model.params["W1"], _conv_net(seed=0).params["W1"])
    together.train()
    _assert_close(together.model.params, alone.model.params)
    assert together.epoch == alone.epoch and together.iteration == alone.iteration == 12
    np.testing.assert_allclose(together.loss_history, alone.loss_history, rtol=1e-10)
    assert together.val_acc_history == alone.val_acc_history
    for history in ("epoch_loss_history", "val_loss_history"):
        np.testing.assert_allclose(getattr(together, history), getattr(alone, history), rtol=1e-10)
    assert together.train_acc_history == alone.train_acc_history
    for num_samples in (None, 4):
        expected = alone.check_accuracy(data["X_val"], data["y_val"], num_samples=num_samples)
        actual = together.check_accuracy(data["X_val"], data["y_val"], num_samples=num_samples)
        assert actual == expected, (actual, expected)


def disagreeing_data() -> None:
    """Ranks given data of different shapes all refuse it with the same ValueError."""
    try:
        _solver(_conv_net(seed=0), _data(10 + RANK), COMM)
    except ValueError as error:
        assert "the ranks disagree on the shapes of the data" in str(error), error
    else:
        raise AssertionError("no ValueError")


def dropout_streams() -> None:
    """Each rank draws its own masks, rank r's stream is rank 0's jumped r times, and
    two runs from the same seed train to the same parameters."""
    data = _data(12)

    def model() -> FullyConnectedNet:
        return FullyConnectedNet(
            [8], input_dim=36, num_classes=3, dropout=0.5, seed=3, fresh_masks=True
        )

    fresh = model()
    solver = _solver(model(), data, COMM)
    stream = fresh._dropout_rng.bit_generator
    expected = stream.jumped(RANK).state if RANK else stream.state
    assert solver.model._dropout_rng.bit_generator.state == expected
    first_draws = COMM.allgather(float(model()._dropout_rng.random()))
    assert len(set(first_draws)) == 1
    draws = COMM.allgather(solver.model._dropout_rng.random(4).tolist())
    assert all(draws[r] != draws[0] for r in range(1, SIZE))
    runs = []
    for _ in range(2):
        run = _solver(model(), data, COMM)
        run.train()
        runs.append(run.model.params)
    _assert_close(runs[1], runs[0])


def cs231n_running_statistics() -> None:
    """Every running_* array of a CS231n-style model's bn_params is averaged over the ranks
    (as new arrays of the same dtype; other keys and dicts left alone)."""
    model = _BatchNormNet()
    model.bn_params = [
        {"mode": "train", "running_mean": np.full(3, float(RANK)), "eps": 1e-5},
        {"mode": "train", "running_var": np.full((2, 2), RANK + 1.0, dtype=np.float32)},
        {"mode": "train"},
    ]
    states = model.bn_params
    Ranks(COMM).average_statistics(model)
    np.testing.assert_array_equal(states[0]["running_mean"], np.full(3, (SIZE - 1) / 2))
    assert states[1]["running_var"].dtype == np.float32
    np.testing.assert_array_equal(states[1]["running_var"], np.full((2, 2), (SIZE + 1) / 2))
    assert states[0]["eps"] == 1e-5 and set(states[2]) == {"mode"}


class _BatchNormNet:
    """affine - batch norm - relu - affine - softmax: a model exposing ``bn_params``."""

    def __init__(self) -> None:
        rng = np.random.default_rng(5)
        self.params = {
            "W1": rng.standard_normal((36, 6)) * 0.3,
            "gamma1": np.ones(6),
            "beta1": np.zeros(6),
            "W2": rng.standard_normal((6, 3)) * 0.3,
        }
        self.bn_params = [{"mode": "train", "momentum": 0.5}]

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        p, zero = self.params, np.zeros(6)
        hidden, affine_cache = affine_forward(X.reshape(len(X), -1), p["W1"], zero)
        self.bn_params[0]["mode"] = "test" if y is None else "train"
        normal, bn_cache = batchnorm_forward(hidden, p["gamma1"], p["beta1"], self.bn_params[0])
        active, relu_cache = relu_forward(normal)
        scores, scores_cache = affine_forward(active, p["W2"], np.zeros(3))
        if y is None:
            return scores
        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dactive, grads["W2"], _ = affine_backward(dscores, scores_cache)
        dhidden, grads["gamma1"], grads["beta1"] = batchnorm_backward(
            relu_backward(dactive, relu_cache), bn_cache
        )
        _, grads["W1"], _ = affine_backward(dhidden, affine_cache)
        return loss, grads


def batch_norm_statistics() -> None:
    """The Solver starts every rank from rank 0's running statistics and averages them over
    the ranks before every evaluation, for convnet's FullyConnectedNet (model.buffers())
    and a CS231n-style model (bn_params)."""
    convnet_model = FullyConnectedNet(
        [6, 5], input_dim=36, num_classes=3, normalization="batchnorm", seed=1
    )
    for model in (convnet_model, _BatchNormNet()):
        set_running_statistics(
            model, {name: value + RANK for name, value in running_statistics(model).items()}
        )
        at_rank_0 = COMM.bcast(running_statistics(model))
        solver = _solver(model, _data(30), COMM, batch_size=12, num_epochs=2)
        assert running_statistics(model).keys() == at_rank_0.keys()
        for name, value in running_statistics(model).items():
            np.testing.assert_array_equal(value, at_rank_0[name])

        averaging = solver.ranks.average_statistics
        before: list[dict[str, np.ndarray]] = []

        def record(model: Any, averaging: Any = averaging, before: list = before) -> None:
            before.append({k: v.copy() for k, v in running_statistics(model).items()})
            averaging(model)
            for name, value in before[-1].items():
                expected = np.mean(COMM.allgather(value), axis=0)
                np.testing.assert_allclose(running_statistics(model)[name], expected, rtol=1e-6)

        solver.ranks.average_statistics = record
        solver.train()
        assert len(before) == 2
        name = sorted(before[0])[0]
        differing = COMM.allgather(before[0][name])
        assert any(not np.array_equal(differing[0], other) for other in differing[1:])
        final = COMM.allgather(running_statistics(solver.model))
        for name in final[0]:
            assert all(np.array_equal(final[0][name], other[name]) for other in final[1:])


def resumed_best_statistics() -> None:
    """A run resumed from rank 0's checkpoint gives every rank rank 0's best parameters
    and the running statistics that went with them."""
    data = _data(30)

    def model() -> FullyConnectedNet:
        return FullyConnectedNet([6], input_dim=36, num_classes=3, normalization="batchnorm")

    directory = COMM.bcast(tempfile.mkdtemp() if RANK == 0 else None)
    if RANK == 0:
        _solver(model(), data, None, batch_size=12, num_epochs=1, checkpoint_dir=directory).train()
    COMM.Barrier()
    solver = _solver(model(), data, COMM, resume_from=Path(directory) / "checkpoint.npz")
    for snapshot in (solver.best_params, solver.best_buffers):
        assert snapshot
        at_rank_0 = COMM.bcast(snapshot)
        for name, value in snapshot.items():
            np.testing.assert_array_equal(value, at_rank_0[name])
    COMM.Barrier()
    if RANK == 0:
        shutil.rmtree(directory)


class _Failing(ThreeLayerConvNet):
    """A conv net whose loss fails on the last rank at its third call."""

    def __init__(self, failure: str) -> None:
        super().__init__(input_dim=(1, 6, 6), num_filters=2, filter_size=3, hidden_dim=4)
        self.failure, self.calls = failure, 0

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        self.calls += 1
        if RANK == SIZE - 1 and y is not None and self.calls == 3:
            if self.failure == "interrupt":
                os.kill(os.getpid(), signal.SIGINT)
            raise RuntimeError(f"boom on rank {RANK}")
        return super().loss(X, y)


def failing_rank() -> None:
    """The last rank raises while the others wait in the Allreduce."""
    _solver(_Failing("error"), _data(40), COMM, num_epochs=1000).train()


def interrupted_rank() -> None:
    """The last rank gets a SIGINT (Ctrl-C) while the others wait in the Allreduce."""
    _solver(_Failing("interrupt"), _data(40), COMM, num_epochs=1000).train()


PROGRAMS = {
    function.__name__: function
    for function in (
        uneven_slices,
        disagreeing_data,
        dropout_streams,
        cs231n_running_statistics,
        batch_norm_statistics,
        resumed_best_statistics,
        failing_rank,
        interrupted_rank,
    )
}

if __name__ == "__main__":
    for name in sys.argv[1:]:
        PROGRAMS[name]()
    print(f"ok {RANK}", flush=True)
