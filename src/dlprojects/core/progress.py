"""What a training loop carries from epoch to epoch, and into its checkpoint: the history so far
and the best epoch, its score and its weights. The torch loop (`dlprojects.core.training.fit`) and
the NumPy one (`numpy_nn.fit`) both keep a `Progress`, so they resume, select and report alike
(`dlprojects.core.history`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dlprojects.core.errors import TrainingDiverged
from dlprojects.core.history import FitResult


@dataclass
class Progress:
    select: str = "val_accuracy"  # the metric the best epoch has highest (the first such epoch)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0  # counted from 1; 0 before any epoch
    best_score: float = -math.inf
    best_state: dict[str, Any] | None = None

    @property
    def next_epoch(self) -> int:
        return len(self.history) + 1

    def add(self, row: dict[str, float], state: Callable[[], dict[str, Any]]) -> None:
        """Append an epoch's `row` (with its "epoch"); when it is the best yet, keep a copy of the
        weights, `state()`."""
        self.history.append(row)
        if row[self.select] > self.best_score:
            self.best_score, self.best_epoch = row[self.select], int(row["epoch"])
            self.best_state = state()

    def stalled(self, patience: int | None) -> bool:
        """No gain in `select` for `patience` epochs (never, without a patience)."""
        return (patience is not None and self.best_epoch > 0
                and self.next_epoch - self.best_epoch > patience)

    def record(self) -> dict[str, Any]:
        """The checkpoint's JSON part of this progress (the best weights are arrays)."""
        return {"history": self.history, "best_epoch": self.best_epoch,
                "best_score": self.best_score}

    @classmethod
    def restored(cls, record: dict[str, Any], best_state: dict[str, Any] | None,
                 select: str = "val_accuracy") -> Progress:
        return cls(select, record["history"], record["best_epoch"], record["best_score"],
                   best_state)

    def result(self) -> FitResult:
        return FitResult(history=self.history, best_epoch=self.best_epoch)


def check_finite(loss: float, where: str) -> None:
    """Raise `TrainingDiverged` when `loss` is NaN or infinite; `where` says when it happened."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"the loss became {loss} {where}; lower the learning rate")
