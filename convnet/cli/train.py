"""``convnet train``: plan the run, open its folder, train, then write what it produced.

Every fault leaves a run that can be resumed or finished: the folder is locked while a
process uses it; an interrupt, a divergence or a full disk ends training with one line
saying what the last checkpoint holds (or, before the first checkpoint of a new run,
removes what it had written, so no empty run is left behind); and ``--resume`` on a run
whose training is done writes the outputs it lacks (a process killed between its last
checkpoint and its model, say). ``runs/latest`` moves only when a model is written.

Under MPI rank 0 alone plans, holds the lock, writes and prints; every rank trains.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convnet import distributed
from convnet._conv_setting import get_conv_algorithm, set_conv_algorithm
from convnet._io import write_text
from convnet._memory import keep_freed_memory
from convnet._version import __version__
from convnet.checkpoint import CHECKPOINT_NAME, checkpoint_epoch
from convnet.cli import run_folder
from convnet.cli.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    UsageError,
    plural,
    user_errors,
)
from convnet.cli.options import (
    ACCURACY_SAMPLES,
    RUNS_DIR,
    build_model,
    check_model_options,
    check_resume_options,
    load_data,
    read_saved_options,
    resolve_options,
    score,
)
from convnet.runs import (
    CURVES_FILE,
    FILTERS_FILE,
    MODEL_FILE,
    OPTIONS_FILE,
    PREPROCESSING_FILE,
    SUMMARY_FILE,
    Preprocessing,
    follow_latest,
)

# What a run produces at its end, in the order written: the model first, then its record.
OUTPUTS = (MODEL_FILE, SUMMARY_FILE, CURVES_FILE, FILTERS_FILE)


@dataclass
class RunPlan:
    """What ``convnet train`` will do (decided on rank 0, sent to every rank).

    Attributes
    ----------
    options : dict
        The run's options, as options.json records them.
    given : set of str
        The options given on the command line or saved (messages name only these).
    checkpoint : Path or None
        The checkpoint to resume from.
    done : int
        The epochs that checkpoint holds (0 for a new run).
    requested_epochs : int
        The epochs asked for (``options["epochs"]`` is ``done`` when that is more).
    folder : Path or None
        The run folder; None for a new one in ``runs/``.
    outputs : tuple of str
        The files to write at the end: all of ``OUTPUTS``, or when finishing a run whose
        training is done, those it lacks (none: nothing to do).
    """

    options: dict[str, Any]
    given: set[str]
    checkpoint: Path | None
    done: int
    requested_epochs: int
    folder: Path | None
    outputs: tuple[str, ...]

    @property
    def finishing(self) -> bool:
        """A resumed run with no epoch left to train."""
        return self.checkpoint is not None and self.done >= self.requested_epochs


@dataclass
class OpenedFolder:
    """The run folder, once created (``created``) or found, locked and written to."""

    path: Path
    created: bool


def _checkpoint_to_resume(args: argparse.Namespace) -> Path | None:
    """--resume CHECKPOINT, else OUT/checkpoint.npz, else the newest in runs/."""
    if args.resume is None:
        return None
    with user_errors():
        if args.resume is not True:
            checkpoint = follow_latest(args.resume)
        elif args.out is not None:
            checkpoint = follow_latest(args.out) / CHECKPOINT_NAME
        else:
            newest = run_folder.newest_checkpoint(RUNS_DIR)
            if newest is None:
                raise UsageError(
                    f"no run in {RUNS_DIR}/ has a checkpoint to resume: give --resume "
                    "CHECKPOINT, or --out with the run's folder"
                )
            checkpoint = newest
    if not checkpoint.is_file():
        raise UsageError(f"no checkpoint to resume from at {checkpoint}")
    return checkpoint


def _folder_path(args: argparse.Namespace, checkpoint: Path | None) -> Path | None:
    """--out, else the checkpoint's folder when resuming, else None (a new run folder)."""
    if args.out is not None:
        with user_errors():
            return follow_latest(args.out).absolute()
    return None if checkpoint is None else checkpoint.parent.absolute()


