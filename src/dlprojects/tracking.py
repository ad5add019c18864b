"""MLflow tracking: one experiment per project, each run tied to its git commit, DVC stage and data.

The store defaults to `sqlite:///mlflow.db` in the project root; `MLFLOW_TRACKING_URI` points a
team at its own server. A server that cannot be reached is reported before training starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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
    """MLFLOW_TRACKING_URI, else mlflow.db in the project root. A queued DVC experiment runs in a
    copy of the repo under .dvc/tmp/exps; DVC_ROOT names the repo it came from, whose store
    then gets its runs."""
    root = Path(os.environ.get("DVC_ROOT") or project_root())
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


# MLflow's own retries wait minutes for a server that is gone; these notice it within about 10 s
# (each is only a default: the environment wins).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
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
    # What `dvc repro` itself writes (dvc.lock, the results under reports/) is not a code change,
    # nor are untracked outputs (data, models): the code is the other tracked files.
    changed = [line.split(maxsplit=1)[-1] for line in
               git("status", "--porcelain", "--untracked-files=no").splitlines()]
    dirty = any(not path.startswith(("dvc.lock", "reports/")) for path in changed)
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
              checkpoint: Path | None = None, fingerprint: str = "") -> Iterator[Any]:
    """An MLflow run in experiment `project`, tagged with its lineage; yields the active run.

    Nothing about the run goes into the stage's DVC outs (a run id differs every time, the model
    need not): the train stage calls `tag_model` once its model folder is written, and the evaluate
    stage finds the run again from that folder's digest (`resume_run`).

    `checkpoint`, `fingerprint`: those `fit` resumes from. The run id is kept beside the checkpoint,
    so training that resumes after a kill or a tracking outage goes on in the same MLflow run."""
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
    interrupted = _interrupted_run(checkpoint, fingerprint)
    if interrupted:
        print(f"resuming MLflow run {interrupted}", file=sys.stderr)
        run = mlflow.start_run(run_id=interrupted)
    else:
        run = mlflow.start_run(run_name=exp_name or stage or None, tags=tags)
        mlflow.log_params(as_flat_dict(params))
        if checkpoint is not None:
            _run_file(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            _run_file(checkpoint).write_text(json.dumps(
                {"run_id": run.info.run_id, "fingerprint": fingerprint}) + "\n")
    try:
        yield run
    except TrackingUnavailable:  # the run stays open in the store: a rerun resumes it
        _forget_active_run()
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            mlflow.end_run("FAILED")
        raise
    mlflow.end_run()
    if checkpoint is not None:  # results written and recorded: nothing left to resume
        Path(checkpoint).unlink(missing_ok=True)
        _run_file(checkpoint).unlink(missing_ok=True)


def _forget_active_run() -> None:
    """Drop the active run in this process without a call to the server that is gone (MLflow
    would retry ending it, at exit too)."""
    from mlflow.tracking import fluent

    with contextlib.suppress(Exception):  # a private stack: at worst MLflow retries at exit
        fluent._active_run_stack.get().clear()


def _run_file(checkpoint: Path) -> Path:
    return Path(checkpoint).with_suffix(".mlflow.json")


def _interrupted_run(checkpoint: Path | None, fingerprint: str) -> str | None:
    """The run that wrote `checkpoint`, when `fit` will resume from it (same params)."""
    if checkpoint is None or not Path(checkpoint).exists() or not _run_file(checkpoint).exists():
        return None
    recorded = json.loads(_run_file(checkpoint).read_text())
    if recorded.get("fingerprint") != fingerprint:
        return None
    import mlflow

    try:
        mlflow.MlflowClient().get_run(recorded["run_id"])
    except mlflow.exceptions.MlflowException:
        return None  # not in this store (another MLFLOW_TRACKING_URI): start a new run
    return recorded["run_id"]


# ------------------------------------------------------------------ runs found from their model

MODEL_TAG = "model.digest"


def model_digest(folder: Path) -> str:
    """sha256 over the names and bytes of a model folder's files: identical training gives an
    identical digest, so it ties the folder to every run that produced it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def tag_model(folder: Path) -> str:
    """Tag the active run with the digest of the model folder it wrote; returns the digest."""
    import mlflow

    digest = model_digest(folder)
    mlflow.set_tag(MODEL_TAG, digest)
    return digest


