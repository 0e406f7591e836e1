"""The ``convnet`` command: ``convnet train``, ``convnet info`` and ``convnet bench``.

``convnet train`` trains a model on the bundled digits (default) or on CIFAR-10 and writes
``summary.json``, ``model.npz``, ``curves.png``, ``filters.png``, ``options.json`` and the
epoch checkpoint ``checkpoint.npz`` into ``--out``. ``--resume`` continues from that
checkpoint with the saved options. A user error (a missing dataset, a bad option, a
damaged checkpoint) prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from convnet import optim
from convnet._backend import BACKEND
from convnet._config import show_config
from convnet._memory import keep_freed_memory
from convnet._version import __version__
from convnet.solver import CHECKPOINT_NAME, Solver, TrainingDiverged

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
MODELS = ("three-layer-convnet", "fc-net")
DATASETS = ("digits", "cifar10")
OPTIONS_FILE = "options.json"
ACCURACY_SAMPLES = 10000

COMMON_DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "model": "three-layer-convnet",
    "data_dir": None,
    "optimizer": "adam",
    "lr_decay": 0.95,
    "reg": 0.0,
    "dtype": "float32",
    "seed": 0,
    "num_train": None,
    "num_val": None,
    "dropout": 1.0,
}
# Chosen so that `convnet train` reaches >= 0.97 validation accuracy on digits in about a
# minute on 2 cores; the CIFAR-10 ones follow the course's three-layer net.
DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("digits", "three-layer-convnet"): {
        "epochs": 10,
        "batch_size": 50,
        "lr": 2e-3,
        "num_filters": 32,
        "filter_size": 3,
        "hidden_dim": 100,
        "init": "he",
        "weight_scale": 1e-2,
    },
    ("digits", "fc-net"): {
        "epochs": 20,
        "batch_size": 50,
        "lr": 2e-3,
        "hidden_dims": [100, 100],
        "init": "he",
        "weight_scale": 1e-2,
    },
    ("cifar10", "three-layer-convnet"): {
        "epochs": 1,
        "batch_size": 50,
        "lr": 1e-3,
        "reg": 1e-3,
        "num_filters": 32,
        "filter_size": 7,
        "hidden_dim": 100,
        "init": "normal",
        "weight_scale": 1e-3,
    },
    ("cifar10", "fc-net"): {
        "epochs": 10,
        "batch_size": 200,
        "lr": 1e-3,
        "hidden_dims": [100, 100],
        "init": "normal",
        "weight_scale": 1e-2,
    },
}
# Options that describe a run (saved for --resume); --out, --resume, --no-progress and
# --quiet only say how to run this invocation.
RUN_OPTIONS = (
    *COMMON_DEFAULTS,
    "epochs",
    "batch_size",
    "lr",
    "num_filters",
    "filter_size",
    "hidden_dim",
    "hidden_dims",
    "init",
    "weight_scale",
)


class UsageError(Exception):
    """A bad command line, option value or input file: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _number(low: float, high: float = math.inf, *, low_inclusive: bool = False) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value >= low if low_inclusive else value > low
        if not (math.isfinite(value) and above and value <= high):
            bound = f"{'>=' if low_inclusive else '>'} {low:g}"
            if high < math.inf:
                bound += f" and <= {high:g}"
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
        return value

    return parse


