"""The ``convnet`` command: ``train``, ``evaluate``, ``predict``, ``info`` and ``bench``.

``convnet train`` trains a model on the bundled digits (default) or on CIFAR-10 and writes
``summary.json``, ``model.npz``, ``preprocessing.npz``, ``curves.png``, ``filters.png``,
``options.json`` and the epoch checkpoint ``checkpoint.npz`` into a new folder per run,
``runs/<date>_<time>/``, and points ``runs/latest`` at it (a symlink; where symlinks
cannot be made, a small file holding the folder's name, which every convnet command
follows). ``--out DIR`` names the folder instead. ``--resume`` continues from a checkpoint
with the saved options. ``convnet evaluate RUN/model.npz`` scores a saved model on the test
split of its dataset; ``convnet predict RUN/model.npz IMAGES.npy`` writes its labels.

A user error (a missing dataset, a bad option, a damaged file, a bad ``CONVNET_BACKEND``)
prints one line to stderr and exits with status 2; a bug still shows its traceback.

Under ``mpiexec -n N`` (N > 1) ``convnet train`` trains data-parallel over the N ranks
(:mod:`convnet.distributed`): rank 0 reads the checkpoint and saved options, makes the run
folder, writes every file and prints; an error on one rank ends every rank.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import io
import itertools
import json
import math
import os
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

from convnet import _environment, distributed, optim
from convnet._io import atomic_open, write_text
from convnet._memory import keep_freed_memory
from convnet._version import __version__
from convnet.checkpoint import CHECKPOINT_NAME

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a Unix tool killed by a closed pipe
MODELS = ("three-layer-convnet", "fc-net", "resnet", "vgg")
DATASETS = ("digits", "cifar10")
OPTIONS_FILE = "options.json"
PREPROCESSING_FILE = "preprocessing.npz"
ACCURACY_SAMPLES = 10000
RUNS_DIR = Path("runs")
LATEST = "latest"
CIFAR10_TEST_IMAGES = 1000

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
    "normalization": None,
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
    # convnet.models.resnet and vgg (composed from convnet.nn): resnet reaches 0.996
    # validation accuracy on digits in 10 epochs (about 5 s of training on 2 cores).
    **{
        (dataset, preset): {
            "epochs": 10 if dataset == "digits" else 5,
            "batch_size": 50 if dataset == "digits" else 64,
            "lr": 2e-3 if dataset == "digits" else 1e-3,
            "init": "he",
            "weight_scale": 1e-2,
            **({"dropout": 0.5} if preset == "vgg" else {}),
        }
        for dataset in DATASETS
        for preset in ("resnet", "vgg")
    },
}
# The options only some models take: given for another model, they are a usage error.
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "num_filters": ("three-layer-convnet",),
    "filter_size": ("three-layer-convnet",),
    "hidden_dim": ("three-layer-convnet",),
    "hidden_dims": ("fc-net",),
    "normalization": ("fc-net",),
    "dropout": ("fc-net", "vgg"),
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


def _format_default(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _defaults_epilog() -> str:
    """The defaults of every dataset and model, for ``convnet train --help``."""
    lines = ["defaults by dataset and model (options left out take these):"]
    for (dataset, model), defaults in DEFAULTS.items():
        flags = " ".join(
            f"--{key.replace('_', '-')} {_format_default(value)}" for key, value in defaults.items()
        )
        lines.append(f"  {dataset}, {model}:\n    {flags}")
    common = " ".join(
        f"--{key.replace('_', '-')} {_format_default(value)}"
        for key, value in COMMON_DEFAULTS.items()
        if value is not None
    )
    lines.append(f"  every dataset and model, unless listed above: {common}")
    lines.append("  --num-val: digits 270, cifar10 1000; --num-train: all the rest")
    return "\n".join(lines)


def _add_data_options(group: Any, *, for_training: bool) -> None:
    help_dataset = "default: digits (bundled, no download)"
    if not for_training:
        help_dataset = "default: the dataset the model was trained on (its options.json)"
    group.add_argument("--dataset", choices=DATASETS, help=help_dataset)
    group.add_argument(
        "--data-dir",
        type=Path,
        help="cifar10: the cifar-10-batches-py folder, or the folder holding it (with "
        "--download: where to put it; default $CONVNET_DATA_DIR or ~/.cache/convnet)",
    )
    group.add_argument(
        "--download",
        action="store_true",
        help="cifar10: fetch the official archive (checksum-verified; a mirror URL may be "
        "given in $CONVNET_CIFAR10_URL) unless it is already cached",
    )


def _build_parser() -> _Parser:
    parser = _Parser(prog="convnet", description="Train and inspect small CPU convnets.")
    parser.add_argument("--version", action="version", version=f"convnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "info", help="print the version, the backend (and why, if it is the fallback), BLAS"
    )
    commands.add_parser("bench", help="time the layers (see convnet bench --help)", add_help=False)
    train = commands.add_parser(
        "train",
        help="train a model and write its summary, weights and plots",
        description="Train a model. Options left out take the dataset's defaults (below), "
        "or with --resume the values saved with the checkpoint.",
        epilog=_defaults_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run = train.add_argument_group("data and model")
    _add_data_options(run, for_training=True)
    run.add_argument("--model", choices=MODELS, help="default: three-layer-convnet")
    run.add_argument("--num-train", type=_positive_int, help="use only this many training images")
    run.add_argument(
        "--num-val", type=_positive_int, help="validation images (digits 270, cifar10 1000)"
    )
    run.add_argument("--num-filters", type=_positive_int, help="three-layer-convnet: filters")
    run.add_argument(
        "--filter-size", type=_positive_int, help="three-layer-convnet: filter height and width"
    )
    run.add_argument("--hidden-dim", type=_positive_int, help="three-layer-convnet: hidden units")
    run.add_argument("--hidden-dims", type=_width_list, help="fc-net: widths, e.g. 100,100")
    run.add_argument(
        "--dropout", type=_number(0, 1), help="fc-net, vgg: keep probability (1: none)"
    )
    run.add_argument(
        "--normalization", choices=("batchnorm", "layernorm"), help="fc-net: normalization"
    )
    run.add_argument("--init", choices=("normal", "he"), help="weight initialization")
    run.add_argument("--weight-scale", type=_number(0), help="--init normal: the weights' std")
    run.add_argument(
        "--reg",
        type=_number(0, low_inclusive=True),
        help="L2 regularization strength (0: none; defaults below)",
    )
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
        "--out",
        type=Path,
        help=f"output folder (default: a new {RUNS_DIR}/<date>_<time>/, and "
        f"{RUNS_DIR}/{LATEST} points at it; with --resume, the checkpoint's folder)",
    )
    output.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="CHECKPOINT",
        help=f"continue from CHECKPOINT (default: OUT/{CHECKPOINT_NAME}, OUT defaulting to "
        f"{RUNS_DIR}/{LATEST})",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    output.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy and loss of a saved model on its dataset's test split",
        description="Print the accuracy and the loss (mean cross-entropy) of a saved model "
        "on the test split of the dataset it was trained on: the split and preprocessing "
        "come from the options.json beside the model, so the accuracy is the test_accuracy "
        "of its summary.json.",
    )
    evaluate.add_argument("model_file", type=Path, metavar="MODEL", help="a model.npz")
    _add_data_options(evaluate, for_training=False)

    predict = commands.add_parser(
        "predict",
        help="predicted labels (and class probabilities) of images",
        description="Predict the class of every image of IMAGES.npy, an (N, C, H, W) array of "
        "raw images as the dataset has them (digits: 0..16, cifar10: 0..255): the run's "
        f"preprocessing ({PREPROCESSING_FILE} beside the model) is applied first. Labels go "
        "to stdout, one per line, unless --out is given.",
    )
    predict.add_argument("model_file", type=Path, metavar="MODEL", help="a model.npz")
    predict.add_argument("images", type=Path, metavar="IMAGES", help="an .npy file (N, C, H, W)")
    predict.add_argument(
        "--out", type=Path, help="write the labels here (.npy: an int64 array; else text)"
    )
    predict.add_argument(
        "--probabilities",
        type=Path,
        metavar="FILE",
        help="also write the class probabilities (N, classes) (.npy, else CSV text)",
    )
    predict.add_argument(
        "--no-preprocessing",
        action="store_true",
        help="the images are already preprocessed (scaled and centred as in training)",
    )
    predict.add_argument("--batch-size", type=_positive_int, default=200, help="default: 200")
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
    saved = {key: value for key, value in saved.items() if key in RUN_OPTIONS}
    _check_saved_values(saved, path)
    return saved


def _check_saved_values(saved: dict[str, Any], path: Path) -> None:
    """Parse every saved value as its flag would be: a damaged or hand-edited options file
    is a usage error, not a crash further on."""
    argv = ["train"]
    for key, value in saved.items():
        if value is not None:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            argv.append(f"--{key.replace('_', '-')}={text}")
    try:
        _build_parser().parse_args(argv)
    except UsageError as error:
        raise UsageError(f"the saved options {path} hold a bad value: {error}") from error


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


def _check_model_options(args: argparse.Namespace, options: dict[str, Any]) -> None:
    """A usage error for an option given explicitly that the run's model would ignore."""
    model = options["model"]
    for key, models in MODEL_OPTIONS.items():
        if getattr(args, key, None) is not None and model not in models:
            takers = " or ".join(models)
            raise UsageError(
                f"--{key.replace('_', '-')} is an option of --model {takers}, not {model}"
            )
    if args.weight_scale is not None and options["init"] != "normal":
        raise UsageError(
            f"--weight-scale is the std of --init normal; this run has --init {options['init']}"
        )