def _claim_folder(folder: Path, checkpoint: Path | None, held: contextlib.ExitStack) -> None:
    """Lock an existing run folder, then refuse it if it holds another run: one not being
    resumed (a new run there would mix two runs' files)."""
    if not folder.is_dir():
        raise UsageError(f"the run folder {folder} exists and is not a folder")
    with user_errors(f"cannot use the run folder {folder}: "):
        held.enter_context(run_folder.locked(folder))
    own = checkpoint is not None and checkpoint.parent.resolve() == folder.resolve()
    present = run_folder.run_files(folder)
    if present and not own:
        instead = (
            "resume it into its own folder or an empty one"
            if checkpoint is not None
            else "continue it with --resume, or choose another --out"
        )
        raise UsageError(f"{folder} holds another run ({', '.join(present)}): {instead}")


def plan_run(args: argparse.Namespace, held: contextlib.ExitStack) -> RunPlan:
    """Decide what to do: resolve the options, lock an existing run folder (kept in
    ``held``) and read how far the checkpoint got. Nothing is written."""
    checkpoint = _checkpoint_to_resume(args)
    saved = read_saved_options(checkpoint.parent / OPTIONS_FILE) if checkpoint else {}
    options, given = resolve_options(args, saved)
    check_model_options(args, options)
    if checkpoint is not None:
        check_resume_options(args, saved)
    elif options["epochs"] == 0:
        raise UsageError("--epochs 0 trains nothing: give at least 1")
    folder = _folder_path(args, checkpoint)
    if folder is not None and folder.exists():
        _claim_folder(folder, checkpoint, held)
    done = 0
    if checkpoint is not None:
        with user_errors():
            done = checkpoint_epoch(checkpoint)
    requested = options["epochs"]
    outputs = OUTPUTS
    if checkpoint is not None and done >= requested:
        options["epochs"] = done  # what the run trained, as its records will say
        if folder is not None and folder.resolve() == checkpoint.parent.resolve():
            outputs = tuple(name for name in OUTPUTS if not (folder / name).exists())
    return RunPlan(options, given, checkpoint, done, requested, folder, outputs)


def _nothing_left(plan: RunPlan) -> str:
    return (
        f"convnet: nothing left to train: {plan.checkpoint} holds epoch {plan.done} of "
        f"{plan.requested_epochs}; pass --epochs with more than {plan.done} to train further "
        "(the run's files were left as they were)"
    )


def open_run_folder(
    plan: RunPlan, dataset: dict[str, np.ndarray], held: contextlib.ExitStack
) -> OpenedFolder:
    """Create the run folder if need be and lock it (the lock kept in ``held``), then write
    its options.json and preprocessing.npz."""
    created = plan.folder is None or not plan.folder.exists()
    with user_errors("cannot create the run folder: "):
        if plan.folder is None:
            path = run_folder.unique_folder(RUNS_DIR, run_folder.timestamp()).absolute()
        else:
            path = plan.folder
            path.mkdir(parents=True, exist_ok=True)
    opened = OpenedFolder(path, created)
    try:
        if created:
            with user_errors(f"cannot use the run folder {path}: "):
                held.enter_context(run_folder.locked(path))
        with user_errors(f"cannot write the run folder {path}: "):
            write_text(path / OPTIONS_FILE, json.dumps(plan.options, indent=2) + "\n")
            preprocessing = Preprocessing(float(dataset["scale"]), dataset["mean_image"])
            preprocessing.save(path / PREPROCESSING_FILE)
    except BaseException:
        _discard(opened, plan)
        raise
    return opened


def _discard(opened: OpenedFolder, plan: RunPlan) -> bool:
    """Remove what this process wrote into a run folder that holds no checkpoint (the
    folder too, if this process created it); return whether it did. A resumed run's
    folder is left alone."""
    if (opened.path / CHECKPOINT_NAME).exists() or (
        plan.checkpoint is not None and not opened.created
    ):
        return False
    if opened.created:
        shutil.rmtree(opened.path, ignore_errors=True)
    else:
        for name in (OPTIONS_FILE, PREPROCESSING_FILE):
            with contextlib.suppress(OSError):
                (opened.path / name).unlink()
    return True


