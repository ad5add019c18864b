"""Training across processes: the layers that span a batch (dropout, batch norm) give the
one-process figures, a checkpoint resumes on any number of processes, and launching is checked.
(On the smoke pipeline, in test_pipeline: each torch stage as 2 gloo processes against 1, two
"nodes" on one rendezvous, a rank killed mid-epoch and resumed by `dvc repro`.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import ROOT, committed, tool_env
from dlprojects.core.config import ConfigError, load_section
from dlprojects.core.distributed import World, bounds, global_batch
from dlprojects.core.distributed.launch import torchrun_arguments
from dlprojects.core.distributed.layers import ShardedDropout
from dlprojects.core.errors import UserError
from dlprojects.core.history import read_history
from dlprojects.numerics.gemm import PANEL

# ------------------------------------------------------------------------------- the pieces


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_the_ranks_shares_are_contiguous_disjoint_and_cover_every_batch(size):
    for count in range(0, 300):
        parts = [bounds(count, World(rank=rank, size=size)) for rank in range(size)]
        assert parts[0][0] == 0 and parts[-1][1] == count
        assert all(stop == start for (_, stop), (start, _) in zip(parts, parts[1:]))
        if count >= PANEL * size:  # each share starts on a panel; shares differ by a panel at most
            assert all(start % PANEL == 0 for start, _ in parts)
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= PANEL
        else:
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_a_sample_gives_the_same_bytes_in_its_rank_share_as_in_the_whole_batch():
    g = torch.Generator().manual_seed(0)
    layer, batch = torch.nn.Linear(784, 256), torch.randn(256, 784, generator=g)
    whole = layer(batch)
    for rank in range(2):
        start, stop = bounds(256, World(rank=rank, size=2))
        assert torch.equal(layer(batch[start:stop]), whole[start:stop])


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


def worker(processes: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """tests/distributed_worker.py `args` as `processes` torchrun processes."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         str(processes), str(ROOT / "tests/distributed_worker.py"), *args],
        env={**tool_env(), "GLOO_SOCKET_IFNAME": "lo"}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0 or not check, result.stderr[-3000:]
    return result


def test_batch_norm_and_dropout_over_two_processes_equal_one(tmp_path):
    """Forward, backward and running statistics over shares of 8 + 8 and 4 + 3 samples."""
    worker(2, "layers", str(tmp_path / "out.json"))
    for rows, differences in json.loads((tmp_path / "out.json").read_text()).items():
        scale = differences.pop("scale")
        assert scale > 0.5, rows  # outputs of the usual size: the bound below means something
        assert max(differences.values()) < 1e-5, (rows, differences)


def test_a_checkpoint_of_two_processes_resumes_as_one_or_two(tmp_path):
    """The loop's state does not depend on the number of processes: a 2-process run that crashed
    at the end of epoch 2, before its checkpoint, ends, resumed by 2 processes, in the bytes of a
    run never stopped, and resumed by 1, in the same accuracies (losses to float rounding)."""
    worker(2, "fit", str(tmp_path / "straight"), "4")
    for processes in (2, 1):
        folder = tmp_path / f"resumed-by-{processes}"
        crashed = worker(2, "fit", str(folder), "4", "2", check=False)
        assert crashed.returncode != 0 and "crash after epoch 2" in crashed.stderr
        resumed = worker(processes, "fit", str(folder), "4")
        assert "checkpoint.npz after epoch 1" in resumed.stderr, resumed.stderr[-2000:]
    straight = (tmp_path / "straight/history.csv").read_bytes()
    assert (tmp_path / "resumed-by-2/history.csv").read_bytes() == straight
    assert_same_training(tmp_path / "straight", tmp_path / "resumed-by-1", "history.csv")
    assert len(read_history(tmp_path / "straight/history.csv")) == 4


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


FASHION = ("dlprojects.fashion.train", "improved", "data/raw/fashion_mnist",
           "models/fashion/improved",
           "reports/fashion/improved/history.csv")


# Training bytes differ with the process count (the ranks' gradient sums are added in another
# order), so a validation example that is a near tie can fall either way: one of the smoke
# split's 5,000 FashionMNIST images did when AdamW's sqrt changed route. Accuracies may differ by
# at most 2 of 5,000 examples; the losses, which every example moves, are the tight check.
ACCURACY_SLACK = 2 / 5000


def assert_same_training(one: Path, two: Path, history: str) -> float:
    """Every epoch's accuracies the same to ACCURACY_SLACK, losses equal to float rounding;
    returns the largest loss difference. (Weights are no measure here: Adam turns the rounding
    noise of gradients that are zero in exact arithmetic, such as those of a border pixel under
    batch norm, into steps of the learning rate's size.)"""
    first, second = read_history(one / history), read_history(two / history)
    assert len(first) == len(second) > 0
    assert [row.keys() for row in first] == [row.keys() for row in second]
    for a, b in zip(first, second):
        assert a["epoch"] == b["epoch"]
        for key in a:
            if key.endswith("accuracy"):
                assert abs(a[key] - b[key]) <= ACCURACY_SLACK + 1e-12, (a["epoch"], key, a, b)
            elif not key.endswith("loss"):
                assert a[key] == b[key], (a["epoch"], key)
    losses = max(abs(a[key] - b[key]) for a, b in zip(first, second) for key in a
                 if key.endswith("loss"))
    assert losses < 1e-4, losses
    return losses


def node(folder: Path, project: Path) -> Path:
    """A folder to run a stage script in, as one node: the project's params and raw data."""
    (folder / "data/raw").mkdir(parents=True)
    shutil.copy(project / "params.yaml", folder / "params.yaml")
    (folder / "data/raw/fashion_mnist").symlink_to(project / "data/raw/fashion_mnist")
    return folder
