"""Tests of the training loop: learning, determinism, exact resume, safe checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convnet import checkpoint as checkpoint_module
from convnet import solver as solver_module
from convnet.layers import affine_backward, affine_forward, softmax_loss
from convnet.optim import UPDATE_RULES
from convnet.solver import CHECKPOINT_NAME, Solver, TrainingDiverged, evaluate


class SoftmaxRegression:
    """The smallest model with the Solver's interface: scores = X W + b."""

    def __init__(self, input_dim: int, num_classes: int, seed: int = 0, reg: float = 1e-3):
        rng = np.random.default_rng(seed)
        self.params = {
            "W": 0.01 * rng.standard_normal((input_dim, num_classes)),
            "b": np.zeros(num_classes),
        }
        self.reg = reg

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        scores, cache = affine_forward(X, self.params["W"], self.params["b"])
        if y is None:
            return scores
        loss, dscores = softmax_loss(scores, y)
        _, dW, db = affine_backward(dscores, cache)
        W = self.params["W"]
        loss += 0.5 * self.reg * float(np.sum(W * W))
        return loss, {"W": dW + self.reg * W, "b": db}


class Sabotaged:
    """Wrap a model; the ``fail_at``-th training call misbehaves (NaN loss or an exception)."""

    def __init__(self, model: SoftmaxRegression, fail_at: int, failure: Any) -> None:
        self.model = model
        self.params = model.params
        self.fail_at = fail_at
        self.failure = failure
        self.calls = 0

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        if y is None:
            return self.model.loss(X)
        self.calls += 1
        loss, grads = self.model.loss(X, y)
        if self.calls == self.fail_at:
            if isinstance(self.failure, BaseException):
                raise self.failure
            return self.failure, grads
        return loss, grads


def blobs(num_train: int = 240, num_val: int = 80, dim: int = 6, classes: int = 4) -> dict:
    """Well separated Gaussian clusters: an easy problem, in float64."""
    rng = np.random.default_rng(7)
    centres = 4.0 * rng.standard_normal((classes, dim))
    data = {}
    for split, size in (("train", num_train), ("val", num_val)):
        y = rng.integers(0, classes, size)
        data[f"X_{split}"] = centres[y] + rng.standard_normal((size, dim))
        data[f"y_{split}"] = y
    return data


def make_solver(data: dict, model: Any = None, **options: Any) -> Solver:
    settings = {
        "update_rule": "adam",
        "optim_config": {"learning_rate": 5e-2},
        "batch_size": 32,
        "num_epochs": 3,
        "num_train_samples": 100,
        "progress": False,
    }
    settings.update(options)
    return Solver(model or SoftmaxRegression(6, 4), data, **settings)


def test_loss_decreases_and_best_parameters_are_restored() -> None:
    data = blobs()
    solver = make_solver(data, num_epochs=5, lr_decay=0.9)
    history = solver.train()
    losses = history["loss_history"]
    assert len(losses) == 5 * 8
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3])
    assert len(history["train_acc_history"]) == len(history["val_acc_history"]) == 5
    assert history["best_val_acc"] == max(history["val_acc_history"]) >= 0.95
    assert solver.check_accuracy(data["X_val"], data["y_val"]) == history["best_val_acc"]
    for name, value in solver.best_params.items():
        np.testing.assert_array_equal(solver.model.params[name], value)
    assert solver.optim_configs["W"]["learning_rate"] == pytest.approx(5e-2 * 0.9**5)
    assert solver.images_per_second > 0


def test_same_seed_gives_the_same_run_and_another_seed_does_not() -> None:
    data = blobs()
    first = make_solver(data, seed=3).train()
    again = make_solver(data, seed=3).train()
    other = make_solver(data, seed=4).train()
    assert first == again
    assert first["loss_history"] != other["loss_history"]


def params_of(solver: Solver) -> dict[str, np.ndarray]:
    return {name: value.copy() for name, value in solver.model.params.items()}


@pytest.mark.parametrize("rule", sorted(UPDATE_RULES))
def test_two_epochs_then_resume_equals_four_epochs(tmp_path: Path, rule: str) -> None:
    data = blobs()
    options = {"update_rule": rule, "optim_config": {"learning_rate": 1e-2}, "lr_decay": 0.8}
    straight = make_solver(data, num_epochs=4, **options)
    straight.train()

    first_half = make_solver(data, num_epochs=2, checkpoint_dir=tmp_path, **options)
    first_half.train()
    fresh_model = SoftmaxRegression(6, 4, seed=99)
    resumed = make_solver(
        data, fresh_model, num_epochs=4, resume_from=tmp_path / CHECKPOINT_NAME, **options
    )
    assert resumed.epoch == 2
    resumed.train()

    assert resumed.history == straight.history
    assert resumed.iteration == straight.iteration == 4 * 8
    for name, value in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value)
    for name, config in straight.optim_configs.items():
        assert config.keys() == resumed.optim_configs[name].keys()
        for key, value in config.items():
            np.testing.assert_array_equal(resumed.optim_configs[name][key], value)


