"""The model registry: each evaluate stage logs its model to its run and registers it as a
version of the project's model name, once per model digest."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlprojects.lineage import MODEL_TAG, git_state, model_digest, project_root


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
