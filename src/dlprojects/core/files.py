"""Writing a file whole or not at all: a scratch file beside it, renamed over it (atomic on one
file system), so a crash or a full disk never leaves a half-written output or a damaged one."""

from __future__ import annotations

import contextlib
import os
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
