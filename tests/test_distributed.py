"""Training across processes: each torch stage run as 2 gloo processes (torchrun) equals its
1-process run, two "nodes" on 127.0.0.1 share one rendezvous, a killed rank costs one `dvc repro`,
and the layers that span a batch (dropout, batch norm) give the one-process figures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import ROOT, committed, copy_working_tree, tool_env
from dlprojects.config import ConfigError, load_section
from dlprojects.distributed import World, bounds, global_batch
from dlprojects.distributed.launch import torchrun_arguments
from dlprojects.distributed.layers import ShardedDropout
from dlprojects.errors import UserError
from dlprojects.history import read_history

SMOKE = yaml.safe_load((ROOT / "tests/smoke_params.yaml").read_text())


def merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and key in base else value
    return merged


# ------------------------------------------------------------------------------- the pieces


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_the_ranks_shares_are_contiguous_disjoint_and_cover_every_batch(size):
    for count in range(0, 11):
        parts = [bounds(count, World(rank=rank, size=size)) for rank in range(size)]
        assert parts[0][0] == 0 and parts[-1][1] == count
        assert all(stop == start for (_, stop), (start, _) in zip(parts, parts[1:]))
        assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_sharded_dropout_cuts_the_one_process_mask_into_the_ranks_shares():
    inputs = torch.randn(7, 5, 6)
    torch.manual_seed(3)
    expected = F.dropout(inputs, 0.3, training=True)
    parts = []
    for rank in range(2):
        world = World(rank=rank, size=2)
        start, stop = bounds(7, world)
        torch.manual_seed(3)  # every rank holds the same random state
        with global_batch(7):
            parts.append(ShardedDropout(0.3, world).train()(inputs[start:stop]))
    assert torch.equal(torch.cat(parts), expected)


def test_batch_norm_and_dropout_over_two_processes_equal_one(tmp_path):
    """Forward, backward and running statistics over shares of 8 + 8 and 4 + 3 samples."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(ROOT / "tests/distributed_worker.py"), str(tmp_path / "out.json")],
        env={**tool_env(), "GLOO_SOCKET_IFNAME": "lo"}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr
    for rows, differences in json.loads((tmp_path / "out.json").read_text()).items():
        scale = differences.pop("scale")
        assert scale > 0.5, rows  # outputs of the usual size: the bound below means something
        assert max(differences.values()) < 1e-5, (rows, differences)


@pytest.mark.parametrize(("value", "message"), [
    (0, "distributed.processes: 0 must be auto or a whole number from 1"),
    ("two", "distributed.processes: 'two' must be auto or a whole number from 1"),
    (True, "distributed.processes: True must be auto or a whole number from 1"),
])
def test_a_bad_process_count_is_one_line(tmp_path, value, message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"distributed": {"processes": value}}))
    with pytest.raises(ConfigError) as error:
        load_section("distributed", tmp_path / "params.yaml")
    assert str(error.value) == message
    assert committed("distributed") == {"processes": "auto"}


def test_torchrun_arguments_for_one_node_and_for_many(monkeypatch):
    for name in ("DLPROJECTS_NNODES", "DLPROJECTS_NODE_RANK", "DLPROJECTS_RDZV_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_arguments(2, ["train.py", "x"]) == [
        "--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "0", "--standalone",
        "train.py", "x"]
    monkeypatch.setenv("DLPROJECTS_NNODES", "2")
    with pytest.raises(UserError, match="DLPROJECTS_NNODES=2 needs DLPROJECTS_RDZV_ENDPOINT="):
        torchrun_arguments(4, ["train.py"])
    monkeypatch.setenv("DLPROJECTS_RDZV_ENDPOINT", "node0:29400")
    monkeypatch.setenv("DLPROJECTS_NODE_RANK", "1")
    assert torchrun_arguments(4, ["train.py"]) == [
        "--nnodes", "2", "--nproc-per-node", "4", "--max-restarts", "0", "--node-rank", "1",
        "--rdzv-endpoint", "node0:29400", "--rdzv-conf", "timeout=600", "train.py"]
    monkeypatch.setenv("DLPROJECTS_NODE_RANK", "2")
    with pytest.raises(UserError, match="DLPROJECTS_NODE_RANK=2 is not a node of "
                                        "DLPROJECTS_NNODES=2; number the nodes 0 to 1"):
        torchrun_arguments(4, ["train.py"])


