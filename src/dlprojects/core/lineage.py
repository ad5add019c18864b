"""Lineage: what ties a result to the code and data that made it, the same on every machine.

A model folder's digest (`model_digest`), the git commit and whether the tree had changes
(`git_state`), and the DVC hash that dvc.lock records for each out (`dvc_hashes`). MLflow runs and
registered versions are tagged with them (`tracking`, `registry`); `python -m dlprojects.lineage`
goes the other way, from a run, experiment or model to its commit, data and runs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

MODEL_TAG = "model.digest"


def model_digest(folder: Path) -> str:
    """sha256 over the names and bytes of a model folder's files: identical training gives an
    identical digest, so it ties the folder to every run that produced it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def dvc_folder_hash(folder: Path) -> str:
    """The hash DVC records in dvc.lock for a folder out (`<md5>.dir`): the md5 of its listing
    of each file's md5 and relative path."""
    folder = Path(folder)
    files = sorted((p for p in folder.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(folder).parts)
    listing = [{"md5": hashlib.md5(p.read_bytes()).hexdigest(),
                "relpath": p.relative_to(folder).as_posix()} for p in files]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


def project_root(start: Path | None = None) -> Path:
    """The folder holding dvc.yaml, from `start` (default: the working directory) up; else
    `start` (DVC runs every stage from the project root)."""
    start = (start or Path.cwd()).resolve()
    return next((folder for folder in (start, *start.parents) if (folder / "dvc.yaml").exists()),
                start)


def git(root: Path, *args: str) -> str:
    """The output of `git <args>` in `root`, stripped; '' when git fails."""
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def git_state(root: Path) -> dict[str, str]:
    """The tags that name the code of a run: its commit, and whether the tree had changes."""
    commit = git(root, "rev-parse", "HEAD") or "unknown"
    # What `dvc repro` itself writes (dvc.lock, the results under reports/) is not a code change,
    # nor are untracked outputs (data, models): the code is the other tracked files.
    changed = [line.split(maxsplit=1)[-1] for line in
               git(root, "status", "--porcelain", "--untracked-files=no").splitlines()]
    dirty = any(not path.startswith(("dvc.lock", "reports/")) for path in changed)
    return {"git.commit": commit, "git.dirty": str(dirty).lower(),
            "mlflow.source.git.commit": commit}


def dvc_hashes(root: Path) -> dict[str, str]:
    """The DVC hash (`md5`) that root/dvc.lock records for each out path."""
    lock_file = Path(root) / "dvc.lock"
    lock = (yaml.safe_load(lock_file.read_text()) or {}) if lock_file.exists() else {}
    return {out["path"]: out.get("md5") or out.get("hash", "")
            for stage in (lock.get("stages") or {}).values() for out in stage.get("outs", [])}


def data_hashes(root: Path, inputs: list[str]) -> dict[str, str]:
    """Run tags naming the DVC hash of each input, e.g. {"data.data/raw/mnist": "ab..dir"}."""
    recorded = dvc_hashes(root)
    return {f"data.{path}": recorded.get(path, "not recorded by dvc.lock") for path in inputs}


def first_commit(root: Path, dvc_hash: str) -> str:
    """The oldest commit whose change to dvc.lock added `dvc_hash` ('' when none has)."""
    found = git(root, "log", "--reverse", "-S", dvc_hash, "--format=%H", "--", "dvc.lock").split()
    return found[0] if found else ""
