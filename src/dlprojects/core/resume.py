"""What lets an interrupted training stage resume where it stopped: its checkpoint, the
fingerprint of the params that wrote it (a checkpoint of other params is never resumed), and the
MLflow run it was logging to (kept beside the checkpoint, so the resumed epochs go to that run).

One checkpoint format serves both training loops: named arrays and a JSON record (history, best
epoch, random states...) in one `.npz`, read without pickle. The torch loop turns its state dicts
into that form (`dlprojects.core.loop_state`), the NumPy loop saves its arrays as they are.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlprojects.core.files import write_atomic

CHECKPOINTS = Path("checkpoints")  # gitignored; removed once a stage's results are safe
RECORD = "record.json"  # the archive member that holds the JSON record


def fingerprint(*objects: Any) -> str:
    """A short hash of the resolved params."""
    text = json.dumps(objects, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    fingerprint: str

    @classmethod
    def of(cls, name: str, resolved: Any) -> Checkpoint:
        """checkpoints/<name>.npz, for the params `resolved`."""
        return cls(CHECKPOINTS / f"{name}.npz", fingerprint(resolved))

    def save(self, arrays: dict[str, np.ndarray], record: dict[str, Any]) -> None:
        """`arrays` and `record` (JSON), stamped with this run's fingerprint: written whole, then
        renamed over the last one, so a kill mid-write leaves the previous checkpoint intact."""
        stamped = json.dumps({"fingerprint": self.fingerprint, **record}).encode()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, **{RECORD: np.frombuffer(stamped, dtype=np.uint8)})
        write_atomic(self.path, buffer.getvalue())

    def load(self, announce: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """(arrays, record) of this run's checkpoint; None when there is none, or when other
        params wrote it (then, when `announce`, a line on stderr: training starts afresh)."""
        if not self.path.exists():
            return None
        with np.load(self.path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        record = json.loads(arrays.pop(RECORD).tobytes())
        if record.pop("fingerprint", None) != self.fingerprint:
            if announce:
                print(f"ignoring {self.path}: it was written with other params; starting afresh",
                      file=sys.stderr)
            return None
        return arrays, record

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