def _where_it_stands(opened: OpenedFolder, plan: RunPlan, diverged: bool) -> str:
    """What the run folder now holds: the epoch of its checkpoint and how to go on (after a
    divergence: how to keep the model of the epochs before it), or that nothing was kept."""
    checkpoint = opened.path / CHECKPOINT_NAME
    if checkpoint.exists():
        try:
            epoch = checkpoint_epoch(checkpoint)
        except (ValueError, OSError) as error:
            return f"{checkpoint} cannot be read ({error})"
        command = f"convnet train --out {opened.path} --resume"
        if diverged:
            return (
                f"{checkpoint} holds epoch {epoch}: `{command} --epochs {epoch}` writes its model"
            )
        return f"{checkpoint} holds epoch {epoch}: continue with `{command}`"
    kept = "nothing was kept"
    if plan.checkpoint is not None:
        kept += f"; {plan.checkpoint} still holds epoch {plan.done}"
    if _discard(opened, plan):
        kept += f" ({opened.path} was removed)" if opened.created else ""
    return kept


def train_solver(solver: Any, opened: OpenedFolder | None, plan: RunPlan) -> int | None:
    """Train; on an interrupt, a divergence or an error writing the checkpoint, print one
    line saying where the run stands (rank 0: ``opened`` given) and return the exit status;
    None when the training finished. Any other exception removes a new run's files if it
    has no checkpoint yet, and propagates."""
    from convnet.solver import TrainingDiverged

    diverged = False
    try:
        solver.train()
        return None
    except KeyboardInterrupt:
        failure, what = EXIT_INTERRUPTED, f"interrupted in epoch {solver.epoch + 1}"
    except TrainingDiverged as error:
        failure, what, diverged = EXIT_FAILED, str(error), True
    except OSError as error:
        failure, what = EXIT_FAILED, f"cannot write the checkpoint: {error}"
    except BaseException:
        if opened is not None:
            _discard(opened, plan)
        raise
    if opened is not None:
        print(f"convnet: {what}; {_where_it_stands(opened, plan, diverged)}", file=sys.stderr)
    return failure


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


def scores_of(model: Any, dataset: dict[str, np.ndarray], ranks: distributed.Ranks) -> dict:
    """Accuracy and loss on each split (every rank scoring its share)."""
    val_accuracy, val_loss = score(model, dataset["X_val"], dataset["y_val"], ranks)
    train_accuracy, _ = score(model, dataset["X_train"], dataset["y_train"], ranks)
    test_accuracy, test_loss = score(model, dataset["X_test"], dataset["y_test"], ranks)
    return {
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "test_images": min(len(dataset["y_test"]), ACCURACY_SAMPLES),
    }


def summarize(
    plan: RunPlan, solver: Any, model: Any, scores: dict, ranks: distributed.Ranks, started: float
) -> dict[str, Any]:
    """summary.json: the scores, the histories, and what this process ran."""
    from convnet._backend import BACKEND

    return {
        **scores,
        "best_val_accuracy": solver.best_val_acc,
        "epochs": solver.epoch,
        "iterations": solver.iteration,
        "epochs_this_run": solver.epoch - plan.done,
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
        "resumed_from": None if plan.checkpoint is None else str(plan.checkpoint),
        "resumed_at_epoch": None if plan.checkpoint is None else plan.done,
        "options": plan.options,
        "model_config": model.config(),
    }


def write_outputs(
    folder: Path,
    names: tuple[str, ...],
    model: Any,
    solver: Any,
    summary: dict[str, Any],
    image_shape: tuple[int, ...],
) -> list[str]:
    """Write the outputs ``names`` of ``OUTPUTS`` into ``folder``; return those written."""
    from convnet.plots import plot_curves, plot_filters
    from convnet.serialization import save_model

    written = []
    later = f" (`convnet train --out {folder} --resume` writes it once possible)"
    for name in names:
        path = folder / name
        with user_errors(f"cannot write {path}{later}: ", kinds=(OSError, ImportError)):
            if name == MODEL_FILE:
                save_model(model, path)
            elif name == SUMMARY_FILE:
                write_text(path, json.dumps(summary, indent=2) + "\n")
            elif name == CURVES_FILE:
                plot_curves(solver.history, path, test_accuracy=summary["test_accuracy"])
            elif (filters := _first_layer_filters(model, image_shape)) is not None:
                plot_filters(filters, path)
            else:
                continue
        written.append(name)
    return written