# ------------------------------------------------------------------------------- the stages


def make_project(folder: Path, raw: Path, processes: int, override: dict | None = None) -> Path:
    """A folder to run stage scripts in: committed params with smoke sizes, the raw data."""
    folder.mkdir(parents=True)
    params = merge(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), SMOKE),
                   {"distributed": {"processes": processes}, **(override or {})})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "data/raw").mkdir(parents=True)
    for name in ("fashion_mnist", "imdb", "bert"):
        (folder / "data/raw" / name).symlink_to(raw / name)
    return folder


def stage(project: Path, script: str, *args: str, env: dict | None = None,
          **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "pipeline" / script), *args], cwd=project,
                            env={**tool_env(), **(env or {})}, capture_output=True, text=True,
                            timeout=900, **kwargs)
    assert result.returncode == 0, f"{script} failed:\n{result.stderr[-3000:]}"
    return result


FASHION = ("train_fashion.py", "improved", "data/raw/fashion_mnist", "models/fashion/improved",
           "reports/fashion/improved/history.csv")
VIT = ("train_vit.py", "data/raw/fashion_mnist", "models/vit", "reports/vit/history.csv")
SENTIMENT = ("train_sentiment.py", "data/embeddings/imdb", "models/sentiment",
             "reports/sentiment/history.csv")
EMBED = ("embed_imdb.py", "data/raw/imdb", "data/raw/bert", "data/embeddings/imdb")
# a ViT that learns something in 2 epochs, so the two runs have a history to differ in
VIT_PARAMS = {"train_vit": {"loop": {"epochs": 2}, "data": {"train_samples": 1000}}}


def assert_same_training(one: Path, two: Path, history: str) -> float:
    """Every epoch's accuracies the same, losses equal to float rounding; returns the largest
    loss difference. (Weights are no measure here: Adam turns the rounding noise of gradients
    that are zero in exact arithmetic, such as those of a border pixel under batch norm, into
    steps of the learning rate's size.)"""
    first, second = read_history(one / history), read_history(two / history)
    assert [row.keys() for row in first] == [row.keys() for row in second]
    for a, b in zip(first, second):
        assert {k: v for k, v in a.items() if not k.endswith("loss")} == \
               {k: v for k, v in b.items() if not k.endswith("loss")}
    losses = max(abs(a[key] - b[key]) for a, b in zip(first, second) for key in a
                 if key.endswith("loss"))
    assert losses < 1e-4, losses
    return losses


@pytest.fixture(scope="module")
def runs(raw_data, tmp_path_factory):
    """Every torch stage run as 1 and as 2 processes, on smoke params."""
    top = tmp_path_factory.mktemp("distributed")
    projects = {n: make_project(top / f"p{n}", raw_data, n, VIT_PARAMS) for n in (1, 2)}
    logs = {}
    for n, project in projects.items():
        logs[n] = [stage(project, *command) for command in (FASHION, VIT, EMBED, SENTIMENT)]
    return projects, logs


def test_two_processes_train_fashion_as_one_does(runs):
    projects, logs = runs
    assert "train_fashion.py: 2 processes on this node" in logs[2][0].stderr
    assert_same_training(projects[1], projects[2], FASHION[4])


def test_two_processes_train_the_vit_as_one_does(runs):
    projects, _ = runs
    assert_same_training(projects[1], projects[2], VIT[3])


def test_two_processes_embed_the_same_bytes_and_train_sentiment_as_one_does(runs):
    projects, _ = runs
    for path in sorted((projects[1] / EMBED[3]).iterdir()):
        assert path.read_bytes() == (projects[2] / EMBED[3] / path.name).read_bytes(), path.name
    assert_same_training(projects[1], projects[2], SENTIMENT[3])


