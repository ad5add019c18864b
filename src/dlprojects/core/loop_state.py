"""The torch loop's state in its checkpoint: saved by rank 0 (write, then rename), loaded by every
rank (which must all find the same), put back into model, optimiser, scheduler and generators."""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dlprojects.core.distributed import World
from dlprojects.core.errors import UserError
from dlprojects.core.resume import Checkpoint


def save(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: torch.optim.lr_scheduler.LRScheduler | None, generator: torch.Generator,
         **progress: Any) -> None:
    """The loop's state and `progress` (history, best epoch...) to `checkpoint`: written, then
    renamed, so a kill mid-write leaves the previous checkpoint intact."""
    state = {"fingerprint": checkpoint.fingerprint, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else {},
             "rng": torch.get_rng_state(), "generator": generator.get_state(), **progress}
    checkpoint.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = checkpoint.path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, checkpoint.path)


def load(checkpoint: Checkpoint, world: World,
                     device: torch.device) -> dict[str, Any] | None:
    """This run's checkpoint, read by every rank; all must find the same one."""
    path, state = checkpoint.path, None
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != checkpoint.fingerprint:
            if world.main:
                print(f"ignoring {path}: it was written with other params; starting afresh",
                      file=sys.stderr)
            state = None
    epochs = len(state["history"]) if state is not None else 0
    if world.size > 1:
        found = torch.tensor([epochs, -epochs], dtype=torch.int64, device=device)
        dist.all_reduce(found, op=dist.ReduceOp.MAX)
        if found[0] != -found[1]:
            raise UserError(f"rank {world.rank} finds {path} after {epochs} epochs, another rank "
                            f"after {int(found[0])}: keep checkpoints/ where every node sees it "
                            f"(shared storage), or remove it to start afresh")
    return state


def restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None,
             generator: torch.Generator) -> None:
    """Put the saved state back into the loop's objects, and the global and batch-order RNGs."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    generator.set_state(state["generator"])
