"""Download a source: try its mirrors in order, verify the canonical files, then move them in.

Nothing lands in `data/raw/<name>` until every canonical file matches its pinned hash: each mirror
writes into a scratch folder beside the target, and only a verified folder replaces the target, by
rename. Good data already there is kept when no mirror works.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pooch

from dlprojects.core.data.mirrors import MirrorError
from dlprojects.core.data.sources import Source
from dlprojects.core.errors import UserError
from dlprojects.core.files import replace_folder


class DownloadError(UserError):
    """No mirror of a source delivered verified files."""


def verify(source: Source, folder: Path) -> list[str]:
    """Problems with the canonical files in `folder` (empty when every file matches its hash)."""
    problems = []
    for name, pinned in source.files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif pinned is not None:
            algorithm, expected = pinned.split(":")
            if pooch.file_hash(str(path), alg=algorithm) != expected:
                problems.append(f"{name} does not match its pinned {algorithm}")
    return problems


def download(source: Source, target: Path, *, extra_mirrors: list[str] = (), log=None) -> str:
    """Fill `target` with `source`'s verified canonical files; returns the mirror that answered."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    target = Path(target).resolve()
    if target.is_dir() and not verify(source, target):
        log(f"{source.name}: {target} already holds the verified files")
        return "already present"
    mirrors = [source.user_mirror(url) for url in extra_mirrors] + list(source.mirrors)
    target.parent.mkdir(parents=True, exist_ok=True)
    tried = []
    for number, (mirror, normalise) in enumerate(mirrors, start=1):
        label = f"{source.name}: mirror {number}/{len(mirrors)} ({mirror.describe()})"
        with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as scratch:
            fetched_dir, staging = Path(scratch, "fetched"), Path(scratch, "staging")
            fetched_dir.mkdir()
            staging.mkdir()
            try:
                normalise(mirror.fetch(fetched_dir), staging)
                problems = verify(source, staging)
                if problems:
                    raise MirrorError("; ".join(problems))
            except MirrorError as error:
                log(f"{label} failed: {error}")
                tried.append(mirror.describe())
                continue
            replace_folder(staging, target)
        log(f"{label} ok: {len(source.files)} files verified by {source.pinned_by}")
        return mirror.describe()
    raise DownloadError(
        f"no mirror of '{source.name}' delivered verified files (tried: {', '.join(tried)}); "
        f"add a URL serving the canonical files to download.{source.name}.mirrors in params.yaml")