def _point_latest(folder: Path) -> None:
    """``runs/latest`` at ``folder`` when it is a folder of ``runs/`` (a warning if not
    possible: the run itself is complete)."""
    if folder.parent.resolve() != RUNS_DIR.resolve():
        return
    try:
        run_folder.point_latest(RUNS_DIR, folder)
    except OSError as error:
        print(
            f"convnet: warning: cannot point {RUNS_DIR}/latest at {folder}: {error}",
            file=sys.stderr,
        )


def _last_line(plan: RunPlan, solver: Any, summary: dict, folder: Path, written: list[str]) -> str:
    """What the run did, in this process: the epochs it trained and their time, or, when
    it finished a run whose training was done, the files it wrote."""
    from convnet._backend import BACKEND, naive_reason

    accuracy = f"val accuracy {summary['val_accuracy']:.4f}, "
    accuracy += f"test accuracy {summary['test_accuracy']:.4f}"
    if plan.finishing:
        return (
            f"{accuracy} after {plural(solver.epoch, 'epoch')} (training had finished); wrote "
            f"{', '.join(written) or 'nothing'} to {folder}"
        )
    ran = solver.epoch - plan.done
    if plan.checkpoint is None:
        epochs = plural(ran, "epoch")
    else:
        epochs = f"epochs {plan.done + 1}-{solver.epoch}" if ran > 1 else f"epoch {solver.epoch}"
    line = f"{accuracy}, {epochs} in {summary['seconds']:.1f} s "
    line += f"({summary['images_per_second']:.0f} images/s)"
    if plan.checkpoint is not None:
        line += f", resumed after epoch {plan.done}"
    if BACKEND == "naive":
        line += f" on the slow naive backend ({naive_reason})"
    return f"{line}; wrote {folder}"


def _shared_dataset(plan: RunPlan, download: bool, ranks: distributed.Ranks) -> dict:
    """The dataset: rank 0 loads it first (and with --download fetches it), then the others."""
    first: dict[str, Any] = {}
    ranks.run_on_root(
        lambda: first.setdefault("dataset", load_data(plan.options, plan.given, download=download))
    )
    return first.get("dataset") or load_data(plan.options, plan.given, download=download)


def _make_solver(
    plan: RunPlan, model: Any, dataset: dict, args: argparse.Namespace, ranks: distributed.Ranks
) -> Any:
    """The Solver of the plan, the checkpoint loaded (rank 0 reads it)."""
    from convnet.solver import Solver

    options = plan.options
    with user_errors():
        return Solver(
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
            resume_from=plan.checkpoint,
            comm=ranks.comm,
        )


def run_train(args: argparse.Namespace, ranks: distributed.Ranks) -> int:
    """``convnet train`` on one process or as one of the ranks of ``ranks``."""
    started = time.perf_counter()
    with contextlib.ExitStack() as held:  # rank 0: the run folder's lock, to the end
        plan = ranks.run_on_root(plan_run, args, held)
        if not plan.outputs:
            if ranks.is_root:
                print(_nothing_left(plan))
            return 0
        dataset = _shared_dataset(plan, args.download, ranks)
        with user_errors():
            model = build_model(plan.options, dataset)
        # The algorithm that runs is the one recorded: the option's, else the process's.
        plan.options["conv_algorithm"] = plan.options["conv_algorithm"] or get_conv_algorithm()
        set_conv_algorithm(plan.options["conv_algorithm"])
        keep_freed_memory()  # process-wide, so the command does it, not the library's Solver
        solver = _make_solver(plan, model, dataset, args, ranks)
        # Only now, with the checkpoint loaded and found to fit, is anything written: a
        # rejected --resume leaves the run folder as it was (and makes no --out folder).
        opened = ranks.run_on_root(open_run_folder, plan, dataset, held)
        solver.checkpoint_dir = opened.path
        status = train_solver(solver, opened if ranks.is_root else None, plan)
        if status is not None:
            return status
        scores = scores_of(model, dataset, ranks)
        if not ranks.is_root:
            return 0
        summary = summarize(plan, solver, model, scores, ranks, started)
        image_shape = dataset["X_train"].shape[1:]
        written = write_outputs(opened.path, plan.outputs, model, solver, summary, image_shape)
        if MODEL_FILE in written:
            _point_latest(opened.path)
        print(_last_line(plan, solver, summary, opened.path, written))
    return 0
