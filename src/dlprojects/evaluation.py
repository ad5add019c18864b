"""What every evaluate stage writes: metrics JSON (a DVC metrics file) and per-class figures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Write then rename, so a DVC metrics file is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
    return path


def per_class_accuracy(matrix: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Recall of each class from a confusion matrix (rows are true classes)."""
    return {name: float(matrix[i, i] / max(1, matrix[i].sum())) for i, name in enumerate(class_names)}


def best_of_history(history: list[dict[str, float]]) -> dict[str, float]:
    """The best value over epochs of each loss (min) and accuracy (max), named `best_<metric>`."""
    best = {}
    for key in history[0]:
        values = [row[key] for row in history]
        if key.endswith("_loss"):
            best[f"best_{key}"] = min(values)
        elif key.endswith("_accuracy"):
            best[f"best_{key}"] = max(values)
    return best


def write_predictions(labels: np.ndarray, probabilities: np.ndarray, path: Path,
                      predicted: np.ndarray | None = None) -> Path:
    """The test set's predictions as CSV, one row per test example: `index`, true `label`,
    `predicted` class (default: the most probable) and the probability of each class, `p_0`...
    (6 decimals, so the bytes repeat whenever the model does).

    Every evaluate stage writes one as a cached DVC out (not in git): a fresh clone lacks it, so
    `dvc repro` runs the evaluate stage, which logs the test metrics and registers the model in
    that clone's MLflow store, even where training reproduced the committed model."""
    path = Path(path)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    predicted = (probabilities.argmax(axis=1) if predicted is None
                 else np.asarray(predicted).astype(np.int64))
    header = ["index", "label", "predicted", *(f"p_{c}" for c in range(probabilities.shape[1]))]
    lines = [",".join(header)]
    lines += [f"{index},{label},{guess}," + ",".join(f"{p:.6f}" for p in row)
              for index, (label, guess, row) in enumerate(zip(labels, predicted, probabilities))]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, path)
    return path
