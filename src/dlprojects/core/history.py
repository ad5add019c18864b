"""The history of a training run, one row per epoch: the contract both training loops honour.

`training.fit` (torch) and `numpy_nn.fit` (NumPy) call `on_epoch(epoch, metrics)` after each epoch
(the stage logs it to MLflow) and `on_history(history)` with every epoch so far, resumed ones
included (the stage writes it to `history.csv`, a DVC plot file and the source of every loss-curve
figure). The stage reads the outcome as a `FitResult`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from dlprojects.core.files import atomic_path

TIMINGS = ("epoch_seconds", "samples_per_second")  # MLflow metrics, not history.csv columns


@dataclass(frozen=True)
class FitResult:
    history: list[dict[str, float]]  # {"epoch": 1, "train_loss": ..., "val_accuracy": ..., ...}
    best_epoch: int  # counted from 1; its weights are the model's when `fit` returns

    @property
    def best(self) -> dict[str, float]:
        return self.history[self.best_epoch - 1]

    @property
    def train_seconds(self) -> float:
        return sum(row["epoch_seconds"] for row in self.history)


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """history.csv, written then renamed. Timings vary from run to run, so they stay out of it
    (they are in MLflow): the same params and seed write the same file, and `dvc repro --force`
    leaves dvc.lock as it was."""
    with atomic_path(path) as scratch, scratch.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in history[0] if k not in TIMINGS],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def history_writer(path: Path):
    """The `on_history` callback that keeps `path` up to date as training goes."""
    return lambda history: write_history(history, path)


def read_history(path: Path) -> list[dict[str, float]]:
    with Path(path).open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def best_epoch(history: list[dict[str, float]], select: str = "val_accuracy") -> int:
    """The epoch the loops keep: the first with the highest `select`."""
    return int(max(history, key=lambda row: row[select])["epoch"])


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