def test_checkpoint_is_written_every_epoch_without_leftovers(tmp_path: Path) -> None:
    data = blobs()
    solver = make_solver(data, num_epochs=2, checkpoint_dir=tmp_path / "run")
    solver.train()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [CHECKPOINT_NAME]
    loaded = make_solver(data, resume_from=tmp_path / "run" / CHECKPOINT_NAME)
    assert (loaded.epoch, loaded.iteration) == (2, 16)
    assert loaded.history == solver.history
    assert loaded.rng.bit_generator.state == solver.rng.bit_generator.state


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    data = blobs()
    solver = make_solver(data, num_epochs=1, checkpoint_dir=tmp_path)
    solver.train()
    checkpoint = tmp_path / CHECKPOINT_NAME
    before = checkpoint.read_bytes()

    def write_half_then_fail(handle: Any, arrays: dict) -> None:
        handle.write(b"PK\x03\x04 half a zip file")
        raise failure

    monkeypatch.setattr(checkpoint_module, "_write_arrays", write_half_then_fail)
    solver.num_epochs = 2
    with pytest.raises(type(failure)):
        solver.train()
    assert checkpoint.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_interrupted_training_resumes_on_the_same_trajectory(tmp_path: Path) -> None:
    data = blobs()
    straight = make_solver(data)
    straight.train()

    interrupted = make_solver(
        data, Sabotaged(SoftmaxRegression(6, 4), 12, KeyboardInterrupt()), checkpoint_dir=tmp_path
    )
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    resumed = make_solver(data, SoftmaxRegression(6, 4), resume_from=tmp_path / CHECKPOINT_NAME)
    assert resumed.epoch == 1
    resumed.train()
    assert resumed.history == straight.history


@pytest.mark.parametrize("bad_loss", [np.nan, np.inf])
def test_non_finite_loss_names_epoch_and_iteration(tmp_path: Path, bad_loss: float) -> None:
    data = blobs()
    model = Sabotaged(SoftmaxRegression(6, 4), 8 + 3, bad_loss)
    solver = make_solver(data, model, checkpoint_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, iteration 3") as caught:
        solver.train()
    assert (caught.value.epoch, caught.value.iteration) == (2, 3)
    assert str(tmp_path / CHECKPOINT_NAME) in str(caught.value)
    after_one_epoch = make_solver(data, resume_from=tmp_path / CHECKPOINT_NAME)
    assert after_one_epoch.epoch == 1
    assert len(after_one_epoch.loss_history) == 8


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    make_solver(blobs(), num_epochs=1, checkpoint_dir=tmp_path).train()
    return tmp_path / CHECKPOINT_NAME


def test_unreadable_checkpoints_raise_value_error(checkpoint: Path, tmp_path: Path) -> None:
    data = blobs()
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a checkpoint")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(checkpoint.read_bytes()[:300])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, W=np.zeros(3))
    for path in (garbage, truncated, foreign):
        with pytest.raises(ValueError, match="not a readable convnet checkpoint"):
            make_solver(data, resume_from=path)
    with pytest.raises(FileNotFoundError):
        make_solver(data, resume_from=tmp_path / "missing.npz")


def test_checkpoint_for_another_model_or_rule_is_refused(checkpoint: Path) -> None:
    data = blobs()
    with pytest.raises(ValueError, match="parameter W"):
        bigger = SoftmaxRegression(6, 5)
        make_solver(data, bigger, resume_from=checkpoint)
    with pytest.raises(ValueError, match="update rule 'adam'"):
        make_solver(data, update_rule="sgd", resume_from=checkpoint)


def test_check_accuracy_subsamples_and_validates() -> None:
    data = blobs()
    solver = make_solver(data)
    assert solver.check_accuracy(data["X_val"], data["y_val"], num_samples=10) in {
        k / 10 for k in range(11)
    }
    with pytest.raises(ValueError):
        solver.check_accuracy(data["X_val"][:0], data["y_val"][:0])
    predictions = solver.predict(data["X_val"], batch_size=7)
    assert predictions.shape == (80,) and predictions.dtype == np.int64
    np.testing.assert_array_equal(predictions, np.argmax(solver.model.loss(data["X_val"]), axis=1))
    assert solver.predict(data["X_val"][:0]).dtype == np.int64


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"update_rule": "lbfgs"}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"num_epochs": -1}, ValueError),
        ({"lr_decay": 0.0}, ValueError),
        ({"num_train_samples": 0}, ValueError),
    ],
)
def test_bad_options_are_refused(options: dict, error: type) -> None:
    with pytest.raises(error):
        make_solver(blobs(), **options)


