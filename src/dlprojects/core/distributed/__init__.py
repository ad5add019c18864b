"""Data-parallel training with PyTorch's own engine: `torchrun` processes, one process group, each
rank a disjoint share of every batch.

A stage starts as one process. When param `distributed.processes` asks for more than one per
node (`auto`: one per visible GPU), or the environment names other nodes, `launch.launch`
runs the stage's own command again under torchrun's launcher (`torch.distributed.run`, the code
behind the `torchrun` command) and exits with its status; a stage started by `torchrun` itself
goes straight on. Every rank then computes; only rank 0 writes (DVC outs, checkpoints, the
MLflow run).

Across nodes (static rendezvous, so node 0 holds rank 0), the same three variables on every node:

    DLPROJECTS_NNODES        nodes taking part (default 1)
    DLPROJECTS_NODE_RANK     this node's number, 0 on the node whose outs DVC records
    DLPROJECTS_RDZV_ENDPOINT host:port of node 0, reachable from every node

The split of the work keeps a run equal to one process: every rank draws the same shuffled order
and augmentation, each takes its contiguous share of each global batch (`share`), gradients are
averaged over ranks with each rank's loss weighed by its share, batch norm statistics are summed
over all ranks (`layers`), and evaluation sums are reduced over ranks (`all_sum`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dlprojects.core.errors import UserError
from dlprojects.numerics.gemm import PANEL

PARAM = "distributed.processes"
ENDPOINT = "DLPROJECTS_RDZV_ENDPOINT"  # host:port of node 0 (see `launch`)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> World:
        """What torchrun told this process (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)."""
        env = os.environ
        if "TORCHELASTIC_RUN_ID" not in env and "LOCAL_RANK" not in env:
            return cls()
        return cls(rank=int(env["RANK"]), size=int(env["WORLD_SIZE"]),
                   local_rank=int(env["LOCAL_RANK"]),
                   local_size=int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))


def processes_per_node(setting: int | str) -> int:
    """`auto`: one per visible CUDA GPU, else 1; or the number asked for."""
    if setting == "auto":
        return max(1, torch.cuda.device_count())
    return int(setting)


def init(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on the CPU); each rank takes
    the GPU of its local rank. Without torchrun: (World(), device) unchanged."""
    world = World.from_environment()
    if world.size == 1:
        return world, device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"{world.local_size} processes per node but "
                            f"{torch.cuda.device_count()} GPUs visible; set {PARAM}: auto")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        except (RuntimeError, ValueError) as error:
            raise UserError(f"rank {world.rank} could not join the process group "
                            f"({str(error).splitlines()[0][:160]}); check {ENDPOINT} and that "
                            f"every node can reach it") from None
        atexit.register(dist.destroy_process_group)
        _one_line_when_a_peer_is_lost(world)
    return world, device


def _one_line_when_a_peer_is_lost(world: World) -> None:
    """A rank whose collective fails because another rank stopped (killed, or its own error)
    says so in one line instead of a traceback; torchrun then stops the run, and the stage
    resumes from its last checkpoint when run again."""
    default = sys.excepthook

    def hook(kind, error, trace):
        message = str(error)
        if issubclass(kind, RuntimeError) and (isinstance(error, dist.DistError) or any(
                word in message for word in ("Connection reset", "Connection closed", "gloo",
                                             "NCCL"))):
            print(f"error: rank {world.rank} lost the other processes "
                  f"({message.strip().splitlines()[0][:120]}); another rank stopped: run the "
                  f"stage again to resume from its last checkpoint", file=sys.stderr)
            return
        default(kind, error, trace)

    sys.excepthook = hook


# ---------------------------------------------------------------------------------- the work


def bounds(count: int, world: World) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous part of `count` samples.

    Parts start on whole panels of the matrix-product kernel (`numerics.gemm.PANEL` samples), so
    each sample sits where it sits in one process's batch and its forward pass gives the same
    bytes: the first ranks take one panel more, the last rank the rows past the last panel. A
    batch of fewer panels than ranks is cut sample by sample (the first ranks one sample more)."""
    unit = PANEL if count >= PANEL * world.size else 1
    base, extra = divmod(count // unit, world.size)
    start = (world.rank * base + min(world.rank, extra)) * unit
    stop = start + (base + (world.rank < extra)) * unit
    return start, count if world.rank == world.size - 1 else stop


def share(batch: Any, world: World) -> Any:
    """This rank's part of a batch: a tensor, or a tuple of tensors split alike along their
    first dimension."""
    if world.size == 1:
        return batch
    if isinstance(batch, tuple):
        return tuple(share(part, world) for part in batch)
    start, stop = bounds(len(batch), world)
    return batch[start:stop]


_global_rows: list[int] = []  # the size of the batch whose share is going through the model


def global_rows() -> int | None:
    """Inside `global_batch`: the size of the global batch; else None."""
    return _global_rows[-1] if _global_rows else None


@contextlib.contextmanager
def global_batch(rows: int) -> Iterator[None]:
    """Tells `ShardedDropout` the size of the global batch this rank's share belongs to."""
    _global_rows.append(rows)
    try:
        yield
    finally:
        _global_rows.pop()


def all_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The sum over ranks of `tensor` (itself with one rank)."""
    if world.size > 1:
        dist.all_reduce(tensor)
    return tensor


def parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`model` for training: itself with one rank; else with synchronised batch norm and sharded
    dropout, wrapped in DistributedDataParallel (which averages the gradients over ranks)."""
    if world.size == 1:
        return model
    from dlprojects.core.distributed.layers import shard_dropout, sync_batch_norm

    sync_batch_norm(model, device)
    shard_dropout(model, world)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


