"""The ``convnet`` command: ``train``, ``evaluate``, ``predict``, ``info`` and ``bench``.

``convnet train`` trains a model on the bundled digits (default) or on CIFAR-10 and writes
``summary.json``, ``model.npz``, ``preprocessing.npz``, ``curves.png``, ``filters.png``,
``options.json`` and the epoch checkpoint ``checkpoint.npz`` into a new folder per run,
``runs/<date>_<time>/`` (:mod:`convnet.cli.train`); ``runs/latest`` points at the newest
run that produced a model (a symlink; where symlinks cannot be made, a small file holding
the folder's name, which every convnet command follows). ``--out DIR`` names the folder
instead. ``--resume`` continues a run from its checkpoint with its saved options, or
finishes one whose training is done. ``convnet evaluate RUN/model.npz`` scores a saved
model on the test split of its dataset; ``convnet predict RUN/model.npz IMAGES.npy``
writes its labels (:func:`convnet.runs.load_run` does the same in Python).

A user error (a missing dataset, a bad option, a damaged file, a bad ``CONVNET_*``
variable, a run folder in use) prints one line to stderr and exits with status 2; a bug
still shows its traceback.

Under an MPI launcher with N > 1 ranks every rank first reports whether it could start
(its environment, its arguments): one rank's failure ends every rank with that rank's
message, and ranks started with other arguments than rank 0 get a warning (rank 0's
options apply). ``convnet train`` then trains data-parallel over the N ranks
(:mod:`convnet.distributed`): rank 0 reads the checkpoint and saved options, makes the run
folder, writes every file and prints; an error on one rank ends every rank.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from convnet import _environment, distributed
from convnet._io import atomic_open
from convnet.cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    NPY_READ_ERRORS,
    UsageError,
    plural,
    user_errors,
)
from convnet.cli.options import (
    ACCURACY_SAMPLES,
    build_parser,
    load_data,
    read_saved_options,
    resolve_options,
    score,
)
from convnet.runs import OPTIONS_FILE, PREPROCESSING_FILE, follow_latest, load_run


def _train(args: argparse.Namespace) -> int:
    from convnet.cli.train import run_train

    ranks = distributed.Ranks(distributed.world())
    with ranks.abort_on_error(quiet=(UsageError,)):
        if not ranks.distributed:
            return run_train(args, ranks)
        from threadpoolctl import threadpool_limits

        from convnet._parallel import get_num_threads

        # the ranks share the machine's cores: BLAS calls outside the fast layers too
        with threadpool_limits(limits=get_num_threads(), user_api="blas"):
            return run_train(args, ranks)


def _evaluate(args: argparse.Namespace) -> int:
    from convnet.serialization import load_model

    with user_errors():
        model_path = follow_latest(args.model_file)
        model = load_model(model_path)
    saved = read_saved_options(model_path.parent / OPTIONS_FILE)
    if not saved and args.dataset is None:
        raise UsageError(
            f"no {OPTIONS_FILE} beside {model_path} says which dataset it was trained on: "
            "pass --dataset"
        )
    options, given = resolve_options(args, saved)
    dataset = load_data(options, given, download=args.download)
    with user_errors(f"{model_path} does not fit the {options['dataset']} images: "):
        accuracy, loss = score(model, dataset["X_test"], dataset["y_test"])
    count = min(len(dataset["y_test"]), ACCURACY_SAMPLES)
    print(
        f"test accuracy {accuracy:.4f}, loss {loss:.4f} on the {count} test images of "
        f"{options['dataset']}"
    )
    return 0


def _read_images(path: Path) -> np.ndarray:
    with user_errors(f"cannot read the images {path}: ", NPY_READ_ERRORS):
        images = np.load(path, allow_pickle=False)
    if not isinstance(images, np.ndarray):
        images.close()
        raise UsageError(f"{path} must be an .npy file holding one array, not an .npz archive")
    if images.dtype.kind not in "iuf":
        raise UsageError(f"{path} must hold real numbers (float or integer), got {images.dtype}")
    if images.ndim != 4:
        raise UsageError(f"{path} must hold images (N, C, H, W), got shape {images.shape}")
    return images


def _write_table(path: Path, values: np.ndarray, fmt: str) -> None:
    with atomic_open(path) as handle:
        if path.suffix == ".npy":
            np.save(handle, values)
        else:
            text = io.StringIO()
            np.savetxt(text, values, fmt=fmt, delimiter=",")
            handle.write(text.getvalue().encode())


def _predict(args: argparse.Namespace) -> int:
    with user_errors():
        run = load_run(args.model_file)
    if run.preprocessing is None and not args.no_preprocessing:
        raise UsageError(
            f"no {PREPROCESSING_FILE} beside {args.model_file}: pass --no-preprocessing if "
            "the images are already preprocessed as the training images were"
        )
    images = _read_images(args.images)
    with user_errors(f"{args.images}: "):
        scores = run.scores(images, args.batch_size, preprocessed=args.no_preprocessing)
    labels = np.argmax(scores, axis=1).astype(np.int64)
    if args.probabilities is not None:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        with user_errors("cannot write the probabilities: "):
            _write_table(args.probabilities, probabilities, "%.6g")
    if args.out is None:
        sys.stdout.write("".join(f"{label}\n" for label in labels))
    else:
        with user_errors("cannot write the labels: "):
            _write_table(args.out, labels, "%d")
        print(f"wrote {plural(len(labels), 'label')} to {args.out}", file=sys.stderr)
    return 0


def _bench(argv: Sequence[str]) -> int:
    try:
        from convnet import bench
    except ImportError as error:
        raise UsageError(f"convnet bench is unavailable: {error}") from error
    result = bench.main(list(argv))
    return int(result or 0)


def _info() -> int:
    from convnet._config import show_config

    show_config()
    return 0


def _check_environment() -> None:
    """Every CONVNET_* variable holds a value it accepts, else a one-line UsageError."""
    try:
        _environment.check_all()
    except ValueError as error:
        raise UsageError(str(error)) from error


def _check_backend(*, unbuilt_checkout_allowed: bool = False) -> None:
    """A one-line UsageError for a backend that cannot load, or an unbuilt checkout (whose
    naive layers would run silently) unless ``unbuilt_checkout_allowed``."""
    try:
        from convnet import _backend
    except (ValueError, ImportError) as error:
        raise UsageError(str(error)) from error
    if _backend.unbuilt_checkout and not unbuilt_checkout_allowed:
        raise UsageError(
            f"the compiled kernel is not in use: {_backend.naive_reason}. To fix: "
            f"{_backend.CHECKOUT_FIX}"
        )


def _command(argv: list[str]) -> Callable[[], int]:
    """What ``argv`` asks for, ready to run, after checking the environment, the backend
    and the arguments (a UsageError for any of them)."""
    _check_environment()
    if argv[0] == "bench":
        _check_backend()
        return lambda: _bench(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:  # --help, --version: printed already
        code = int(exit_request.code or 0)
        return lambda: code
    if args.command == "info":
        _check_backend(unbuilt_checkout_allowed=True)  # info reports it itself
        return _info
    _check_backend()
    commands = {"train": _train, "evaluate": _evaluate, "predict": _predict}
    return lambda: commands[args.command](args)


def _start_together(argv: list[str], failure: UsageError | None) -> None:
    """Under an MPI launcher with several ranks, every rank says whether it could start:
    a failure anywhere (its environment or arguments differ, say) becomes a UsageError on
    every rank, naming the ranks that failed; arguments that differ from rank 0's get a
    warning. So no rank is left waiting for one that stopped before MPI began.
    """
    info = distributed.launch_info()
    if info is None:
        if failure is not None:
            raise failure
        return
    try:
        comm = distributed.world()
    except ImportError as error:
        raise failure or UsageError(str(error)) from error
    reports = comm.allgather((None if failure is None else str(failure), argv))
    failed = {rank: message for rank, (message, _) in enumerate(reports) if message is not None}
    if failed:
        size = len(reports)
        if len(failed) == size and len(set(failed.values())) == 1:
            message = next(iter(failed.values()))
        else:
            message = "; ".join(f"rank {rank} of {size}: {text}" for rank, text in failed.items())
        raise distributed.raised_on_every_rank(UsageError(message))
    others = {rank: other for rank, (_, other) in enumerate(reports) if other != reports[0][1]}
    if others and comm.Get_rank() == 0:
        shown = "; ".join(f"rank {rank}: {' '.join(other)}" for rank, other in others.items())
        print(
            f"convnet: warning: ranks were started with other arguments than rank 0's "
            f"({' '.join(argv)}): {shown}; rank 0's options apply",
            file=sys.stderr,
        )


def _run(argv: list[str]) -> int:
    if not argv:
        build_parser().print_help()
        return 0
    run, failure = None, None
    try:
        run = _command(argv)
    except UsageError as error:
        failure = error
    _start_together(argv, failure)
    return run()


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
        (one line on stderr), 1 when training diverged or its checkpoint could not be
        written, 130 when interrupted, 141 when the reader of stdout went away
        (``convnet info | head -1``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _run(argv)
        sys.stdout.flush()
        return code
    except UsageError as error:
        return _fail(EXIT_USAGE, f"convnet: error: {error}", error)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt as interrupt:
        return _fail(EXIT_INTERRUPTED, "convnet: interrupted", interrupt)


def _fail(status: int, message: str, error: BaseException) -> int:
    """Print ``message`` to stderr and return ``status``. Under MPI an error every rank
    raised alike is printed by rank 0 alone; a rank's own error by that rank, with its
    number."""
    info = distributed.launch_info()
    if info is None:
        print(message, file=sys.stderr)
    elif getattr(error, distributed.ALL_RANKS_ATTRIBUTE, False):
        if info["rank"] == 0:
            print(message, file=sys.stderr)
    else:
        prefix = f"convnet: rank {info['rank']} of {info['size']}: "
        print(prefix + message.removeprefix("convnet: "), file=sys.stderr)
    return status