def runs_of_model(client, project: str, folder: Path, *, newest_first: bool = True) -> list[Any]:
    """The runs of experiment `project` that wrote the model now in `folder`."""
    experiment = client.get_experiment_by_name(project)
    if experiment is None:
        return []
    order = "DESC" if newest_first else "ASC"
    return client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{MODEL_TAG}` = '{model_digest(folder)}'",
                              order_by=[f"attributes.start_time {order}"])


@contextlib.contextmanager
def resume_run(project: str, model_folder: Path) -> Iterator[Any]:
    """Reopen the newest run that wrote the model in `model_folder`, to add test metrics and
    figures. A model that came from a DVC remote, with its run in another store, gets a new run
    here, tagged with the model's digest."""
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(project)
    found = runs_of_model(mlflow.MlflowClient(), project, Path(model_folder))
    if found:
        with mlflow.start_run(run_id=found[0].info.run_id) as run:
            yield run
        return
    tags = {**git_state(project_root()), MODEL_TAG: model_digest(model_folder),
            "project": project, "note": "its training run is not in this tracking store"}
    if os.environ.get("DVC_STAGE"):
        tags["dvc.stage"] = os.environ["DVC_STAGE"]
    with mlflow.start_run(run_name=f"evaluate {Path(model_folder).as_posix()}", tags=tags) as run:
        yield run


def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
    """Per-epoch metrics at step `epoch` (fits `fit(on_epoch=...)`); the same names in every
    project so the UI compares them. A server that stops answering stops training here, before
    this epoch's checkpoint: a rerun redoes the epoch and logs it into the same run."""
    import mlflow

    try:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch"}, step=epoch)
    except mlflow.exceptions.MlflowException as error:
        uri = tracking_uri()
        if not uri.startswith(("http://", "https://")):
            raise
        reason = str(error).splitlines()[0][:160]
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} stopped answering in epoch {epoch} ({reason}); "
            f"the checkpoint of epoch {epoch - 1} is kept: start the server again and rerun "
            f"`dvc repro` to resume in the same run") from None


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


# ------------------------------------------------------------------ registered models


def registered_version(client, name: str, digest: str) -> Any | None:
    """The first version of registered model `name` tagged `model.digest` = `digest`, or None."""
    versions = client.search_model_versions(
        f"name = '{name.replace(chr(39), '')}' and tags.`{MODEL_TAG}` = '{digest}'")
    return min(versions, key=lambda version: int(version.version)) if versions else None


def register_once(registered_name: str, model_dir: Path, log: Callable[[], Any]) -> Any:
    """Register the model in `model_dir` as a new version of `registered_name`, unless a version
    already holds it (tag `model.digest`, the folder's digest): an evaluate stage that runs
    again on the same model adds no version. `log()` logs the model to the active run (without
    registering it) and returns its ModelInfo; it is called only when a version is made. New
    versions are tagged `model.digest` and `git.commit`. Returns the version that holds it."""
    import mlflow

    digest = model_digest(model_dir)
    existing = registered_version(mlflow.MlflowClient(), registered_name, digest)
    if existing is not None:
        print(f"models:/{registered_name}/{existing.version} already holds the model in "
              f"{Path(model_dir).as_posix()} (digest {digest[:12]}): not registered again",
              file=sys.stderr)
        return existing
    info = log()
    return mlflow.register_model(info.model_uri, registered_name, tags={
        MODEL_TAG: digest, "git.commit": git_state(project_root())["git.commit"]})


def log_torch_model(model: Any, registered_name: str, model_dir: Path) -> float:
    """Log `model` (CPU) to the active run as artifact "model" and register it as
    `registered_name`, so `mlflow.pytorch.load_model("models:/<name>/latest")` loads it; the
    dlprojects package goes with it. `model_dir` is the folder its weights were read from: a
    version that already holds them is not registered again (`register_once`). Returns the
    seconds it took."""
    import time

    import mlflow.pytorch
    import torch

    import dlprojects

    started = time.perf_counter()
    # pickle, not pt2: pt2 traces one input shape, and reviews vary in length
    register_once(registered_name, model_dir, lambda: mlflow.pytorch.log_model(
        model.cpu(), name="model", serialization_format="pickle",
        code_paths=[str(Path(dlprojects.__file__).parent)],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"]))
    return time.perf_counter() - started
