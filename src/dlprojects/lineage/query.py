"""Lineage both ways between MLflow runs and the code and data that made them.

    python -m dlprojects.lineage run <run_id>    # commit, stage, data hashes, how to restore them
    python -m dlprojects.lineage exp <name>      # the MLflow runs of a DVC experiment
    python -m dlprojects.lineage model <folder or digest>
        # the runs (in MLFLOW_TRACKING_URI's store, else mlflow.db) that wrote a model, its
        # registered versions, and the commit whose dvc.lock first recorded it
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from dlprojects.core import tracking
from dlprojects.core.errors import UserError
from dlprojects.core.lineage import (MODEL_TAG, dvc_hashes, first_commit, git, model_digest,
                                     project_root)
from dlprojects.core.models import manifest


def describe_run(client, run_id: str) -> str:
    """What made run `run_id`, and the commands that restore its code and data."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run {run_id!r} in {tracking.tracking_uri()}; list runs in "
                        f"the UI (make ui) or set MLFLOW_TRACKING_URI to the store that has it"
                        ) from None
    tags = run.data.tags
    commit, stage = tags.get("git.commit", "unknown"), tags.get("dvc.stage", "")
    data = {key.removeprefix("data."): value for key, value in sorted(tags.items())
            if key.startswith("data.")}
    experiment = client.get_experiment(run.info.experiment_id).name
    lines = [f"run         {run_id} ({experiment}, {run.info.status.lower()})",
             f"git commit  {commit}" + ("  (the tree had uncommitted changes)"
                                        if tags.get("git.dirty") == "true" else ""),
             f"dvc stage   {stage or '(run outside dvc repro)'}"]
    if tags.get("dvc.exp_name"):
        lines.append(f"dvc exp     {tags['dvc.exp_name']}")
    lines += [f"data        {path}  {digest}" for path, digest in data.items()]
    lines += ["", "restore:", f"  git checkout {commit}",
              f"  dvc checkout {stage}   # from the local cache, or:" if stage else
              "  dvc checkout   # from the local cache, or:",
              f"  dvc pull {stage}" if stage else "  dvc pull"]
    return "\n".join(lines)


def describe_experiment(client, name: str) -> str:
    """The MLflow runs tagged with DVC experiment `name`, and its commit when DVC knows it."""
    runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string=f"tags.`dvc.exp_name` = '{name.replace(chr(39), '')}'")
    if not runs:
        raise UserError(f"no MLflow run is tagged with DVC experiment {name!r}; "
                        f"`dvc exp show` lists the experiments")
    lines = [f"dvc exp {name}: {len(runs)} MLflow run(s)"]
    for run in runs:
        metrics = run.data.metrics
        shown = ", ".join(f"{key} {metrics[key]:.4f}" for key in ("test_accuracy",
                                                                   "best_val_accuracy")
                          if key in metrics)
        lines.append(f"  {run.info.run_id}  {run.data.tags.get('dvc.stage', '')}  {shown}")
    found = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"],
                           capture_output=True, text=True)
    if found.returncode == 0 and f'"{name}"' in found.stdout:
        lines.append(f"restore: dvc exp apply {name}   (or: dvc exp branch {name} <branch>)")
    return "\n".join(lines)


DIGEST = re.compile(r"[0-9a-f]{8,64}")

MODEL_FILES = ("model.json", "model.safetensors", "weights.npz")  # what a model folder holds
REPORT = "reports/lineage.json"  # written by the report stage: folder, digest, DVC hash


def _require_git(root: Path) -> None:
    if not git(root, "rev-parse", "--git-dir"):
        raise UserError(f"{root} is not in a git repository, so no commit can be named; run this "
                        f"in a clone of the project")


def _entries(text: str) -> list[dict[str, str]]:
    try:
        entries = json.loads(text)
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def _report_row(root: Path, digest: str) -> tuple[str, str, str] | None:
    """(folder, full digest, DVC hash) of the model whose digest starts with `digest`, from the
    report's `reports/lineage.json`: the working tree's file first, then each commit of its
    history that added or removed that string, newest first."""
    texts = [(root / REPORT).read_text()] if (root / REPORT).exists() else []
    for commit in git(root, "log", "--format=%H", "-S", digest, "--", REPORT).split():
        texts.append(git(root, "show", f"{commit}:{REPORT}"))
    for text in texts:
        for entry in _entries(text):
            if str(entry.get("digest", "")).startswith(digest):
                return str(entry.get("folder", "")), entry["digest"], str(entry.get("dvc_hash", ""))
    return None


