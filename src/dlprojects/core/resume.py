"""What lets an interrupted training stage resume where it stopped: its checkpoint, the
fingerprint of the params that wrote it (a checkpoint of other params is never resumed), and the
MLflow run it was logging to (kept beside the checkpoint, so the resumed epochs go to that run)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINTS = Path("checkpoints")  # gitignored; removed once a stage's results are safe


def fingerprint(*objects: Any) -> str:
    """A short hash of the resolved params."""
    text = json.dumps(objects, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    fingerprint: str

    @classmethod
    def of(cls, name: str, resolved: Any, suffix: str = ".pt") -> Checkpoint:
        """checkpoints/<name><suffix>, for the params `resolved`."""
        return cls(CHECKPOINTS / f"{name}{suffix}", fingerprint(resolved))

    @property
    def run_file(self) -> Path:
        return self.path.with_suffix(".mlflow.json")

    def record_run(self, run_id: str) -> None:
        self.run_file.parent.mkdir(parents=True, exist_ok=True)
        self.run_file.write_text(json.dumps({"run_id": run_id,
                                             "fingerprint": self.fingerprint}) + "\n")

    def recorded_run(self) -> str | None:
        """The run that wrote this checkpoint, when the loop will resume from it (same params)."""
        if not self.path.exists() or not self.run_file.exists():
            return None
        recorded = json.loads(self.run_file.read_text())
        return recorded["run_id"] if recorded.get("fingerprint") == self.fingerprint else None

    def remove(self) -> None:
        """Once the stage's results are written and recorded: nothing is left to resume."""
        self.path.unlink(missing_ok=True)
        self.run_file.unlink(missing_ok=True)
