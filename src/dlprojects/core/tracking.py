"""MLflow tracking: one experiment per project, each run tied to its git commit, DVC stage and data.

The store defaults to `sqlite:///mlflow.db` in the project root; `MLFLOW_TRACKING_URI` points a
team at its own server. A server that cannot be reached is reported before training starts.
`connect` is the one place that sets MLflow's process-wide state (its tracking URI, the active
experiment, the HTTP retry defaults); stages log through the run that `start_run` or `resume_run`
opens, and `registry` logs and registers models.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlprojects.core.distributed import World
from dlprojects.core.errors import UserError
from dlprojects.core.history import FitResult
from dlprojects.core.lineage import MODEL_TAG, git_state, model_digest, project_root
from dlprojects.core.parsing import as_flat_dict
from dlprojects.core.resume import Checkpoint
from dlprojects.core.run_tags import run_tags, take_launcher_run


class TrackingUnavailable(UserError):
    """The MLflow tracking server did not answer."""


class TrackingUnauthorized(UserError):
    """The MLflow tracking server refused the login."""


def _main_rank_only(function):
    """Rank 0 logs; the other ranks of a distributed run log nothing (one run, not N)."""

    @functools.wraps(function)
    def logged(*args, **kwargs):
        if World.from_environment().main:
            return function(*args, **kwargs)
        return None

    return logged


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
    """Fail fast, before any training, when an http(s) tracking server does not answer, or
    refuses MLFLOW_TRACKING_USERNAME/PASSWORD (a server without logins lets every request in)."""
    if not uri.startswith(("http://", "https://")):
        return
    import base64

    search = urllib.request.Request(
        f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = (os.environ.get("MLFLOW_TRACKING_USERNAME"),
                      os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        search.add_header("Authorization", f"Basic {token}")
    try:
        for request in (f"{uri.rstrip('/')}/health", search):
            urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            who = f"user {user!r}" if user and password else "no login"
            raise TrackingUnauthorized(
                f"MLflow tracking server {uri} refused {who} ({error.code}); set "
                f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (for the team's "
                f"servers: eval $(python -m dlprojects.team env))") from None
        raise TrackingUnavailable(f"MLflow tracking server {uri} answered {error.code} "
                                  f"({error.reason}); see its log") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it, or unset "
            f"MLFLOW_TRACKING_URI to track into the local sqlite:///mlflow.db") from None


def connect(project: str | None = None):
    """An MlflowClient on the store `tracking_uri()` names, checked to answer, with MLflow's
    fluent API pointed at it and at experiment `project` (created when new). MLflow keeps these
    settings in the process (its tracking URI also in MLFLOW_TRACKING_URI), as it does the HTTP
    retry defaults set here, which subprocesses inherit."""
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)
    if project:
        mlflow.set_experiment(project)
    return mlflow.MlflowClient(uri)


@contextlib.contextmanager
def start_run(project: str, params: Any, *, inputs: list[str], device: str,
              checkpoint: Checkpoint | None = None) -> Iterator[Any]:
    """An MLflow run in experiment `project`, tagged with its lineage; yields the active run.

    Nothing about the run goes into the stage's DVC outs (a run id differs every time, the model
    need not): the train stage calls `tag_model` once its model folder is written, and the evaluate
    stage finds the run again from that folder's digest (`resume_run`).

    `checkpoint`: the one the loop resumes from. The run id is kept beside it, so training that
    resumes after a kill or a tracking outage goes on in the same MLflow run.

    In a distributed run only rank 0 opens the run; the others get None."""
    import mlflow

    if not World.from_environment().main:
        yield None
        return
    run = _open_run(connect(project), project, params, inputs=inputs, device=device,
                    checkpoint=checkpoint)
    try:
        yield run
    except BaseException:  # a server that is gone keeps the run open: a rerun resumes it
        with contextlib.suppress(Exception):
            mlflow.end_run("FAILED")
        raise
    mlflow.end_run()
    if checkpoint is not None:  # results written and recorded: nothing left to resume
        checkpoint.remove()


def _open_run(client, project: str, params: Any, *, inputs: list[str], device: str,
              checkpoint: Checkpoint | None) -> Any:
    """The interrupted run that wrote `checkpoint`, resumed; else a new run with its lineage tags
    and `params`, whose id is recorded beside `checkpoint`."""
    import mlflow

    tags = run_tags(project, inputs, device)
    launcher = take_launcher_run()
    if launcher:
        tags["mlflow.project.run_id"] = launcher
    interrupted = _interrupted_run(client, checkpoint)
    if interrupted:
        print(f"resuming MLflow run {interrupted}", file=sys.stderr)
        return mlflow.start_run(run_id=interrupted, log_system_metrics=system_metrics())
    run = mlflow.start_run(run_name=tags.get("dvc.exp_name") or tags.get("dvc.stage"), tags=tags,
                           log_system_metrics=system_metrics())
    mlflow.log_params(as_flat_dict(params))
    if checkpoint is not None:
        checkpoint.record_run(run.info.run_id)
    return run


def system_metrics() -> bool:
    """Whether a training run samples CPU, memory, disk, network and GPU use as MLflow system
    metrics (`system/...`, every 10 s): on, unless MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false."""
    return os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true").lower() != "false"


def _interrupted_run(client, checkpoint: Checkpoint | None) -> str | None:
    """The run that wrote `checkpoint`, when the loop will resume from it and it is in this
    store (a run in another MLFLOW_TRACKING_URI's store is not: a new run starts)."""
    from mlflow.exceptions import MlflowException

    run_id = checkpoint.recorded_run() if checkpoint is not None else None
    if run_id is None:
        return None
    try:
        client.get_run(run_id)
    except MlflowException:
        return None
    return run_id


# ------------------------------------------------------------------ runs found from their model


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


def runs_with_digest(client, digest: str) -> list:
    """The runs of every experiment tagged with model digest `digest` (a full digest, or the
    first 8 or more hex digits of one), oldest first."""
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    if not experiments:
        return []
    condition = f"= '{digest}'" if len(digest) == 64 else f"LIKE '{digest}%'"
    return client.search_runs(experiments, filter_string=f"tags.`{MODEL_TAG}` {condition}",
                              order_by=["attributes.start_time ASC"])


@contextlib.contextmanager
def resume_run(project: str, model_folder: Path) -> Iterator[Any]:
    """Reopen the newest run that wrote the model in `model_folder`, to add test metrics and
    figures. A model that came from a DVC remote, with its run in another store, gets a new run
    here, tagged with the model's digest."""
    import mlflow

    found = runs_of_model(connect(project), project, Path(model_folder))
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


# ------------------------------------------------------------------------------------ logging


@_main_rank_only
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


@_main_rank_only
def log_params(params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params(params)


@_main_rank_only
def log_summary(metrics: dict[str, float]) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


@_main_rank_only
def log_artifacts(paths: list[Path | str], artifact_path: str | None = None) -> None:
    import mlflow

    for path in map(Path, paths):
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        elif path.exists():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


@_main_rank_only
def log_training(result: FitResult, model_dir: Path, history_file: Path,
                 artifacts: tuple[Path, ...] = ()) -> str:
    """What every train stage records once its model folder is written: the folder's digest (so
    the evaluate stage finds this run again), the best epoch, the training seconds, and the
    history file (and `artifacts`) as artifacts. Returns the digest."""
    digest = tag_model(model_dir)
    log_summary({"best_epoch": result.best_epoch, "train_seconds": result.train_seconds})
    log_artifacts([history_file, *artifacts])
    return digest
