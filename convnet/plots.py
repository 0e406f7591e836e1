"""PNG figures of a training run: learning curves and first-layer filters.

matplotlib (an optional dependency, ``pip install "convnet[train]"``) is imported when a
figure is drawn. Figures are rendered by the Agg canvas directly, without pyplot, so the
caller's matplotlib backend and open figures are left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convnet._io import atomic_open


def _new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure attached to an Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            'plots need matplotlib: pip install "convnet[train]" (or pip install matplotlib)'
        ) from error
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _integer_ticks(axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(figure: Any, path: str | os.PathLike) -> Path:
    with atomic_open(path) as handle:
        figure.savefig(handle, format="png", dpi=100)
    return Path(path)


def plot_curves(
    history: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    test_accuracy: float | None = None,
) -> Path:
    """Draw the losses and the train/validation accuracy against the epoch.

    The top panel shows every iteration's training loss (dots, placed at fractional
    epochs), the mean training loss of each epoch and the validation loss after each
    epoch; the bottom one the accuracies after each epoch and, as a dashed line, the test
    accuracy of the final model. Epoch ticks are integers.

    Parameters
    ----------
    history : mapping
        ``loss_history`` (one value per iteration), ``train_acc_history`` and
        ``val_acc_history`` (one per epoch), optionally ``epoch_loss_history`` and
        ``val_loss_history`` (one per epoch), as in ``Solver.history``.
    path : str or Path
        The PNG file to write (atomically).
    test_accuracy : float, optional
        The final model's test accuracy.

    Returns
    -------
    Path
    """
    losses = np.asarray(history["loss_history"], dtype=float)
    train_acc = np.asarray(history["train_acc_history"], dtype=float)
    val_acc = np.asarray(history["val_acc_history"], dtype=float)
    epoch_losses = np.asarray(history.get("epoch_loss_history", []), dtype=float)
    val_losses = np.asarray(history.get("val_loss_history", []), dtype=float)
    epochs = max(train_acc.size, 1)
    per_epoch = losses.size / epochs if losses.size else 1.0
    figure = _new_figure(7, 7)
    loss_axes, acc_axes = figure.subplots(2, 1)
    loss_axes.plot(
        np.arange(1, losses.size + 1) / per_epoch,
        losses,
        ".",
        markersize=3,
        alpha=0.4,
        label="training (each iteration)",
    )
    if epoch_losses.size:
        loss_axes.plot(
            np.arange(1, epoch_losses.size + 1), epoch_losses, "o-", label="training (epoch mean)"
        )
    if val_losses.size:
        loss_axes.plot(np.arange(1, val_losses.size + 1), val_losses, "o-", label="validation")
    loss_axes.set(title="Loss", xlabel="epoch", ylabel="loss")
    loss_axes.legend(loc="upper right")
    acc_axes.plot(np.arange(1, train_acc.size + 1), train_acc, "o-", label="train")
    acc_axes.plot(np.arange(1, val_acc.size + 1), val_acc, "o-", label="validation")
    if test_accuracy is not None:
        acc_axes.axhline(
            test_accuracy,
            color="black",
            linestyle="--",
            label=f"test, final model: {test_accuracy:.4f}",
        )
    acc_axes.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    acc_axes.legend(loc="lower right")
    acc_axes.grid(alpha=0.3)
    for axes in (loss_axes, acc_axes):
        _integer_ticks(axes)
    return _save(figure, path)


MAX_FILTERS_SHOWN = 144


def normalize_filters(W1: np.ndarray) -> np.ndarray:
    """Scale every filter on its own to [0, 1] and move channels last.

    Parameters
    ----------
    W1 : ndarray, shape (F, C, k_h, k_w)
        C must be 1 (grey) or 3 (RGB).

    Returns
    -------
    ndarray of float64, shape (F, k_h, k_w, C)
        A constant filter becomes all zeros.
    """
    W1 = np.asarray(W1, dtype=float)
    if W1.ndim != 4 or W1.shape[1] not in (1, 3) or W1.shape[0] == 0:
        raise ValueError(
            f"filters must be (F, C, k_h, k_w) with F >= 1 and C 1 or 3, got {W1.shape}"
        )
    low = W1.min(axis=(1, 2, 3), keepdims=True)
    span = W1.max(axis=(1, 2, 3), keepdims=True) - low
    return ((W1 - low) / np.where(span > 0, span, 1)).transpose(0, 2, 3, 1)


def plot_filters(W1: np.ndarray, path: str | os.PathLike) -> Path:
    """Draw first-layer convolution filters as a framed grid of images.

    Parameters
    ----------
    W1 : ndarray, shape (F, C, k_h, k_w)
        One channel is drawn in grey, three as RGB; each filter is normalized on its own.
        At most the first 144 are drawn.
    path : str or Path
        The PNG file to write (atomically).

    Returns
    -------
    Path
    """
    images = normalize_filters(W1)[:MAX_FILTERS_SHOWN]
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    figure = _new_figure(6, 6 * rows / columns + 0.4)
    shown = f"{len(W1)}" if len(images) == len(W1) else f"the first {len(images)} of {len(W1)}"
    figure.suptitle(f"{shown} first-layer filters")
    for index, axes in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if index >= len(images):
            axes.set_axis_off()
        elif images.shape[3] == 1:
            axes.imshow(images[index, :, :, 0], cmap="gray", vmin=0, vmax=1)
        else:
            axes.imshow(images[index])
    return _save(figure, path)
