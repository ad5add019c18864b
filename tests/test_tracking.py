"""The tracking core against a real SQLite MLflow store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from dlprojects.core import lineage, tracking


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


@pytest.mark.parametrize("enabled", ["true", "false"])
def test_a_training_run_samples_system_metrics_unless_turned_off(project, monkeypatch, enabled):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", enabled)
    with tracking.start_run("fashion", Params(), inputs=[], device="cpu") as run:
        time.sleep(1.5)  # a run that lives for 15 sampling intervals
    metrics = mlflow.MlflowClient(tracking.tracking_uri()).get_run(run.info.run_id).data.metrics
    sampled = {key for key in metrics if key.startswith("system/")}
    if enabled == "true":
        assert {"system/cpu_utilization_percentage",
                "system/system_memory_usage_megabytes"} <= sampled, metrics
    else:
        assert not sampled, metrics


def test_a_dirty_tree_is_tagged(project):
    # What `dvc repro` writes as it goes (dvc.lock, results under reports/) is not a code change
    (project / "reports").mkdir()
    (project / "reports/metrics.json").write_text("{}\n")
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-qm", "results"], cwd=project, check=True)
    (project / "reports/metrics.json").write_text('{"test_accuracy": 0.9}\n')
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert lineage.git_state(project)["git.dirty"] == "false"
    (project / "dvc.yaml").write_text("stages: {}  # edited\n")
    assert lineage.git_state(project)["git.dirty"] == "true"


def test_an_unreachable_server_is_reported_before_any_work(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: refused
    started = time.perf_counter()
    with pytest.raises(tracking.TrackingUnavailable, match=r"http://127\.0\.0\.1:9 is unreachable"):
        with tracking.start_run("fashion", Params(), inputs=[], device="cpu"):
            pytest.fail("the run body must not start")
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("answer, message", [
    ("slow", r"is unreachable \(timed out\)"), ("503", r"answered 503 \(Service Unavailable\)")])
def test_a_server_that_is_healthy_but_cannot_serve_is_one_line(answer, message):
    """/health answers, the store behind it does not (a slow or broken database)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/health" and answer == "slow":
                time.sleep(2)
            status = 503 if answer == "503" and self.path != "/health" else 200
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(tracking.TrackingUnavailable, match=f"{uri} {message}"):
            tracking.check_reachable(uri, timeout=0.5)
    finally:
        server.shutdown()
        server.server_close()


def test_lineage_both_ways_between_a_run_and_its_commit_stage_data_and_experiment(project,
                                                                                    monkeypatch):
    from dlprojects.lineage import query
    from dlprojects.core.errors import UserError

    monkeypatch.setenv("DVC_STAGE", "train_vit")
    monkeypatch.setenv("DVC_EXP_NAME", "deeper-vit")
    (project / "models/vit").mkdir(parents=True)
    (project / "models/vit/model.safetensors").write_bytes(b"weights")
    with tracking.start_run("vit", Params(), inputs=["data/raw/mnist"], device="cpu") as run:
        tracking.log_summary({"test_accuracy": 0.9})
        tracking.tag_model(project / "models/vit")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    client = mlflow.MlflowClient(tracking.tracking_uri())

    described = query.describe_run(client, run.info.run_id)
    assert f"git commit  {commit}\n" in described  # a clean tree: no warning
    assert "dvc stage   train_vit" in described and "dvc exp     deeper-vit" in described
    assert "data        data/raw/mnist  0123abcd.dir" in described
    assert described.endswith(f"restore:\n  git checkout {commit}\n"
                              "  dvc checkout train_vit   # from the local cache, or:\n"
                              "  dvc pull train_vit")

    listed = query.describe_experiment(client, "deeper-vit")
    assert listed.splitlines()[0] == "dvc exp deeper-vit: 1 MLflow run(s)"
    assert f"{run.info.run_id}  train_vit  test_accuracy 0.9000" in listed
    with pytest.raises(UserError, match="no MLflow run is tagged with DVC experiment 'other'"):
        query.describe_experiment(client, "other")

    found = query.describe_model(client, project / "models/vit")
    assert "written by 1 run(s)" in found and f"{run.info.run_id}  train_vit  commit {commit[:12]}" in found
    (project / "models/vit/model.safetensors").write_bytes(b"other weights")
    with pytest.raises(UserError, match="no MLflow run in .* wrote the model in"):
        query.describe_model(client, project / "models/vit")
    with pytest.raises(UserError, match="no MLflow run 'missing'"):
        query.describe_run(client, "missing")


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


