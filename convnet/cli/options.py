"""The options of ``convnet train`` and ``convnet evaluate``: the parser, the defaults of
every dataset and model, how given, saved and default values combine, the dataset and model
they describe, and how a model is scored on it."""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from convnet import distributed, optim
from convnet._version import __version__
from convnet.checkpoint import CHECKPOINT_NAME
from convnet.cli.errors import USER_ERRORS, UsageError, user_errors
from convnet.runs import LATEST, PREPROCESSING_FILE

MODELS = ("three-layer-convnet", "fc-net", "resnet", "vgg")
DATASETS = ("digits", "cifar10")
ACCURACY_SAMPLES = 10000
RUNS_DIR = Path("runs")
CIFAR10_TEST_IMAGES = 1000
CIFAR10_VALIDATION_IMAGES = 1000

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
    "conv_algorithm": None,
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
# Options of one dataset only: saved with a run, they do not carry over to another dataset.
DATASET_OPTIONS = ("data_dir", "num_train", "num_val")
# What a resumed run cannot change: the checkpoint holds their consequences (the model's
# shape and dtype, its initialization, the data's split, the optimizer's state and its
# decayed learning rate).
FIXED_ON_RESUME = (
    "dataset",
    "model",
    "dtype",
    "seed",
    "optimizer",
    "lr",
    "init",
    "weight_scale",
    "num_filters",
    "filter_size",
    "hidden_dim",
    "hidden_dims",
    "normalization",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _integer_from(low: int, expected: str) -> Any:
    """An argparse type: an integer of at least ``low`` (``expected`` says so in errors)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _integer_from(1, "a positive integer")
_non_negative_int = _integer_from(0, "an integer >= 0")


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


def format_default(value: Any) -> str:
    """A default as its flag takes it: 0.001, 100,100."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _defaults_epilog() -> str:
    """The defaults of every dataset and model, for ``convnet train --help``."""
    lines = ["defaults by dataset and model (options left out take these):"]
    for (dataset, model), defaults in DEFAULTS.items():
        flags = " ".join(
            f"--{key.replace('_', '-')} {format_default(value)}" for key, value in defaults.items()
        )
        lines.append(f"  {dataset}, {model}:\n    {flags}")
    common = " ".join(
        f"--{key.replace('_', '-')} {format_default(value)}"
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


def build_parser() -> _Parser:
    """The parser of the ``convnet`` command: its usage errors raise UsageError."""
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
        f"or with --resume the values saved with the checkpoint. {RUNS_DIR}/{LATEST} points "
        "at the newest run that produced a model.",
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
    run.add_argument(
        "--conv-algorithm",
        choices=("auto", "im2col", "winograd"),
        help="convolution algorithm (auto, the fastest, unless CONVNET_CONV_ALGORITHM says "
        "otherwise; im2col: float32 closest to float64)",
    )

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
        help=f"the run folder (default: a new {RUNS_DIR}/<date>_<time>/; with --resume, "
        "the checkpoint's folder); a folder holding another run is refused without --resume",
    )
    output.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="CHECKPOINT",
        help=f"continue a run from CHECKPOINT (default: OUT/{CHECKPOINT_NAME}, else the "
        f"newest checkpoint in {RUNS_DIR}/), or finish one whose training is done (its "
        "missing model, summary and plots)",
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
    evaluate.add_argument(
        "model_file", type=Path, metavar="MODEL", help="a model.npz, or an .onnx graph"
    )
    _add_data_options(evaluate, for_training=False)

    predict = commands.add_parser(
        "predict",
        help="predicted labels (and class probabilities) of images",
        description="Predict the class of every image of IMAGES.npy, an (N, C, H, W) array of "
        "raw images as the dataset has them (digits: 0..16, cifar10: 0..255): the run's "
        f"preprocessing ({PREPROCESSING_FILE} beside the model) is applied first. Labels go "
        "to stdout, one per line, unless --out is given.",
    )
    predict.add_argument(
        "model_file", type=Path, metavar="MODEL", help="a model.npz, or an .onnx graph"
    )
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

    export = commands.add_parser(
        "export",
        help="write a saved model as an ONNX graph",
        description="Write the model of MODEL (a run's model.npz) in test mode as an ONNX graph "
        "at OUT (input 'input' (N, ...), output 'logits'), for ONNX Runtime and other "
        'runtimes. Needs the onnx package (pip install "convnet[onnx]").',
    )
    export.add_argument("model_file", type=Path, metavar="MODEL", help="a model.npz")
    export.add_argument("out", type=Path, metavar="OUT", help="the .onnx file to write")
    export.add_argument(
        "--with-preprocessing",
        action="store_true",
        help=f"put the run's scaling and mean subtraction ({PREPROCESSING_FILE} beside the "
        "model) in front, so the graph takes raw images as the dataset has them",
    )
    export.add_argument(
        "--opset", type=_positive_int, default=17, help="ONNX operator set (default: 17)"
    )
    return parser


def read_saved_options(path: Path) -> dict[str, Any]:
    """The run options saved in ``options.json`` at ``path`` ({} without the file)."""
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:
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
        build_parser().parse_args(argv)
    except UsageError as error:
        raise UsageError(f"the saved options {path} hold a bad value: {error}") from error


def explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run options given on the command line."""
    return {key: getattr(args, key) for key in RUN_OPTIONS if getattr(args, key, None) is not None}


def resolve_options(
    args: argparse.Namespace, saved: dict[str, Any]
) -> tuple[dict[str, Any], set[str]]:
    """Explicit options, else saved ones (with --resume), else the dataset's defaults.

    Returns
    -------
    options : dict
        Every run option; ``data_dir`` made absolute, so the saved options still name the
        same folder when read from another working directory.
    given : set of str
        The options given on the command line (``download`` included) or saved: the ones
        a message may name.
    """
    explicit = explicit_options(args)
    if "dataset" in explicit and explicit["dataset"] != saved.get("dataset"):
        # another dataset than the saved one: its saved folder and split sizes do not apply
        saved = {key: value for key, value in saved.items() if key not in DATASET_OPTIONS}
    given = {*explicit, *(key for key, value in saved.items() if value is not None)}
    if getattr(args, "download", False):
        given.add("download")
    chosen = {**COMMON_DEFAULTS, **saved, **explicit}
    options = {
        **COMMON_DEFAULTS,
        **DEFAULTS[(chosen["dataset"], chosen["model"])],
        **saved,
        **explicit,
    }
    if options["data_dir"] is not None:
        options["data_dir"] = str(Path(options["data_dir"]).expanduser().absolute())
    return options, given


def check_model_options(args: argparse.Namespace, options: dict[str, Any]) -> None:
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


def check_resume_options(args: argparse.Namespace, saved: dict[str, Any]) -> None:
    """A usage error for an option given to ``--resume`` that would not apply: one that
    shaped what the checkpoint holds (``FIXED_ON_RESUME``) given another value than the
    run's. The others (epochs, batch size, learning-rate decay, regularization, dropout,
    the data's folder and sizes) apply from the resumed epoch on and are recorded."""
    for key, value in explicit_options(args).items():
        if key in FIXED_ON_RESUME and key in saved and saved[key] != value:
            flag = f"--{key.replace('_', '-')}"
            raise UsageError(
                f"{flag} {format_default(value)} differs from the resumed run's "
                f"{format_default(saved[key])}: a resumed run keeps the model, initialization, "
                f"data split and optimizer state its checkpoint holds (start a new run to "
                f"change {flag})"
            )


def _cifar10_directory(options: dict[str, Any], download: bool) -> str:
    """The CIFAR-10 batches folder: --data-dir, the download cache, or a usage error."""
    from convnet import data

    directory = options["data_dir"]
    if download:
        with user_errors():
            return str(Path(data.download_cifar10(directory)).absolute())
    if directory is not None:
        return directory
    if data.cifar10_is_cached():
        return str((data.default_data_dir() / "cifar-10-batches-py").absolute())
    raise UsageError(
        "--dataset cifar10 needs --data-dir (the cifar-10-batches-py folder) or --download "
        f"(fetches it into {data.default_data_dir()})"
    )


def _split_sizes(options: dict[str, Any], given: set[str], available: int) -> tuple[int, int]:
    """CIFAR-10's training and validation images, or a usage error naming only the sizes
    that were given (on the command line or in the saved options)."""
    num_val = options["num_val"] or CIFAR10_VALIDATION_IMAGES
    num_train = options["num_train"] or max(available - num_val, 1)
    if num_train + num_val <= available:
        return num_train, num_val

    def named(key: str, value: int) -> str:
        flag = f"--{key.replace('_', '-')} {value}"
        return flag if key in given else f"the default {flag}"

    if "num_train" in given:
        need = f"{named('num_train', num_train)} and {named('num_val', num_val)} need "
        need += str(num_train + num_val)
        lower = "lower --num-train or --num-val"
    else:  # all the training images but the validation ones: at least one
        need = f"{named('num_val', num_val)} and one training image need {num_val + 1}"
        lower = "lower --num-val"
    raise UsageError(f"{need} CIFAR-10 training images, there are {available}: {lower}")


def load_data(
    options: dict[str, Any], given: set[str], *, download: bool = False
) -> dict[str, np.ndarray]:
    """The dataset the options describe, with ``scale`` (what the raw pixels were
    multiplied by); ``options["data_dir"]`` is set for CIFAR-10. ``given``: the options
    given on the command line or saved, which a message may name."""
    from convnet import data

    dtype = np.dtype(options["dtype"])
    if options["dataset"] == "digits":
        wrong = [f"--{key.replace('_', '-')}" for key in ("data_dir", "download") if key in given]
        if wrong:
            raise UsageError(
                f"{' and '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for --dataset "
                "cifar10: the digits come with scikit-learn"
            )
        with user_errors(kinds=(*USER_ERRORS, ImportError)):  # ImportError: no scikit-learn
            dataset = data.load_digits_dataset(
                dtype=dtype, num_validation=options["num_val"] or 270
            )
        dataset["scale"] = np.array(data.DIGITS_SCALE)
    else:
        options["data_dir"] = _cifar10_directory(options, download)
        with user_errors():
            X_train, y_train, X_test, y_test = data.load_cifar10(options["data_dir"], dtype=dtype)
        num_train, num_val = _split_sizes(options, given, len(X_train))
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


def build_model(options: dict[str, Any], dataset: dict[str, np.ndarray]) -> Any:
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


def score(
    model: Any, X: np.ndarray, y: np.ndarray, ranks: distributed.Ranks | None = None
) -> tuple[float, float]:
    """Accuracy and loss on the first ACCURACY_SAMPLES images (all of them for small sets),
    each rank of ``ranks`` scoring its share."""
    from convnet.solver import evaluate

    ranks = ranks or distributed.Ranks()
    return ranks.mean_over_shares(
        functools.partial(evaluate, model), X[:ACCURACY_SAMPLES], y[:ACCURACY_SAMPLES]
    )
