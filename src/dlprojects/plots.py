"""Matplotlib figures shared by the four projects; each function saves one PNG and returns its path."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_history(path: Path) -> list[dict[str, float]]:
    with Path(path).open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def loss_curves(histories: dict[str, list[dict[str, float]]], path: Path, *,
                splits: Sequence[str] = ("train", "val"), title: str = "") -> Path:
    """Per-epoch loss (left) and accuracy (right) of each run in `histories`, one colour per run."""
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"train": "-", "val": ":", "test": "--"}
    for colour, (run, history) in zip(plt.cm.tab10.colors, histories.items()):
        epochs = [row["epoch"] for row in history]
        for split in splits:
            if f"{split}_loss" in history[0]:
                loss_axis.plot(epochs, [row[f"{split}_loss"] for row in history],
                               styles.get(split, "-"), color=colour, label=f"{run} {split}")
                accuracy_axis.plot(epochs, [row[f"{split}_accuracy"] for row in history],
                                   styles.get(split, "-"), color=colour, label=f"{run} {split}")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title=f"{title} loss".strip())
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title=f"{title} accuracy".strip())
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(figure, path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], path: Path, *,
                     title: str = "confusion matrix") -> Path:
    size = max(4.0, 0.55 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    threshold = matrix.max() / 2
    for row, column in np.ndindex(matrix.shape):
        axis.text(column, row, str(matrix[row, column]), ha="center", va="center", fontsize=7,
                  color="white" if matrix[row, column] > threshold else "black")
    axis.set(xlabel="predicted", ylabel="true", title=title)
    return _save(figure, path)


def image_grid(images: np.ndarray, captions: Sequence[str], path: Path, *, columns: int = 8,
               title: str = "") -> Path:
    """Greyscale (N, H, W) or colour (N, H, W, 3) images in a grid, each with its caption."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.7 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions):
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        axis.set_title(caption, fontsize=7)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def probability_bars(images: np.ndarray, probabilities: np.ndarray, labels: np.ndarray,
                     class_names: Sequence[str], path: Path) -> Path:
    """Each sample's image beside a bar chart of its predicted class probabilities; the true class
    in green, a wrong top prediction in red."""
    rows = len(images)
    figure, axes = plt.subplots(rows, 2, figsize=(8, 1.6 * rows), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 3]})
    positions = np.arange(len(class_names))
    for (image_axis, bar_axis), image, probs, label in zip(axes, images, probabilities, labels):
        predicted = int(np.argmax(probs))
        image_axis.imshow(image, cmap="gray")
        image_axis.axis("off")
        image_axis.set_title(f"true: {class_names[label]}", fontsize=8)
        colours = ["tab:gray"] * len(class_names)
        colours[predicted] = "tab:red"
        colours[label] = "tab:green"
        bar_axis.barh(positions, probs, color=colours)
        bar_axis.set_yticks(positions, class_names, fontsize=7)
        bar_axis.invert_yaxis()
        bar_axis.set_xlim(0, 1)
        bar_axis.set_title(f"predicted: {class_names[predicted]} ({probs[predicted]:.2f})", fontsize=8)
    axes[-1][1].set_xlabel("predicted probability")
    return _save(figure, path)
