"""The tracking core against a real SQLite MLflow store."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

import mlflow
import pytest

from dlprojects import tracking


@dataclass(frozen=True)
class Params:
    epochs: int = 3
    lr: float = 0.1


@pytest.fixture
def project(chdir, monkeypatch):
    """A git repo with a dvc.yaml and a dvc.lock recording one data folder."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (chdir / "dvc.yaml").write_text("stages: {}\n")
    (chdir / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  download@mnist:\n    cmd: x\n    outs:\n"
        "    - path: data/raw/mnist\n      hash: md5\n      md5: 0123abcd.dir\n")
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "commit", "-qm", "init"], check=True)
    return chdir


def test_a_run_carries_its_lineage(project, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train_fashion@improved")
    monkeypatch.setenv("DVC_EXP_NAME", "wider-layers")
    with tracking.start_run("fashion", Params(), inputs=["data/raw/mnist", "data/raw/other"],
                            device="cpu") as run:
        tracking.log_epoch(1, {"epoch": 1, "val_accuracy": 0.5})
        tracking.log_epoch(2, {"epoch": 2, "val_accuracy": 0.7})
    assert tracking.tracking_uri() == f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking.tracking_uri())
    stored = client.get_run(run.info.run_id)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert stored.data.tags["git.commit"] == commit.strip()
    assert stored.data.tags["git.dirty"] == "false"
    assert stored.data.tags["dvc.stage"] == "train_fashion@improved"
    assert stored.data.tags["dvc.exp_name"] == "wider-layers"
    assert stored.data.tags["device"] == "cpu"
    assert stored.data.tags["data.data/raw/mnist"] == "0123abcd.dir"
    assert stored.data.tags["data.data/raw/other"] == "not recorded by dvc.lock"
    assert stored.info.run_name == "wider-layers"
    assert stored.data.params == {"epochs": "3", "lr": "0.1"}
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.7)]
    assert client.get_experiment(stored.info.experiment_id).name == "fashion"


def test_a_dirty_tree_is_tagged(project):
    (project / "dvc.yaml").write_text("stages: {}  # edited\n")
    assert tracking.git_state(project)["git.dirty"] == "true"


def test_an_unreachable_server_is_reported_before_any_work(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: refused
    started = time.perf_counter()
    with pytest.raises(tracking.TrackingUnavailable, match=r"http://127\.0\.0\.1:9 is unreachable"):
        with tracking.start_run("fashion", Params(), inputs=[], device="cpu"):
            pytest.fail("the run body must not start")
    assert time.perf_counter() - started < 10


def test_lineage_both_ways_between_a_run_and_its_commit_stage_data_and_experiment(project,
                                                                                    monkeypatch):
    from dlprojects import lineage
    from dlprojects.errors import UserError

    monkeypatch.setenv("DVC_STAGE", "train_vit")
    monkeypatch.setenv("DVC_EXP_NAME", "deeper-vit")
    with tracking.start_run("vit", Params(), inputs=["data/raw/mnist"], device="cpu") as run:
        tracking.log_summary({"test_accuracy": 0.9})
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    client = mlflow.MlflowClient(tracking.tracking_uri())

    described = lineage.describe_run(client, run.info.run_id)
    assert f"git commit  {commit}\n" in described  # a clean tree: no warning
    assert "dvc stage   train_vit" in described and "dvc exp     deeper-vit" in described
    assert "data        data/raw/mnist  0123abcd.dir" in described
    assert described.endswith(f"restore:\n  git checkout {commit}\n"
                              "  dvc checkout train_vit   # from the local cache, or:\n"
                              "  dvc pull train_vit")

    listed = lineage.describe_experiment(client, "deeper-vit")
    assert listed.splitlines()[0] == "dvc exp deeper-vit: 1 MLflow run(s)"
    assert f"{run.info.run_id}  train_vit  test_accuracy 0.9000" in listed
    with pytest.raises(UserError, match="no MLflow run is tagged with DVC experiment 'other'"):
        lineage.describe_experiment(client, "other")
    with pytest.raises(UserError, match="no MLflow run 'missing'"):
        lineage.describe_run(client, "missing")


def test_under_mlflow_run_a_stage_still_gets_its_own_run_in_its_project(project, monkeypatch):
    client = mlflow.MlflowClient(tracking.tracking_uri())
    launcher = client.create_run(client.create_experiment("launcher")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher)  # what `mlflow run` sets for its command
    with tracking.start_run("vit", Params(), inputs=[], device="cpu") as run:
        pass
    assert run.info.run_id != launcher
    stored = client.get_run(run.info.run_id)
    assert client.get_experiment(stored.info.experiment_id).name == "vit"
    assert stored.data.tags["mlflow.project.run_id"] == launcher
