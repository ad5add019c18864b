"""The model registry: each evaluate stage logs its model to its run and registers it as a
version of the project's model name, once per model digest, then promotes it by alias.

A version is tagged with what made it: its test metrics, the git commit, the model digest, the DVC
hashes of its data, the DVC experiment name, and which test examples it got right (packed bits,
`significance.pack`). The alias `champion` moves to a new version only on a significant gain: on
the same test examples, more right than the champion, with McNemar's exact p at most the params'
`registry.promote_alpha`; otherwise the version becomes `challenger`. Each version's tag
`promotion` says why. `models:/<name>@champion` is the one to use."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dlprojects.core.lineage import (
    MODEL_TAG,
    data_hashes,
    git_state,
    model_digest,
    project_root,
)

CHAMPION, CHALLENGER = "champion", "challenger"
SCORE = "test_accuracy"  # what promotion compares
CORRECT, EXAMPLES = "test.correct", "test.examples"  # which test examples it got right, of which
REASON = "promotion"  # why a version is champion or challenger
TAG_LIMIT = 5000  # characters of a model version's tag value (MLflow)
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


def version_tags(model_dir: Path, metrics: dict[str, float], inputs: list[str],
                 results: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, str]:
    """What made a version: test metrics, commit, model digest, data hashes, DVC experiment, and
    from `results` (test labels, predicted classes) which examples it got right."""
    from dlprojects.core import significance

    root = project_root()
    tags = {name: repr(float(value)) for name, value in metrics.items()}
    if results is not None:
        labels, predicted = (np.asarray(values) for values in results)
        packed = significance.pack(labels == predicted)
        if len(packed) <= TAG_LIMIT:  # a test set of more than about 80,000 examples is not
            tags |= {CORRECT: packed, EXAMPLES: significance.examples_digest(labels)}
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


def promote(client, name: str, version: Any, alpha: float) -> str:
    """Point `champion` at `version` when it beats the champion significantly at level `alpha`
    (or there is none), else `challenger`; tag the version with why (`promotion`). Returns the
    alias it now holds."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        champion = None
    if champion is not None and str(champion.version) == str(version.version):
        return CHAMPION
    alias, reason = (CHAMPION, "the first version") if champion is None else _against(
        champion, version, alpha)
    client.set_registered_model_alias(name, alias, version.version)
    client.set_model_version_tag(name, version.version, REASON, f"{alias}: {reason}")
    return alias


def _against(champion: Any, version: Any, alpha: float) -> tuple[str, str]:
    """(alias, why) for `version` against the `champion`: paired on the same test examples where
    both record them, else by test accuracy alone."""
    from dlprojects.core import significance

    try:
        same = champion.tags[EXAMPLES] == version.tags[EXAMPLES]
        old, new = significance.unpack(champion.tags[CORRECT]), significance.unpack(
            version.tags[CORRECT])
    except (KeyError, ValueError):
        same = False
    if not same:
        score = float(version.tags.get(SCORE, "nan"))
        best = float(champion.tags.get(SCORE, "-inf"))
        alias = CHAMPION if score >= best else CHALLENGER
        return alias, (f"{SCORE} {score:.4f} against {best:.4f} of version {champion.version}, "
                       f"not on the same recorded test examples: compared by accuracy alone")
    result = significance.paired(old, new, alpha)
    gain = significance.verdict(result.low, result.high, result.p_value, alpha) == "B better"
    return (CHAMPION if gain else CHALLENGER), (
        f"{100 * result.difference:+.2f} points over version {champion.version} on "
        f"{result.n} test examples, {100 * (1 - alpha):g}% interval [{100 * result.low:+.2f}, "
        f"{100 * result.high:+.2f}], McNemar p = {result.p_value:.3g} "
        f"{'<=' if result.p_value <= alpha else '>'} {alpha:g}"
        + ("" if gain else ": not a significant gain"))


def publish(registered_name: str, model_dir: Path, log: Callable[[], Any], *,
            metrics: dict[str, float], inputs: list[str],
            results: tuple[np.ndarray, np.ndarray] | None = None,
            alpha: float | None = None) -> str:
    """Register the model in `model_dir` once (`register_once`, tagged by `version_tags`) and
    promote it at level `alpha` (default: params.yaml's `registry.promote_alpha`); returns what
    a user loads, e.g. "models:/<name>@champion"."""
    import mlflow

    if alpha is None:
        from dlprojects.core.config import load_section

        alpha = load_section("registry").promote_alpha
    client = mlflow.MlflowClient()
    tags = version_tags(model_dir, metrics, inputs, results)
    version = register_once(registered_name, model_dir, log, tags)
    for name, value in tags.items():  # a version registered before these tags were recorded
        if name not in version.tags:
            client.set_model_version_tag(registered_name, version.version, name, value)
    version = client.get_model_version(registered_name, version.version)
    alias = promote(client, registered_name, version, alpha)
    reason = client.get_model_version(registered_name, version.version).tags.get(REASON, alias)
    print(f"models:/{registered_name}/{version.version} is {reason} "
          f"({SCORE} {version.tags.get(SCORE, 'not recorded')})", file=sys.stderr)
    return f"models:/{registered_name}@{alias}"
