"""Writing a file or a folder whole or not at all: a scratch file or folder beside it, renamed over
it (atomic on one file system), so a crash, a full disk or a refused param never leaves a
half-written output or a damaged one. The pipeline's outputs are `persist: true` in dvc.yaml (DVC
would delete them before the stage runs), so a stage that fails keeps the last run's outputs."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A scratch path beside `path` for a writer that wants a path or a file of its own; renamed
    over `path` once the block ends, removed (and `path` left as it was) when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.partial")
    try:
        yield scratch
        scratch.replace(path)
    finally:
        scratch.unlink(missing_ok=True)


def write_atomic(path: Path | str, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path`, replacing what was there only once it is complete."""
    with atomic_path(path) as scratch, open(scratch, "wb") as file:
        file.write(data.encode("utf-8") if isinstance(data, str) else data)
        file.flush()
        os.fsync(file.fileno())
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """An empty scratch folder beside `path` to fill; swapped in for `path` (by two renames: a
    crash leaves the old folder or the new, never a mix) once the block ends, removed when it
    fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch, old = path.with_name(f".{path.name}.partial"), path.with_name(f".{path.name}.old")
    for leftover in (scratch, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    scratch.mkdir()
    try:
        yield scratch
        replace_folder(scratch, path)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)


def replace_folder(new: Path, path: Path) -> None:
    """Swap the complete folder `new` in for `path` by rename."""
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        path.rename(old)
    new.rename(path)
    if old.exists():
        shutil.rmtree(old)
