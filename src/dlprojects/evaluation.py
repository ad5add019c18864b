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