def test_only_rank_0_writes_and_logs_one_run(runs):
    projects, _ = runs
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{projects[2] / 'mlflow.db'}")
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    for project in ("fashion", "vit", "sentiment"):
        (run,) = client.search_runs([experiments[project]])
        assert run.data.tags["processes"] == "2"
        assert run.data.metrics["train_loss"] > 0
    assert not (projects[2] / "checkpoints").exists() or \
        not any((projects[2] / "checkpoints").iterdir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_rendezvous_train_as_one_process(runs, raw_data, tmp_path):
    """Two launches of the stage (1 process each), node 0 and node 1 of one rendezvous on
    127.0.0.1: node 0 writes what the 1-process run wrote; node 1 writes nothing."""
    projects, _ = runs
    nodes = [make_project(tmp_path / f"node{n}", raw_data, 1, VIT_PARAMS) for n in (0, 1)]
    topology = {"DLPROJECTS_NNODES": "2", "DLPROJECTS_RDZV_ENDPOINT": f"127.0.0.1:{free_port()}",
                "GLOO_SOCKET_IFNAME": "lo"}
    launched = [subprocess.Popen([sys.executable, str(ROOT / "pipeline" / FASHION[0]),
                                  *FASHION[1:]], cwd=node, text=True, stderr=subprocess.PIPE,
                                 env={**tool_env(), **topology, "DLPROJECTS_NODE_RANK": str(n)})
                for n, node in enumerate(nodes)]
    errors = [process.communicate(timeout=600)[1] for process in launched]
    assert [process.returncode for process in launched] == [0, 0], errors
    assert_same_training(projects[1], nodes[0], FASHION[4])
    assert sorted(path.name for path in nodes[1].iterdir()) == ["data", "params.yaml"]


def test_an_unreachable_rendezvous_is_one_line(raw_data, tmp_path):
    project = make_project(tmp_path / "node1", raw_data, 1)
    result = subprocess.run(
        [sys.executable, str(ROOT / "pipeline" / FASHION[0]), *FASHION[1:]], cwd=project,
        env={**tool_env(), "DLPROJECTS_NNODES": "2", "DLPROJECTS_NODE_RANK": "1",
             "DLPROJECTS_RDZV_ENDPOINT": f"127.0.0.1:{free_port()}",
             "DLPROJECTS_RDZV_TIMEOUT": "5"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: node 0 did not answer at "
                                            "DLPROJECTS_RDZV_ENDPOINT=127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(path.name for path in project.iterdir()) == ["data", "params.yaml"]


# ------------------------------------------------------------------------- a rank killed


def ranks(parent: int) -> dict[int, int]:
    """{global rank: pid} of the torchrun workers below process `parent`."""
    found, queue = {}, [parent]
    while queue:
        pid = queue.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        queue += map(int, children)
        rank = [entry for entry in environ if entry.startswith(b"RANK=")]
        if rank and any(entry.startswith(b"LOCAL_RANK=") for entry in environ):
            found[int(rank[0].split(b"=")[1])] = pid
    return found


@pytest.fixture
def dvc_project(tmp_path):
    """A git and DVC project of the working tree: train_fashion on all 55,000 images, 3 epochs,
    as 2 processes."""
    project = copy_working_tree(tmp_path / "project")
    params = merge(yaml.safe_load((project / "params.yaml").read_text()), SMOKE)
    params = merge(params, {"distributed": {"processes": 2},
                            "train_fashion": {"data": {"train_samples": 0}, "loop": {"epochs": 3}}})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(command, cwd=project, check=True, capture_output=True)
    return project


def test_a_rank_killed_mid_epoch_resumes_with_dvc_repro(dvc_project, tmp_path):
    project, checkpoint = dvc_project, dvc_project / "checkpoints/fashion-improved.pt"
    straight = tmp_path / "straight"
    repro = ["dvc", "repro", "train_fashion@improved"]
    subprocess.run(["cp", "-a", str(project), str(straight)], check=True)
    first = subprocess.Popen(repro, cwd=project, env=tool_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the checkpoint appears once epoch 1 is done
    workers = ranks(first.pid)
    assert sorted(workers) == [0, 1], first.stdout.read() if first.poll() is not None else workers
    os.kill(workers[1], signal.SIGKILL)  # rank 1, in epoch 2
    output = first.communicate(timeout=600)[0]
    assert first.returncode != 0, output
    assert "Traceback" not in output
    assert checkpoint.exists()

    resumed = subprocess.run(repro, cwd=project, env=tool_env(), capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoints/fashion-improved.pt after epoch 1" in resumed.stdout + \
        resumed.stderr
    assert not checkpoint.exists()  # results safe: nothing left to resume
    history = "reports/fashion/improved/history.csv"
    subprocess.run(repro, cwd=straight, env=tool_env(), check=True, capture_output=True,
                   timeout=900)
    assert (project / history).read_bytes() == (straight / history).read_bytes()
    assert len(read_history(project / history)) == 3
