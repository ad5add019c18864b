"""Test metrics of a classifier, and what every evaluate stage writes: metrics JSON (a DVC metrics
file) and the test predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dlprojects.core.files import write_atomic


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Write then rename, so a DVC metrics file is never half-written."""
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of the true classes' probabilities."""
    return float(-np.log(probabilities[np.arange(len(labels)), labels] + 1e-12).mean())


def classifier_metrics(probabilities: np.ndarray, labels: np.ndarray,
                       class_names: list[str]) -> tuple[dict[str, Any], np.ndarray]:
    """({test_accuracy, test_loss, per_class_accuracy}, confusion matrix) of class
    probabilities (N, C) against labels (N,); the prediction is the most probable class."""
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, len(class_names))
    return {"test_accuracy": float((predictions == labels).mean()),
            "test_loss": cross_entropy(probabilities, labels),
            "per_class_accuracy": per_class_accuracy(matrix, class_names)}, matrix


def per_class_accuracy(matrix: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Recall of each class from a confusion matrix (rows are true classes)."""
    return {name: float(matrix[i, i] / max(1, matrix[i].sum()))
            for i, name in enumerate(class_names)}


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
    return write_atomic(path, "\n".join(lines) + "\n")
