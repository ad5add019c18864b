"""MLflow tracking: one experiment per project, each run tied to its git commit, DVC stage and data.

The store defaults to `sqlite:///mlflow.db` in the project root; `MLFLOW_TRACKING_URI` points a
team at its own server. A server that cannot be reached is reported before training starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from dlprojects.config import as_flat_dict
from dlprojects.errors import UserError


class TrackingUnavailable(UserError):
    """The MLflow tracking server did not answer."""


def project_root() -> Path:
    """The folder holding dvc.yaml (DVC runs every stage from there)."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it, or unset "
            f"MLFLOW_TRACKING_URI to track into the local sqlite:///mlflow.db") from None


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    # Outputs DVC writes (data, models, reports) are not code changes: look at tracked files only.
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"git.commit": commit, "git.dirty": str(dirty).lower(),
            "mlflow.source.git.commit": commit}


def data_hashes(root: Path, inputs: list[str]) -> dict[str, str]:
    """The DVC hash (from dvc.lock) of each input path, e.g. {"data.data/raw/mnist": "ab..dir"}."""
    lock_file = root / "dvc.lock"
    recorded: dict[str, str] = {}
    if lock_file.exists():
        lock = yaml.safe_load(lock_file.read_text()) or {}
        for stage in (lock.get("stages") or {}).values():
            for out in stage.get("outs", []):
                recorded[out["path"]] = out.get("md5") or out.get("hash", "")
    return {f"data.{path}": recorded.get(path, "not recorded by dvc.lock") for path in inputs}


@contextlib.contextmanager
def start_run(project: str, params: Any, *, inputs: list[str], device: str,
              run_file: Path | None = None) -> Iterator[Any]:
    """An MLflow run in experiment `project`, tagged with its lineage; yields the active run.

    `run_file` (a train stage's out) records the run id so the evaluate stage adds its test
    figures to the same run (`resume_run`)."""
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(project)
    root = project_root()
    stage = os.environ.get("DVC_STAGE", "")
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    tags = {**git_state(root), **data_hashes(root, inputs), "device": device, "project": project}
    if stage:
        tags["dvc.stage"] = stage
    if exp_name:
        tags["dvc.exp_name"] = exp_name
    # Under `mlflow run`, MLFLOW_RUN_ID names the project's own run, which start_run would
    # resume: this stage's run goes to its project's experiment instead, pointing back at it.
    launcher = os.environ.pop("MLFLOW_RUN_ID", "")
    if launcher:
        tags["mlflow.project.run_id"] = launcher
    with mlflow.start_run(run_name=exp_name or stage or None, tags=tags) as run:
        mlflow.log_params(as_flat_dict(params))
        if run_file is not None:
            Path(run_file).parent.mkdir(parents=True, exist_ok=True)
            Path(run_file).write_text(json.dumps({"run_id": run.info.run_id,
                                                  "experiment": project}) + "\n")
        yield run


@contextlib.contextmanager
def resume_run(run_file: Path) -> Iterator[Any]:
    """Reopen the run a train stage recorded in `run_file` (to log test metrics and figures)."""
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    run_id = json.loads(Path(run_file).read_text())["run_id"]
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
    """Per-epoch metrics at step `epoch` (fits `fit(on_epoch=...)`); the same names in every
    project so the UI compares them."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch"}, step=epoch)


def log_summary(metrics: dict[str, float]) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


def log_artifacts(paths: list[Path | str], artifact_path: str | None = None) -> None:
    import mlflow

    for path in map(Path, paths):
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        elif path.exists():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_torch_model(model: Any, registered_name: str) -> float:
    """Log `model` (CPU) to the active run as artifact "model" and register it as
    `registered_name`, so `mlflow.pytorch.load_model("models:/<name>/latest")` loads it; the
    dlprojects package goes with it. Returns the seconds it took."""
    import time

    import mlflow.pytorch
    import torch

    import dlprojects

    started = time.perf_counter()
    # pickle, not pt2: pt2 traces one input shape, and reviews vary in length
    mlflow.pytorch.log_model(model.cpu(), name="model", registered_model_name=registered_name,
                             serialization_format="pickle",
                             code_paths=[str(Path(dlprojects.__file__).parent)],
                             pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                               "numpy"])
    return time.perf_counter() - started
