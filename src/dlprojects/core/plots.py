"""Matplotlib figures shared by the four projects; each function saves one PNG and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dlprojects.core.files import atomic_path  # noqa: E402


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_path(path) as scratch:
        figure.savefig(scratch, format=Path(path).suffix[1:], dpi=110)
    plt.close(figure)
    return Path(path)


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


def roc_pr_curves(curves: dict[str, dict[str, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """ROC (left) and precision-recall (right) curves of binary classifiers, one colour per run.

    `curves[run]` holds arrays fpr, tpr, recall, precision and the areas roc_auc and
    average_precision (shown in the legend)."""
    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4.4))
    for colour, (run, curve) in zip(plt.cm.tab10.colors, curves.items()):
        roc_axis.plot(curve["fpr"], curve["tpr"], color=colour,
                      label=f"{run} (AUC {curve['roc_auc']:.3f})")
        pr_axis.plot(curve["recall"], curve["precision"], color=colour,
                     label=f"{run} (AP {curve['average_precision']:.3f})")
    roc_axis.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate",
                 title=f"{title} ROC".strip(), xlim=(0, 1), ylim=(0, 1.01))
    pr_axis.set(xlabel="recall", ylabel="precision", title=f"{title} precision-recall".strip(),
                xlim=(0, 1), ylim=(0, 1.01))
    for axis in (roc_axis, pr_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right" if axis is roc_axis else "lower left")
    return _save(figure, path)


# ----------------------------------------------------------------- ViT: attention maps and patches


def _show(axis, image: np.ndarray, **kwargs) -> None:
    axis.imshow(image, cmap="gray" if image.ndim == 2 else None, **kwargs)
    axis.set_xticks([])
    axis.set_yticks([])


def attention_maps(images: np.ndarray, rollouts: np.ndarray, captions: Sequence[str], path: Path, *,
                   title: str = "") -> Path:
    """Each image (N, H, W) or (N, H, W, 3) above its attention map (N, P) from the class token to
    the P = g*g patches (attention rollout), one cell per patch, stretched to the map's own range
    (rollout keeps a large uniform share from the residual paths; the contrast is what it shows)."""
    count, height, width = images.shape[:3]
    side = int(round(np.sqrt(rollouts.shape[1])))
    maps = rollouts.reshape(count, side, side)
    figure, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.6), squeeze=False)
    for column, (image, heat, caption) in enumerate(zip(images, maps, captions)):
        _show(axes[0, column], image)
        axes[0, column].set_title(caption, fontsize=7)
        _show(axes[1, column], image, alpha=0.55)
        spread = float(heat.max() - heat.min())
        axes[1, column].imshow((heat - heat.min()) / max(spread, 1e-12), cmap="inferno", alpha=0.6,
                               vmin=0, vmax=1, interpolation="nearest",
                               extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    axes[0, 0].set_ylabel("test image", fontsize=8)
    axes[1, 0].set_ylabel("class-token\nattention", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def patch_grid(image: np.ndarray, patch_size: int, path: Path, *, title: str = "") -> Path:
    """One image (H, W) or (H, W, 3) with its patch grid drawn (left), and its patches apart in the
    order the ViT reads them, numbered by token position (0 is the class token) (right)."""
    height, width = image.shape[:2]
    rows, columns = height // patch_size, width // patch_size
    figure = plt.figure(figsize=(9, 4.4))
    outer = figure.add_gridspec(1, 2, width_ratios=[1, 1], wspace=0.15)
    whole = figure.add_subplot(outer[0])
    _show(whole, image)
    for edge in range(1, rows):
        whole.axhline(edge * patch_size - 0.5, color="tab:red", linewidth=1)
    for edge in range(1, columns):
        whole.axvline(edge * patch_size - 0.5, color="tab:red", linewidth=1)
    whole.set_title(f"{height}x{width} image, {patch_size}x{patch_size} patches", fontsize=9)
    cells = outer[1].subgridspec(rows, columns, wspace=0.08, hspace=0.25)
    low, high = float(image.min()), float(image.max())
    for row, column in np.ndindex(rows, columns):
        axis = figure.add_subplot(cells[row, column])
        patch = image[row * patch_size:(row + 1) * patch_size,
                      column * patch_size:(column + 1) * patch_size]
        _show(axis, patch, **({"vmin": low, "vmax": high} if image.ndim == 2 else {}))
        axis.set_title(str(1 + row * columns + column), fontsize=6, pad=1)
    if title:
        figure.suptitle(title, fontsize=10)
    with atomic_path(path) as scratch:  # tight_layout cannot place nested grids
        figure.savefig(scratch, format=Path(path).suffix[1:], dpi=110, bbox_inches="tight")
    plt.close(figure)
    return Path(path)
