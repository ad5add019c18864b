"""`python -m dlprojects.lineage model <folder or digest>`: the runs of a model in whichever store
MLFLOW_TRACKING_URI names, and the commit whose dvc.lock first recorded it (a real git repo, a real
SQLite MLflow store and the real report; no mocks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from conftest import tool_env
from dlprojects.core import lineage, tracking
from dlprojects.lineage import query
from dlprojects.core.errors import UserError
from dlprojects.report import write_report
from test_report import fake_results

FIRST_HASH, SECOND_HASH = "a" * 32 + ".dir", "b" * 32 + ".dir"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()


def record(root: Path, vit_hash: str, message: str) -> str:
    """dvc.lock recording models/vit with `vit_hash`, the report written, all committed."""
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train_vit:\n    cmd: python pipeline/train_vit.py\n"
        f"    outs:\n    - path: models/vit\n      hash: md5\n      md5: {vit_hash}\n")
    write_report(root)
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def project(chdir) -> dict:
    """A project whose second commit's dvc.lock first records models/vit, with the runs of
    every model in its mlflow.db (the default store) and a registered version of the ViT."""
    (chdir / "dvc.yaml").write_text("stages: {}\n")
    (chdir / ".gitignore").write_text("/models/\n/mlflow.db\n/mlruns/\n")
    git(chdir, "init", "-q")
    git(chdir, "add", "-A")
    git(chdir, "commit", "-qm", "code")
    client = mlflow.MlflowClient(tracking.tracking_uri())
    run_ids = fake_results(chdir, client)
    vit = chdir / "models/vit"
    digest = lineage.model_digest(vit)
    client.log_metric(run_ids["models/vit"], "test_accuracy", 0.875)
    client.create_registered_model("vit")
    client.create_model_version("vit", "file:///nowhere", run_id=run_ids["models/vit"],
                                tags={lineage.MODEL_TAG: digest})
    commit = record(chdir, FIRST_HASH, "results")
    return {"root": chdir, "client": client, "run_id": run_ids["models/vit"], "digest": digest,
            "commit": commit}


def test_a_model_is_found_by_folder_by_digest_and_by_short_digest(project):
    client, digest = project["client"], project["digest"]
    by_folder = query.describe_model(client, project["root"] / "models/vit")
    assert by_folder.splitlines()[:4] == [
        f"model digest  {digest}",
        f"model folder  models/vit  (DVC hash {FIRST_HASH})",
        f"git commit    {project['commit']} (its dvc.lock first recorded this model)",
        "registered    models:/vit/1"]
    assert f"written by 1 run(s) in {tracking.tracking_uri()}, oldest first:" in by_folder
    assert f"  {project['run_id']}  " in by_folder and "test_accuracy 0.8750" in by_folder
    assert by_folder.endswith(f"git checkout {project['commit']} && dvc pull models/vit")
    assert query.describe_model(client, "models/vit") == by_folder  # relative, from the root
    assert query.describe_model(client, digest) == by_folder
    assert query.describe_model(client, digest[:12].upper()) == by_folder


def test_a_digest_of_an_earlier_model_is_found_through_the_history_of_the_report(project):
    root, client, digest = project["root"], project["client"], project["digest"]
    (root / "models/vit/model.safetensors").write_text("retrained")  # a later commit's model
    later = record(root, SECOND_HASH, "retrained")
    assert digest not in (root / "reports/README.md").read_text()
    described = query.describe_model(client, digest[:12])
    assert f"model folder  models/vit  (DVC hash {FIRST_HASH})" in described
    assert f"git commit    {project['commit']} " in described and project["run_id"] in described
    with pytest.raises(UserError, match=rf"no MLflow run in .* wrote the model in models/vit; "
                                        rf"git commit: {later} \(its dvc.lock first"):
        query.describe_model(client, root / "models/vit")  # no run wrote the retrained one


def test_what_cannot_be_found_is_one_line_that_says_so(project, tmp_path_factory):
    client = project["client"]
    with pytest.raises(UserError, match=r"no MLflow run in sqlite:.* has model digest deadbeef0; "
                                        r"git commit: unknown"):
        query.describe_model(client, "deadbeef0")
    with pytest.raises(UserError, match=r"'no-such-model' is neither a model folder nor a model "
                                        r"digest"):
        query.describe_model(client, "no-such-model")
    elsewhere = tmp_path_factory.mktemp("not-git")
    (elsewhere / "models/vit").mkdir(parents=True)
    (elsewhere / "models/vit/model.safetensors").write_text("weights")
    with pytest.raises(UserError, match=r"is not in a git repository, so no commit can be named"):
        query.describe_model(client, elsewhere / "models/vit")


def lineage_cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlprojects.lineage", "model", *args], cwd=root,
                          env={**tool_env(), **env}, capture_output=True, text=True, timeout=120)


def test_the_command_line_finds_a_digest_or_fails_in_one_line(project):
    root, digest = project["root"], project["digest"]
    found = lineage_cli(root, digest[:12])
    assert found.returncode == 0, found.stderr
    assert project["run_id"] in found.stdout and project["commit"] in found.stdout
    for result, message in (
            (lineage_cli(root, "deadbeef0"), "error: no MLflow run in sqlite:///"),
            (lineage_cli(root, digest, MLFLOW_TRACKING_URI="http://127.0.0.1:9"),
             "error: MLflow tracking server http://127.0.0.1:9 is unreachable")):
        assert result.returncode == 2
        assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