# ------------------------------------------------------------ a tracking server that goes down


class Server:
    """A real `mlflow server` on 127.0.0.1, stopped (SIGKILL) and started again on one store."""

    def __init__(self, folder: Path):
        self.folder, self.process = folder, None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.folder / "server.log").open("a")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--default-artifact-root", str(self.folder / "artifacts")],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                tracking.check_reachable(self.uri, timeout=1)
                return
            except tracking.TrackingUnavailable:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def server(tmp_path, monkeypatch):
    folder = tmp_path / "server"
    folder.mkdir()
    running = Server(folder)
    running.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", running.uri)
    yield running
    running.stop()


def _train(folder: Path, stop_server_after: int | None = None, server: Server | None = None):
    """A small `fit` under `start_run` with a checkpoint, as the train stages do."""
    import torch
    from torch import nn

    from dlprojects.core.history import history_writer
    from dlprojects.core.resume import Checkpoint
    from dlprojects.core.runtime import Runtime, seed_everything
    from dlprojects.core.training import TensorBatches, fit

    generator = seed_everything(0)
    inputs = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
    labels = (inputs[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    checkpoint = Checkpoint(folder / "checkpoints/toy.npz", "toy")
    runtime = Runtime(device=torch.device("cpu"), generator=generator, epochs=5, amp=False)

    def on_epoch(epoch, metrics):
        tracking.log_epoch(epoch, metrics)
        if epoch == stop_server_after:
            server.stop()

    with tracking.start_run("toy", Params(), inputs=[], device="cpu",
                            checkpoint=checkpoint) as run:
        fit(model, runtime, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=nn.CrossEntropyLoss(), train=TensorBatches(inputs, labels, 64, shuffle=True),
            evals={"val": TensorBatches(inputs, labels, 64)}, checkpoint=checkpoint,
            on_epoch=on_epoch, on_history=history_writer(folder / "history.csv"))
    return run.info.run_id


@pytest.mark.slow
def test_a_server_that_goes_down_mid_run_stops_training_and_a_rerun_resumes_the_same_run(
        project, server, capsys):
    """The design: fail fast (before training, or at the next epoch's log), keep the checkpoint,
    and resume into the same MLflow run once the server is back."""
    started = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailable) as stopped:
        _train(project, stop_server_after=2, server=server)
    noticed = time.monotonic() - started
    assert f"MLflow tracking server {server.uri} stopped answering in epoch 3" in str(stopped.value)
    assert "the checkpoint of epoch 2 is kept" in str(stopped.value)
    assert (project / "checkpoints/toy.npz").exists() and (project / "history.csv").exists()

    with pytest.raises(tracking.TrackingUnavailable, match="is unreachable"):  # still down
        _train(project)
    server.start()
    run_id = _train(project)
    err = capsys.readouterr().err
    assert f"resuming MLflow run {run_id}" in err and "after epoch 2" in err
    client = mlflow.MlflowClient(server.uri)
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2, 3, 4, 5]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert not (project / "checkpoints/toy.npz").exists()  # removed once the run is recorded
    assert len(client.search_runs([client.get_experiment_by_name("toy").experiment_id])) == 1
    print(f"server down noticed and reported in {noticed:.1f} s")