# What a missing or damaged file, a bad option value or data that do not fit raise: the
# library's documented errors. Anything else (a TypeError, a KeyError, ...) is a bug and
# keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError)
# numpy's readers of .npy / .npz files also raise these on damaged or truncated files
NPY_READ_ERRORS = (*USER_ERRORS, EOFError, zipfile.BadZipFile)


@contextlib.contextmanager
def _user_errors(
    what: str = "", kinds: tuple[type[Exception], ...] = USER_ERRORS
) -> Iterator[None]:
    """Turn the errors of ``kinds`` raised in this block (a user's mistake: a bad file,
    option or dataset) into a one-line UsageError; any other exception propagates."""
    try:
        yield
    except kinds as error:
        raise UsageError(f"{what}{error}") from error


def _cifar10_directory(options: dict[str, Any], download: bool) -> str:
    """The CIFAR-10 batches folder: --data-dir, the download cache, or a usage error."""
    from convnet import data

    directory = options["data_dir"]
    if download:
        with _user_errors():
            return str(data.download_cifar10(directory))
    if directory is not None:
        return directory
    if data.cifar10_is_cached():
        return str(data.default_data_dir() / "cifar-10-batches-py")
    raise UsageError(
        "--dataset cifar10 needs --data-dir (the cifar-10-batches-py folder) or --download "
        f"(fetches it into {data.default_data_dir()})"
    )