def test_bad_data_is_refused() -> None:
    data = blobs()
    with pytest.raises(ValueError, match="y_val"):
        make_solver({key: data[key] for key in ("X_train", "y_train", "X_val")})
    with pytest.raises(TypeError, match="integer labels"):
        make_solver({**data, "y_train": data["y_train"].astype(float)})
    with pytest.raises(ValueError, match="X_train"):
        make_solver({**data, "y_train": data["y_train"][:-1]})


def test_progress_bar_and_verbose_output(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tqdm")
    monkeypatch.setattr(solver_module, "stderr_is_interactive", lambda: True)
    make_solver(blobs(), num_epochs=2, progress=True, verbose=True, print_every=5).train()
    captured = capsys.readouterr()
    assert "img/s=" in captured.err
    assert "epoch 2/2" in captured.out + captured.err
    assert "iteration 15: loss" in captured.out + captured.err


def test_no_progress_bar_in_redirected_output(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("tqdm")
    assert not solver_module.stderr_is_interactive()  # pytest captures stderr: not a terminal
    make_solver(blobs(), num_epochs=1, progress=True).train()
    assert capsys.readouterr().err == ""


def test_epoch_loss_is_the_mean_of_the_epoch_and_val_loss_is_recorded() -> None:
    data = blobs()
    solver = make_solver(data, num_epochs=2)
    solver.train()
    losses = solver.loss_history
    assert len(losses) == 16
    np.testing.assert_allclose(
        solver.epoch_loss_history, [np.mean(losses[:8]), np.mean(losses[8:])]
    )
    assert len(solver.val_loss_history) == 2 and all(v > 0 for v in solver.val_loss_history)
    accuracy, loss = evaluate(solver.model, data["X_val"], data["y_val"])
    assert accuracy == solver.check_accuracy(data["X_val"], data["y_val"])
    scores = solver.model.loss(data["X_val"])
    probabilities = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probabilities[np.arange(len(scores)), data["y_val"]]))
    assert loss == pytest.approx(expected, rel=1e-10)


class Exploding(SoftmaxRegression):
    """Its ``fail_at``-th training loss is ``factor`` times its first one (finite)."""

    def __init__(self, fail_at: int, factor: float) -> None:
        super().__init__(6, 4)
        self.fail_at, self.factor, self.calls, self.first = fail_at, factor, 0, 0.0

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        if y is None:
            return super().loss(X)
        self.calls += 1
        loss, grads = super().loss(X, y)
        self.first = self.first or loss
        return (self.factor * self.first if self.calls == self.fail_at else loss), grads


def test_an_exploding_loss_stops_training_naming_epoch_and_iteration() -> None:
    with pytest.raises(TrainingDiverged, match=r"epoch 2, iteration 5 .*10000 times the first"):
        make_solver(blobs(), Exploding(8 + 5, 1.01e4)).train()
    make_solver(blobs(), Exploding(8 + 5, 0.99e4)).train()  # below the limit: no error
    with pytest.raises(TrainingDiverged, match=r"epoch 1, iteration 3 .*10 times"):
        make_solver(blobs(), Exploding(3, 11.0), divergence_factor=10).train()


class ScriptedLoss(SoftmaxRegression):
    """Its training losses are ``losses`` in turn (then the last again), its gradients real."""

    def __init__(self, losses: list[float]) -> None:
        super().__init__(6, 4)
        self.losses, self.calls = losses, 0

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        if y is None:
            return super().loss(X)
        _, grads = super().loss(X, y)
        self.calls += 1
        return self.losses[min(self.calls, len(self.losses)) - 1], grads


