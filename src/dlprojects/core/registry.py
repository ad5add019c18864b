"""The model registry: each evaluate stage logs its model to its run and registers it as a
version of the project's model name, once per model digest, then promotes it by alias.

A version is tagged with what made it: its test metrics, the git commit, the model digest, the DVC
hashes of its data and the DVC experiment name. The alias `champion` moves to a new version only
when its test accuracy is at least the champion's; otherwise the version becomes `challenger`.
`models:/<name>@champion` is the one to use."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlprojects.core.lineage import (
    MODEL_TAG,
    data_hashes,
    git_state,
    model_digest,
    project_root,
)

CHAMPION, CHALLENGER = "champion", "challenger"
SCORE = "test_accuracy"  # what promotion compares
# What a version's logged model takes and gives; a version without it (an older project's
# model of the same weights) does not count as holding the model
INTERFACE = ("model.interface", "raw inputs, named classes")


def registered_version(client, name: str, digest: str) -> Any | None:
    """The first version of registered model `name` tagged `model.digest` = `digest` (and logged
    with today's interface), or None."""
    versions = client.search_model_versions(
        f"name = '{name.replace(chr(39), '')}' and tags.`{MODEL_TAG}` = '{digest}' "
        f"and tags.`{INTERFACE[0]}` = '{INTERFACE[1]}'")
    return min(versions, key=lambda version: int(version.version)) if versions else None


def version_tags(model_dir: Path, metrics: dict[str, float], inputs: list[str]) -> dict[str, str]:
    """What made a version: test metrics, commit, model digest, data hashes, DVC experiment."""
    root = project_root()
    tags = {name: repr(float(value)) for name, value in metrics.items()}
    tags |= {MODEL_TAG: model_digest(model_dir), "git.commit": git_state(root)["git.commit"]}
    tags |= data_hashes(root, inputs)
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def register_once(registered_name: str, model_dir: Path, log: Callable[[], Any],
                  tags: dict[str, str] | None = None) -> Any:
    """Register the model in `model_dir` as a new version of `registered_name`, unless a version
    already holds it (tag `model.digest`, the folder's digest): an evaluate stage that runs
    again on the same model adds no version. `log()` logs the model to the active run (without
    registering it) and returns its ModelInfo; it is called only when a version is made. New
    versions carry `tags` and at least `model.digest` and `git.commit`. Returns the version that
    holds the model."""
    import mlflow

    digest = model_digest(model_dir)
    existing = registered_version(mlflow.MlflowClient(), registered_name, digest)
    if existing is not None:
        print(f"models:/{registered_name}/{existing.version} already holds the model in "
              f"{Path(model_dir).as_posix()} (digest {digest[:12]}): not registered again",
              file=sys.stderr)
        return existing
    info = log()
    commit = git_state(project_root())["git.commit"]
    tags = {MODEL_TAG: digest, "git.commit": commit, INTERFACE[0]: INTERFACE[1], **(tags or {})}
    return mlflow.register_model(info.model_uri, registered_name, tags=tags)


def promote(client, name: str, version: Any) -> str:
    """Point `champion` at `version` when its test accuracy is at least the champion's (or there
    is none), else `challenger`; returns the alias it now holds."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        champion = None
    if champion is not None and str(champion.version) == str(version.version):
        return CHAMPION
    score = float(version.tags.get(SCORE, "nan"))
    best = float(champion.tags.get(SCORE, "-inf")) if champion is not None else -math.inf
    alias = CHAMPION if score >= best else CHALLENGER
    client.set_registered_model_alias(name, alias, version.version)
    return alias


def publish(registered_name: str, model_dir: Path, log: Callable[[], Any], *,
            metrics: dict[str, float], inputs: list[str]) -> str:
    """Register the model in `model_dir` once (`register_once`, tagged by `version_tags`) and
    promote it; returns what a user loads, e.g. "models:/<name>@champion"."""
    import mlflow

    client = mlflow.MlflowClient()
    tags = version_tags(model_dir, metrics, inputs)
    version = register_once(registered_name, model_dir, log, tags)
    for name, value in tags.items():  # a version registered before these tags were recorded
        if name not in version.tags:
            client.set_model_version_tag(registered_name, version.version, name, value)
    version = client.get_model_version(registered_name, version.version)
    alias = promote(client, registered_name, version)
    print(f"models:/{registered_name}/{version.version} is {alias} "
          f"({SCORE} {version.tags.get(SCORE, 'not recorded')})", file=sys.stderr)
    return f"models:/{registered_name}@{alias}"