def _load_data(options: dict[str, Any], *, download: bool = False) -> dict[str, np.ndarray]:
    """The dataset the options describe; ``options["data_dir"]`` is set for CIFAR-10."""
    from convnet import data

    dtype = np.dtype(options["dtype"])
    if options["dataset"] == "digits":
        if options["data_dir"] is not None or download:
            raise UsageError(
                "--data-dir and --download are for --dataset cifar10: the digits come with "
                "scikit-learn"
            )
        with _user_errors(kinds=(*USER_ERRORS, ImportError)):  # ImportError: no scikit-learn
            dataset = data.load_digits_dataset(
                dtype=dtype, num_validation=options["num_val"] or 270
            )
        dataset["scale"] = np.array(data.DIGITS_SCALE)
    else:
        options["data_dir"] = _cifar10_directory(options, download)
        with _user_errors():
            X_train, y_train, X_test, y_test = data.load_cifar10(options["data_dir"], dtype=dtype)
        num_val = options["num_val"] or 1000
        num_train = options["num_train"] or max(len(X_train) - num_val, 1)
        if num_train + num_val > len(X_train):
            raise UsageError(
                f"--num-train {num_train} and --num-val {num_val} need {num_train + num_val} "
                f"CIFAR-10 training images, there are {len(X_train)}: lower --num-train or "
                "--num-val"
            )
        dataset = data.preprocess_cifar10(
            X_train,
            y_train,
            X_test,
            y_test,
            num_training=num_train,
            num_validation=num_val,
            num_test=min(CIFAR10_TEST_IMAGES, len(X_test)),
        )
        dataset["scale"] = np.array(1.0)
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
    if options["model"] in ("resnet", "vgg"):
        from convnet import models

        if options["model"] == "vgg":
            # fresh (seeded) dropout masks at every step, not CS231n's fixed ones
            return models.vgg(image_shape, dropout=options["dropout"], fresh_masks=True, **common)
        return models.resnet(image_shape, **common)
    if options["model"] == "fc-net":
        return FullyConnectedNet(
            options["hidden_dims"],
            input_dim=math.prod(image_shape),
            dropout=options["dropout"],
            normalization=options["normalization"],
            fresh_masks=True,
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
    if "W1" not in model.params:  # a network composed from convnet.nn: its first Conv2d
        from convnet.nn import Conv2d

        convs = [layer for layer in model.net.layers() if isinstance(layer, Conv2d)]
        return convs[0].params["w"] if convs else None
    weights = model.params["W1"]
    if weights.ndim == 4:
        return weights
    if image_shape[0] in (1, 3):
        return weights.T.reshape(-1, *image_shape)
    return None


def _score(
    model: Any, X: np.ndarray, y: np.ndarray, ranks: distributed.Ranks | None = None
) -> tuple[float, float]:
    """Accuracy and loss on the first ACCURACY_SAMPLES images (all of them for small sets),
    each rank of ``ranks`` scoring its share."""
    from convnet.solver import evaluate

    ranks = ranks or distributed.Ranks()
    return ranks.mean_over_shares(
        functools.partial(evaluate, model), X[:ACCURACY_SAMPLES], y[:ACCURACY_SAMPLES]
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _follow_latest(path: Path) -> Path:
    """``path`` with a ``latest`` pointer file (made where symlinks are impossible) followed."""
    parts = path.parts
    for index in range(len(parts)):
        prefix = Path(*parts[: index + 1])
        if prefix.name == LATEST and prefix.is_file() and not prefix.is_symlink():
            with _user_errors(f"cannot read the pointer {prefix}: "):
                target = prefix.read_text().strip()
            return prefix.parent / target / Path(*parts[index + 1 :])
    return path


def _unique_folder(parent: Path, stem: str) -> Path:
    """Create and return ``parent/stem``, or ``parent/stem_2``, ... if that exists."""
    for attempt in itertools.count(1):
        folder = parent / (stem if attempt == 1 else f"{stem}_{attempt}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        return folder
    raise AssertionError("unreachable")


def _timestamp(seconds: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(time.time() if seconds is None else seconds)
    return moment.strftime("%Y-%m-%d_%H-%M-%S")


def _point_latest(runs: Path, run: Path) -> None:
    """Make ``runs/latest`` point at ``run``: a relative symlink swapped in atomically, or,
    where symlinks cannot be made, a file holding the run folder's name."""
    link = runs / LATEST
    if link.is_dir() and not link.is_symlink():
        # a run folder written by an older convnet, whose default --out was runs/latest
        moved = _unique_folder(runs, _timestamp(link.stat().st_mtime))
        moved.rmdir()
        link.rename(moved)
        print(f"convnet: moved the run folder {link} to {moved}", file=sys.stderr)
    temporary = runs / f".{LATEST}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    try:
        os.symlink(run.name, temporary, target_is_directory=True)
    except (OSError, NotImplementedError):
        write_text(link, run.name + "\n")
        return
    os.replace(temporary, link)


def _output_folder(args: argparse.Namespace, checkpoint: Path | None) -> Path:
    """--out, else the checkpoint's folder when resuming, else a new run folder."""
    if args.out is not None:
        out = _follow_latest(args.out)
    elif checkpoint is not None:
        return checkpoint.parent.resolve()
    else:
        with _user_errors("cannot create a run folder: "):
            out = _unique_folder(RUNS_DIR, _timestamp())
            _point_latest(RUNS_DIR, out)
        return out
    with _user_errors("cannot create the output directory: "):
        out.mkdir(parents=True, exist_ok=True)
    return out


def _checkpoint_to_resume(args: argparse.Namespace) -> Path | None:
    if args.resume is None:
        return None
    if args.resume is True:
        folder = _follow_latest(args.out if args.out is not None else RUNS_DIR / LATEST)
        checkpoint = folder / CHECKPOINT_NAME
    else:
        checkpoint = _follow_latest(Path(args.resume))
    if not checkpoint.is_file():
        raise UsageError(f"no checkpoint to resume from at {checkpoint}")
    return checkpoint


def _save_preprocessing(out: Path, dataset: dict[str, np.ndarray]) -> None:
    with atomic_open(out / PREPROCESSING_FILE) as handle:
        np.savez(handle, scale=dataset["scale"], mean_image=dataset["mean_image"])


def _train(args: argparse.Namespace) -> int:
    ranks = distributed.Ranks(distributed.world())
    with ranks.abort_on_error(quiet=(UsageError,)):
        if not ranks.distributed:
            return _train_on(args, ranks)
        from threadpoolctl import threadpool_limits

        from convnet._parallel import get_num_threads

        # the ranks share the machine's cores: BLAS calls outside the fast layers too
        with threadpool_limits(limits=get_num_threads(), user_api="blas"):
            return _train_on(args, ranks)


def _run_plan(args: argparse.Namespace) -> tuple[Path | None, dict[str, Any], int | None]:
    """The checkpoint to resume from, the run's options and the epoch the checkpoint holds."""
    from convnet import checkpoint as checkpoint_format

    checkpoint = _checkpoint_to_resume(args)
    saved = _read_saved_options(checkpoint.parent / OPTIONS_FILE) if checkpoint else {}
    options = _resolve_options(args, saved)
    _check_model_options(args, options)
    done = None
    if checkpoint is not None:
        with _user_errors():
            done = checkpoint_format.load_checkpoint(checkpoint)["epoch"]
    return checkpoint, options, done


def _prepare_output(
    args: argparse.Namespace,
    checkpoint: Path | None,
    options: dict[str, Any],
    dataset: dict[str, np.ndarray],
) -> Path:
    out = _output_folder(args, checkpoint)
    write_text(out / OPTIONS_FILE, json.dumps(options, indent=2) + "\n")
    _save_preprocessing(out, dataset)
    return out


def _train_on(args: argparse.Namespace, ranks: distributed.Ranks) -> int:
    """``convnet train`` on one process or as one of the ranks of ``ranks``: rank 0 alone
    reads the checkpoint and options, makes the folder, writes the files and prints."""
    from convnet._backend import BACKEND, naive_reason
    from convnet.plots import plot_curves, plot_filters
    from convnet.solver import Solver, TrainingDiverged

    started = time.perf_counter()
    checkpoint, options, done = ranks.run_on_root(_run_plan, args)
    if done is not None and done >= options["epochs"]:
        if ranks.is_root:
            print(
                f"convnet: nothing left to train: {checkpoint} holds epoch {done} of "
                f"{options['epochs']}; pass --epochs with more than {done} to train further "
                "(the run's files were left as they were)"
            )
        return 0
    # rank 0 loads (and with --download fetches) the data first, then the others
    first: dict[str, Any] = {}
    ranks.run_on_root(
        lambda: first.setdefault("dataset", _load_data(options, download=args.download))
    )
    dataset = first.get("dataset") or _load_data(options, download=args.download)
    with _user_errors():
        model = _build_model(options, dataset)

    keep_freed_memory()  # process-wide, so the command does it, not the library's Solver
    with _user_errors():
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
            verbose=not args.quiet,
            resume_from=checkpoint,
            comm=ranks.comm,
        )
    # Only now, with the checkpoint loaded and found to fit, is anything written: a
    # rejected --resume leaves the run folder as it was (and makes no --out folder).
    out = ranks.run_on_root(_prepare_output, args, checkpoint, options, dataset)
    solver.checkpoint_dir = out
    try:
        solver.train()
    except KeyboardInterrupt:
        print(
            f"convnet: interrupted; {out / CHECKPOINT_NAME} holds epoch {solver.epoch}: "
            f"continue with `convnet train --out {out} --resume`",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except TrainingDiverged as error:
        return _fail(EXIT_FAILED, f"convnet: {error}")

    val_accuracy, val_loss = _score(model, dataset["X_val"], dataset["y_val"], ranks)
    train_accuracy, _ = _score(model, dataset["X_train"], dataset["y_train"], ranks)
    test_accuracy, test_loss = _score(model, dataset["X_test"], dataset["y_test"], ranks)
    summary = {
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "test_images": min(len(dataset["y_test"]), ACCURACY_SAMPLES),
        "best_val_accuracy": solver.best_val_acc,
        "epochs": solver.epoch,
        "iterations": solver.iteration,
        "seconds": round(solver.train_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
        "images_per_second": round(solver.images_per_second, 1),
        "final_loss": solver.loss_history[-1] if solver.loss_history else None,
        "epoch_loss_history": solver.epoch_loss_history,
        "val_loss_history": solver.val_loss_history,
        "ranks": ranks.size,
        "communication_seconds": round(solver.ranks.communication_seconds, 6),
        "train_acc_history": solver.train_acc_history,
        "val_acc_history": solver.val_acc_history,
        "backend": BACKEND,
        "convnet_version": __version__,
        "resumed_from": None if checkpoint is None else str(checkpoint),
        "options": options,
        "model_config": model.config(),
    }
    if not ranks.is_root:
        return 0
    from convnet.models import save_model

    save_model(model, out / "model.npz")
    plot_curves(solver.history, out / "curves.png", test_accuracy=test_accuracy)
    filters = _first_layer_filters(model, dataset["X_train"].shape[1:])
    if filters is not None:
        plot_filters(filters, out / "filters.png")
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    backend_note = f" on the slow naive backend ({naive_reason})" if BACKEND == "naive" else ""
    print(
        f"val accuracy {val_accuracy:.4f}, test accuracy {test_accuracy:.4f}, "
        f"{_plural(summary['epochs'], 'epoch')} in {summary['seconds']:.1f} s "
        f"({summary['images_per_second']:.0f} images/s){backend_note}; wrote {out}"
    )
    return 0


def _load_saved_model(path: Path) -> Any:
    from convnet.models import load_model

    with _user_errors():
        return load_model(_follow_latest(path))


def _evaluate(args: argparse.Namespace) -> int:
    model_path = _follow_latest(args.model_file)
    model = _load_saved_model(model_path)
    saved = _read_saved_options(model_path.parent / OPTIONS_FILE)
    if not saved and args.dataset is None:
        raise UsageError(
            f"no {OPTIONS_FILE} beside {model_path} says which dataset it was trained on: "
            "pass --dataset"
        )
    options = _resolve_options(args, saved)
    dataset = _load_data(options, download=args.download)
    with _user_errors(f"{model_path} does not fit the {options['dataset']} images: "):
        accuracy, loss = _score(model, dataset["X_test"], dataset["y_test"])
    count = min(len(dataset["y_test"]), ACCURACY_SAMPLES)
    print(
        f"test accuracy {accuracy:.4f}, loss {loss:.4f} on the {count} test images of "
        f"{options['dataset']}"
    )
    return 0


def _read_images(path: Path) -> np.ndarray:
    with _user_errors(f"cannot read the images {path}: ", NPY_READ_ERRORS):
        images = np.load(path, allow_pickle=False)
    if not isinstance(images, np.ndarray):
        images.close()
        raise UsageError(f"{path} must be an .npy file holding one array, not an .npz archive")
    if images.dtype.kind not in "iuf":
        raise UsageError(f"{path} must hold real numbers (float or integer), got {images.dtype}")
    if images.ndim != 4:
        raise UsageError(f"{path} must hold images (N, C, H, W), got shape {images.shape}")
    return images


def _preprocess(images: np.ndarray, model_path: Path, model: Any) -> np.ndarray:
    """The run's scaling and mean subtraction, as training applied them."""
    path = model_path.parent / PREPROCESSING_FILE
    if not path.is_file():
        raise UsageError(
            f"no {PREPROCESSING_FILE} beside {model_path}: pass --no-preprocessing if the "
            "images are already preprocessed as the training images were"
        )
    # KeyError: an archive without "scale" or "mean_image"
    with (
        _user_errors(f"cannot read {path}: ", (*NPY_READ_ERRORS, KeyError)),
        np.load(path, allow_pickle=False) as saved,
    ):
        scale, mean_image = float(saved["scale"]), saved["mean_image"]
    if images.shape[1:] != mean_image.shape:
        raise UsageError(
            f"the model was trained on images {mean_image.shape} (C, H, W), got {images.shape[1:]}"
        )
    return images.astype(model.dtype) * model.dtype.type(scale) - mean_image.astype(model.dtype)


def _write_table(path: Path, values: np.ndarray, fmt: str) -> None:
    with atomic_open(path) as handle:
        if path.suffix == ".npy":
            np.save(handle, values)
        else:
            text = io.StringIO()
            np.savetxt(text, values, fmt=fmt, delimiter=",")
            handle.write(text.getvalue().encode())


def _predict(args: argparse.Namespace) -> int:
    from convnet.solver import class_scores

    model_path = _follow_latest(args.model_file)
    model = _load_saved_model(model_path)
    images = _read_images(args.images)
    if not args.no_preprocessing:
        images = _preprocess(images, model_path, model)
    with _user_errors(f"{args.images} does not fit the model {model_path}: "):
        scores = class_scores(model, images, args.batch_size).astype(np.float64)
    labels = np.argmax(scores, axis=1).astype(np.int64)
    if args.probabilities is not None:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        with _user_errors("cannot write the probabilities: "):
            _write_table(args.probabilities, probabilities, "%.6g")
    if args.out is None:
        sys.stdout.write("".join(f"{label}\n" for label in labels))
    else:
        with _user_errors("cannot write the labels: "):
            _write_table(args.out, labels, "%d")
        print(f"wrote {_plural(len(labels), 'label')} to {args.out}", file=sys.stderr)
    return 0


def _bench(argv: Sequence[str]) -> int:
    try:
        from convnet import bench
    except ImportError as error:
        raise UsageError(f"convnet bench is unavailable: {error}") from error
    result = bench.main(list(argv))
    return int(result or 0)


def _check_environment() -> None:
    """Every CONVNET_* variable holds a value it accepts, else a one-line UsageError."""
    try:
        _environment.check_all()
    except ValueError as error:
        raise UsageError(str(error)) from error


def _load_backend() -> ModuleType:
    """The backend module, or a one-line UsageError for a bad CONVNET_BACKEND."""
    try:
        from convnet import _backend
    except (ValueError, ImportError) as error:
        raise UsageError(str(error)) from error
    return _backend


def _run(argv: list[str]) -> int:
    parser = _build_parser()
    if not argv:
        parser.print_help()
        return 0
    _check_environment()
    backend = _load_backend()
    if argv[0] == "bench":
        return _bench(argv[1:])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    if args.command == "info":
        from convnet._config import show_config

        show_config()
        return 0
    if backend.unbuilt_checkout:
        raise UsageError(
            f"the compiled kernel is not in use: {backend.naive_reason}. To fix: "
            f"{backend.CHECKOUT_FIX}"
        )
    commands = {"train": _train, "evaluate": _evaluate, "predict": _predict}
    return commands[args.command](args)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``convnet`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success (and for a bare ``convnet``, which prints the help), 2 on a user error
        (one line on stderr), 1 when training diverged, 130 when interrupted, 141 when the
        reader of stdout went away (``convnet info | head -1``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _run(argv)
        sys.stdout.flush()
        return code
    except UsageError as error:
        return _fail(EXIT_USAGE, f"convnet: error: {error}")
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "convnet: interrupted")


def _fail(status: int, message: str) -> int:
    """Print ``message`` to stderr (on MPI rank 0 alone: an error that reaches ``main``
    under MPI happened alike on every rank) and return ``status``."""
    if distributed.launched_rank() == 0:
        print(message, file=sys.stderr)
    return status