def test_a_tiny_first_loss_does_not_make_normal_losses_look_divergent() -> None:
    from convnet.solver import DIVERGENCE_FLOOR

    assert DIVERGENCE_FLOOR == 1.0
    # 1e-7 first, then 0.5: 5 million times the first, but an ordinary loss
    solver = make_solver(blobs(), ScriptedLoss([1e-7, 0.5, 3.0, 0.2]), num_epochs=1)
    solver.train()
    assert solver.loss_history[:4] == [1e-7, 0.5, 3.0, 0.2]
    # the floor is the reference then: more than 10,000 times 1.0 still stops training
    with pytest.raises(TrainingDiverged, match=r"epoch 1, iteration 3 .*10000 times"):
        make_solver(blobs(), ScriptedLoss([1e-7, 0.5, 1.01e4])).train()
    # a first loss above the floor stays the reference
    with pytest.raises(TrainingDiverged, match=r"iteration 2 .*10000 times the first loss 2"):
        make_solver(blobs(), ScriptedLoss([2.0, 2.01e4])).train()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_with_library_models_and_dropout(tmp_path: Path, dtype: type) -> None:
    from convnet.models import FullyConnectedNet, ThreeLayerConvNet

    rng = np.random.default_rng(1)
    images = {
        f"X_{split}": rng.standard_normal((size, 1, 6, 6)).astype(dtype)
        for split, size in (("train", 40), ("val", 20))
    }
    data = {**images, "y_train": rng.integers(0, 3, 40), "y_val": rng.integers(0, 3, 20)}
    builders = [
        lambda: FullyConnectedNet(
            [8], input_dim=36, num_classes=3, dropout=0.5, dtype=dtype, seed=2, fresh_masks=True
        ),
        lambda: ThreeLayerConvNet(
            (1, 6, 6),
            num_filters=2,
            filter_size=3,
            hidden_dim=5,
            num_classes=3,
            dtype=dtype,
            seed=2,
        ),
    ]
    for index, build in enumerate(builders):
        options = {"batch_size": 16, "num_epochs": 3, "num_train_samples": 20}
        straight = make_solver(data, build(), **options)
        straight.train()
        directory = tmp_path / str(index)
        make_solver(data, build(), **{**options, "num_epochs": 1}, checkpoint_dir=directory).train()
        resumed = make_solver(data, build(), **options, resume_from=directory / CHECKPOINT_NAME)
        resumed.train()
        assert resumed.history == straight.history
        for name, value in straight.model.params.items():
            assert value.dtype == dtype
            np.testing.assert_array_equal(resumed.model.params[name], value)


class ScriptedAccuracy:
    """A model whose validation accuracy after epoch e is ``CORRECT[e] / 4``, one step per
    epoch (batch = the 4 training images, sgd with learning rate 1).

    Its one parameter counts the steps; its one running statistic records, at each training
    call, the step count the parameter will reach. It keeps the statistic in CS231n's
    ``bn_params``.
    """

    CORRECT = (0, 1, 3, 2)  # images right with 0, 1, 2, 3 steps taken
    LABELS = np.array([0, 1, 2, 3])

    def __init__(self) -> None:
        self.params = {"steps": np.zeros(1)}
        self.bn_params = [{"mode": "train", "running_mean": np.zeros(1)}]

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        steps = int(self.params["steps"][0])
        if y is None:
            images = X[:, 0].astype(int)
            right = images < self.CORRECT[steps]
            guesses = np.where(right, self.LABELS[images], (self.LABELS[images] + 1) % 4)
            return np.eye(4)[guesses]
        self.bn_params[0]["running_mean"] = self.params["steps"] + 1
        return 1.0, {"steps": np.array([-1.0])}


class ScriptedAccuracyWithBuffers(ScriptedAccuracy):
    """The same, showing its statistic as convnet's models do: ``buffers()``."""

    def buffers(self) -> dict[str, np.ndarray]:
        return {"running_mean1": self.bn_params[0]["running_mean"]}

    def set_buffers(self, buffers: dict[str, np.ndarray]) -> None:
        self.bn_params[0]["running_mean"] = buffers["running_mean1"]


@pytest.mark.parametrize("build", [ScriptedAccuracy, ScriptedAccuracyWithBuffers])
def test_training_ends_on_the_best_epochs_parameters_and_running_statistics(
    build: type[ScriptedAccuracy],
) -> None:
    """Validation accuracy 0.25, 0.75, 0.5: the model ends as it was after epoch 2, its
    running statistics included, though epoch 3 came later."""
    model = build()
    images = np.arange(4.0).reshape(4, 1)
    data = {"X_train": images, "y_train": model.LABELS, "X_val": images, "y_val": model.LABELS}
    solver = make_solver(
        data, model, update_rule="sgd", optim_config={"learning_rate": 1.0}, batch_size=4
    )
    solver.train()
    assert solver.val_acc_history == [0.25, 0.75, 0.5]
    assert solver.best_val_acc == 0.75
    np.testing.assert_array_equal(model.params["steps"], [2.0])
    np.testing.assert_array_equal(model.bn_params[0]["running_mean"], [2.0])
    np.testing.assert_array_equal(solver.best_buffers["running_mean1"], [2.0])