def _locate(target: str, root: Path | None) -> tuple[Path, str, str, str]:
    """(project root, model folder, digest, DVC hash) of a model folder or a digest; the folder
    and hash are '' where neither the folder nor reports/lineage.json names them."""
    if Path(target).is_dir():
        folder = Path(target)
        if not any((folder / name).is_file() for name in MODEL_FILES):
            manifest(folder)  # not a model folder (".", an empty one): one line, nothing hashed
        root = root or project_root(folder)
        _require_git(root)
        try:
            name = folder.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            name = folder.as_posix()
        return root, name, model_digest(folder), dvc_hashes(root).get(name, "")
    if DIGEST.fullmatch(target.lower()):
        root = root or project_root(Path.cwd())
        _require_git(root)
        row = _report_row(root, target.lower())
        return (root, *row) if row else (root, "", target.lower(), "")
    raise UserError(f"{target!r} is neither a model folder nor a model digest (8 to 64 hex "
                    f"digits); give e.g. models/<project>, or a digest from reports/README.md")


def describe_model(client, target: str | Path, root: Path | None = None) -> str:
    """The runs, registered versions and first commit of a model, given as its folder (e.g.
    models/<project>) or as its digest (`lineage.model_digest`: 64 hex digits, or the first 8 or
    more).

    The runs are those in the store `client` reads (MLFLOW_TRACKING_URI, else mlflow.db) tagged
    `model.digest`. The commit is the oldest one whose dvc.lock recorded the model's DVC hash
    (`git log --reverse -S <hash> -- dvc.lock`). A folder's DVC hash is the `md5` the working
    tree's dvc.lock records for it; a digest is mapped to its folder and DVC hash through the
    report's reports/lineage.json, in the working tree or else in the file's git history."""
    target = str(target)
    root, name, digest, dvc_hash = _locate(target, root)
    runs = tracking.runs_with_digest(client, digest)
    if runs and len(digest) < 64:
        digest = runs[0].data.tags[MODEL_TAG]
    commit = first_commit(root, dvc_hash) if dvc_hash else ""
    committed = _commit_note(commit, dvc_hash)
    if not runs:
        what = (f"wrote the model in {name}" if Path(target).is_dir()
                else f"has model digest {digest}")
        raise UserError(f"no MLflow run in {tracking.tracking_uri()} {what}; git commit: "
                        f"{committed}; `dvc repro` evaluates it into this store (or set "
                        f"MLFLOW_TRACKING_URI to the store it was trained against)")
    versions = (client.search_model_versions(f"tags.`{MODEL_TAG}` = '{digest}'")
                if len(digest) == 64 else [])
    lines = [f"model digest  {digest}",
             f"model folder  {name or 'unknown: not in reports/lineage.json'}"
             + (f"  (DVC hash {dvc_hash})" if dvc_hash else ""),
             f"git commit    {committed}"]
    for version in sorted(versions, key=lambda v: (v.name, int(v.version))):
        aliases = client.get_model_version(version.name, version.version).aliases
        lines.append(f"registered    models:/{version.name}/{version.version}"
                     + "".join(f"  models:/{version.name}@{alias}" for alias in sorted(aliases)))
    lines.append(f"written by {len(runs)} run(s) in {tracking.tracking_uri()}, oldest first:")
    lines += [_run_line(run) for run in runs]
    if commit:
        lines += ["", "restore:", f"  git checkout {commit} && dvc pull {name}".rstrip()]
    return "\n".join(lines)


def _commit_note(commit: str, dvc_hash: str) -> str:
    """What `describe_model` says of the commit that first recorded a model in dvc.lock."""
    if commit:
        return f"{commit} (its dvc.lock first recorded this model)"
    if dvc_hash:
        return "none yet: no commit's dvc.lock records this model (commit dvc.lock)"
    return "unknown: dvc.lock does not record this model folder"


def _run_line(run) -> str:
    """One run that wrote a model: its id, stage, commit and test accuracy when it has one."""
    metric = run.data.metrics.get("test_accuracy")
    return (f"  {run.info.run_id}  {run.data.tags.get('dvc.stage', '')}  "
            f"commit {run.data.tags.get('git.commit', 'unknown')[:12]}"
            + (f"  test_accuracy {metric:.4f}" if metric is not None else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="an MLflow run id").add_argument("run_id")
    sub.add_parser("exp", help="a DVC experiment name").add_argument("name")
    sub.add_parser("model", help="a model folder (e.g. models/<project>) or a model digest (from "
                   "reports/README.md)").add_argument("target")
    args = parser.parse_args()
    from mlflow.exceptions import MlflowException

    try:
        client = tracking.connect()
        if args.command == "run":
            print(describe_run(client, args.run_id))
        elif args.command == "exp":
            print(describe_experiment(client, args.name))
        else:
            print(describe_model(client, args.target))
    except MlflowException as error:  # e.g. a store that is not an MLflow store
        raise UserError(f"MLflow store {tracking.tracking_uri()}: "
                        f"{str(error).strip().splitlines()[0][:200]}") from None