def _width_list(text: str) -> list[int]:
    try:
        return [_positive_int(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        ) from None


def _build_parser() -> _Parser:
    parser = _Parser(prog="convnet", description="Train and inspect small CPU convnets.")
    parser.add_argument("--version", action="version", version=f"convnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("info", help="print the version, backend, worker threads and BLAS")
    commands.add_parser("bench", help="time the layers (see convnet bench --help)", add_help=False)
    train = commands.add_parser(
        "train",
        help="train a model and write its summary, weights and plots",
        description="Train a model. Options left out take the dataset's defaults, or with "
        "--resume the values saved with the checkpoint.",
    )
    run = train.add_argument_group("data and model")
    run.add_argument("--dataset", choices=DATASETS, help="default: digits (bundled, no download)")
    run.add_argument("--data-dir", type=Path, help="the cifar-10-batches-py directory")
    run.add_argument("--model", choices=MODELS, help="default: three-layer-convnet")
    run.add_argument("--num-train", type=_positive_int, help="use only this many training images")
    run.add_argument(
        "--num-val", type=_positive_int, help="validation images (digits 270, cifar10 1000)"
    )
    run.add_argument("--num-filters", type=_positive_int, help="conv filters")
    run.add_argument("--filter-size", type=_positive_int, help="conv filter height and width")
    run.add_argument("--hidden-dim", type=_positive_int, help="conv net hidden units")
    run.add_argument("--hidden-dims", type=_width_list, help="fc-net widths, e.g. 100,100")
    run.add_argument("--dropout", type=_number(0, 1), help="fc-net keep probability (1: none)")
    run.add_argument("--init", choices=("normal", "he"), help="weight initialization")
    run.add_argument("--weight-scale", type=_number(0), help="std of 'normal' init")
    run.add_argument("--reg", type=_number(0, low_inclusive=True), help="L2 strength")
    run.add_argument("--dtype", choices=("float32", "float64"), help="default: float32")

    optimization = train.add_argument_group("optimization")
    optimization.add_argument("--optimizer", choices=sorted(optim.UPDATE_RULES))
    optimization.add_argument("--lr", type=_number(0), help="learning rate")
    optimization.add_argument("--lr-decay", type=_number(0, 1), help="factor per epoch")
    optimization.add_argument("--epochs", type=_non_negative_int, help="total epochs")
    optimization.add_argument("--batch-size", type=_positive_int)
    optimization.add_argument("--seed", type=_non_negative_int, help="default: 0")

    output = train.add_argument_group("output")
    output.add_argument(
        "--out", type=Path, default=Path("runs/latest"), help="output directory (runs/latest)"
    )
    output.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="CHECKPOINT",
        help=f"continue from CHECKPOINT (default: OUT/{CHECKPOINT_NAME})",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    output.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return parser


def _read_saved_options(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the saved options {path}: {error}") from error
    if not isinstance(saved, dict):
        raise UsageError(f"the saved options {path} are not a JSON object")
    return {key: value for key, value in saved.items() if key in RUN_OPTIONS}


def _resolve_options(args: argparse.Namespace, saved: dict[str, Any]) -> dict[str, Any]:
    """Explicit options, else saved ones (with --resume), else the dataset's defaults."""
    explicit = {
        key: getattr(args, key) for key in RUN_OPTIONS if getattr(args, key, None) is not None
    }
    chosen = {**COMMON_DEFAULTS, **saved, **explicit}
    options = {
        **COMMON_DEFAULTS,
        **DEFAULTS[(chosen["dataset"], chosen["model"])],
        **saved,
        **explicit,
    }
    if options["data_dir"] is not None:
        options["data_dir"] = str(options["data_dir"])
    return options


def _load_data(options: dict[str, Any]) -> dict[str, np.ndarray]:
    from convnet import data

    dtype = np.dtype(options["dtype"])
    if options["dataset"] == "digits":
        dataset = data.load_digits_dataset(dtype=dtype, num_validation=options["num_val"] or 270)
    else:
        if options["data_dir"] is None:
            raise UsageError("--dataset cifar10 needs --data-dir (the cifar-10-batches-py dir)")
        X_train, y_train, X_test, y_test = data.load_cifar10(options["data_dir"], dtype=dtype)
        dataset = data.preprocess_cifar10(
            X_train,
            y_train,
            X_test,
            y_test,
            num_training=options["num_train"] or 49000,
            num_validation=options["num_val"] or 1000,
            num_test=min(1000, len(X_test)),
        )
    if options["num_train"] is not None:
        dataset["X_train"] = dataset["X_train"][: options["num_train"]]
        dataset["y_train"] = dataset["y_train"][: options["num_train"]]
    return dataset


def _build_model(options: dict[str, Any], dataset: dict[str, np.ndarray]) -> Any:
    from convnet.models import FullyConnectedNet, ThreeLayerConvNet

    image_shape = dataset["X_train"].shape[1:]
    common = {
        "num_classes": 10,
        "weight_scale": options["weight_scale"],
        "reg": options["reg"],
        "dtype": np.dtype(options["dtype"]),
        "init": options["init"],
        "seed": options["seed"],
    }
    if options["model"] == "fc-net":
        return FullyConnectedNet(
            options["hidden_dims"],
            input_dim=math.prod(image_shape),
            dropout=options["dropout"],
            **common,
        )
    return ThreeLayerConvNet(
        input_dim=image_shape,
        num_filters=options["num_filters"],
        filter_size=options["filter_size"],
        hidden_dim=options["hidden_dim"],
        **common,
    )


def _first_layer_filters(model: Any, image_shape: tuple[int, ...]) -> np.ndarray | None:
    """W1 as images (F, C, H, W): the conv filters, or an FC net's first-layer weights."""
    weights = model.params["W1"]
    if weights.ndim == 4:
        return weights
    if image_shape[0] in (1, 3):
        return weights.T.reshape(-1, *image_shape)
    return None


def _accuracy(solver: Solver, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy on the first ACCURACY_SAMPLES images (all of them for small sets)."""
    return solver.check_accuracy(X[:ACCURACY_SAMPLES], y[:ACCURACY_SAMPLES])


def _train(args: argparse.Namespace) -> int:
    from convnet.models import save_model
    from convnet.plots import plot_curves, plot_filters

    started = time.perf_counter()
    out: Path = args.out
    checkpoint = None
    if args.resume is not None:
        checkpoint = out / CHECKPOINT_NAME if args.resume is True else Path(args.resume)
        if not checkpoint.is_file():
            raise UsageError(f"no checkpoint to resume from at {checkpoint}")
    saved = _read_saved_options(checkpoint.parent / OPTIONS_FILE) if checkpoint else {}
    options = _resolve_options(args, saved)
    dataset = _load_data(options)
    model = _build_model(options, dataset)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the output directory {out}: {error}") from error
    (out / OPTIONS_FILE).write_text(json.dumps(options, indent=2) + "\n")

    keep_freed_memory()
    solver = Solver(
        model,
        dataset,
        update_rule=options["optimizer"],
        optim_config={"learning_rate": options["lr"]},
        lr_decay=options["lr_decay"],
        batch_size=options["batch_size"],
        num_epochs=options["epochs"],
        seed=options["seed"],
        progress=not args.no_progress,
        checkpoint_dir=out,
        verbose=not args.quiet,
        resume_from=checkpoint,
    )
    try:
        solver.train()
    except KeyboardInterrupt:
        print(
            f"convnet: interrupted; {out / CHECKPOINT_NAME} holds epoch {solver.epoch}: "
            f"continue with `convnet train --out {out} --resume`",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED

    summary = {
        "val_accuracy": _accuracy(solver, dataset["X_val"], dataset["y_val"]),
        "train_accuracy": _accuracy(solver, dataset["X_train"], dataset["y_train"]),
        "test_accuracy": _accuracy(solver, dataset["X_test"], dataset["y_test"]),
        "best_val_accuracy": solver.best_val_acc,
        "epochs": solver.epoch,
        "iterations": solver.iteration,
        "seconds": round(solver.train_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
        "images_per_second": round(solver.images_per_second, 1),
        "final_loss": solver.loss_history[-1] if solver.loss_history else None,
        "train_acc_history": solver.train_acc_history,
        "val_acc_history": solver.val_acc_history,
        "backend": BACKEND,
        "convnet_version": __version__,
        "resumed_from": None if checkpoint is None else str(checkpoint),
        "options": options,
        "model_config": model.config(),
    }
    save_model(model, out / "model.npz")
    plot_curves(solver.history, out / "curves.png")
    filters = _first_layer_filters(model, dataset["X_train"].shape[1:])
    if filters is not None:
        plot_filters(filters, out / "filters.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"val accuracy {summary['val_accuracy']:.4f}, test accuracy "
        f"{summary['test_accuracy']:.4f}, {summary['epochs']} epochs in "
        f"{summary['seconds']:.1f} s ({summary['images_per_second']:.0f} images/s); "
        f"wrote {out}"
    )
    return 0


def _bench(argv: Sequence[str]) -> int:
    try:
        from convnet import bench
    except ImportError as error:
        raise UsageError(f"convnet bench is unavailable: {error}") from error
    result = bench.main(list(argv))
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``convnet`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a user error (one line on stderr), 1 when training diverged,
        130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench"]:
            return _bench(argv[1:])
        try:
            args = _build_parser().parse_args(argv)
        except SystemExit as exit_request:
            return int(exit_request.code or 0)
        if args.command == "info":
            show_config()
            return 0
        return _train(args)
    except UsageError as error:
        print(f"convnet: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError, ImportError) as error:
        print(f"convnet: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as error:
        print(f"convnet: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("convnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
