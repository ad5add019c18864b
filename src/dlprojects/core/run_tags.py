"""The tags a stage's new MLflow run carries: the code, data, machine and DVC stage behind it,
and the `mlflow run` project run that launched it.

`lineage` supplies the commit and the data hashes; `tracking.start_run` tags each new run with
them, and `python -m dlprojects.lineage` reads them back."""

from __future__ import annotations

import os

from dlprojects import numerics
from dlprojects.core.distributed import World
from dlprojects.core.lineage import data_hashes, git_state, project_root

DVC_TAGS = {"dvc.stage": "DVC_STAGE", "dvc.exp_name": "DVC_EXP_NAME"}  # tag: its variable


def run_tags(project: str, inputs: list[str], device: str) -> dict[str, str]:
    """Commit and tree state, the DVC hash of each of `inputs`, the device, the project, the
    number of processes and the numerics; the DVC stage and experiment name when DVC runs it."""
    root = project_root()
    tags = {**git_state(root), **data_hashes(root, inputs), "device": device, "project": project,
            "processes": str(World.from_environment().size), **numerics.describe()}
    tags |= {tag: os.environ[name] for tag, name in DVC_TAGS.items() if os.environ.get(name)}
    return tags


def take_launcher_run() -> str:
    """The run of the `mlflow run` project that launched this stage ('' when none), taken out of
    MLFLOW_RUN_ID. mlflow.start_run would resume the run that variable names; MLflow consumes it
    the same way (start_run deletes it, end_run unsets it), so the stage's run is a new one in its
    project's experiment, and the processes it starts inherit no run."""
    from mlflow.environment_variables import MLFLOW_RUN_ID

    launcher = MLFLOW_RUN_ID.get() or ""
    MLFLOW_RUN_ID.unset()
    return launcher
