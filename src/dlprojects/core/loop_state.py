"""The torch loop's state in its checkpoint (`dlprojects.core.resume`): model, optimiser and
scheduler state, the CPU, CUDA and batch-order random states and the loop's `Progress`. Saved by
rank 0, loaded by every rank (which must all find the same), put back into the loop's objects.

State dicts become named arrays plus JSON: a tensor is an array named by its path
("model/fc.weight", "optimizer/state/0/exp_avg"), tuples and dicts with other than text keys are
tagged in the JSON, so what is read back is what was saved, to the bit, and nothing is unpickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dlprojects.core.distributed import World
from dlprojects.core.errors import UserError
from dlprojects.core.progress import Progress
from dlprojects.core.resume import Checkpoint

Scheduler = torch.optim.lr_scheduler.LRScheduler


def save(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Scheduler | None, generator: torch.Generator, progress: Progress) -> None:
    """Everything a resumed run needs to go on as if never stopped, to `checkpoint`."""
    device = next(model.parameters()).device
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else {},
             "rng": torch.get_rng_state(), "generator": generator.get_state(),
             "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
             "best_state": progress.best_state, "progress": progress.record()}
    arrays: dict[str, np.ndarray] = {}
    checkpoint.save(arrays, _encode(state, "", arrays))


def load(checkpoint: Checkpoint, world: World, device: torch.device) -> dict[str, Any] | None:
    """This run's checkpoint, read by every rank; all must find the same one."""
    found = checkpoint.load(announce=world.main)
    state = _decode(found[1], found[0]) if found is not None else None
    epochs = len(state["progress"]["history"]) if state is not None else 0
    if world.size > 1:
        counts = torch.tensor([epochs, -epochs], dtype=torch.int64, device=device)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX)
        if counts[0] != -counts[1]:
            raise UserError(f"rank {world.rank} finds {checkpoint.path} after {epochs} epochs, "
                            f"another rank after {int(counts[0])}: keep checkpoints/ where every "
                            f"node sees it (shared storage), or remove it to start afresh")
    return state


def restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Scheduler | None, generator: torch.Generator,
            select: str) -> Progress:
    """Put the saved state back into the loop's objects and random generators; its progress."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    generator.set_state(state["generator"])
    device = next(model.parameters()).device
    if state["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return Progress.restored(state["progress"], state["best_state"], select)


def _encode(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """`value` as JSON, its tensors moved to `arrays` under their path."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16: its bits, as int16
            tensor = tensor.view(torch.int16)
        arrays[path] = tensor.numpy()
        return {"$tensor": path, "dtype": dtype}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(item, f"{path}/{i}", arrays) for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(item, f"{path}/{i}", arrays) for i, item in enumerate(value)]
    if isinstance(value, dict):
        items = [[key, _encode(item, f"{path}/{key}".lstrip("/"), arrays)]
                 for key, item in value.items()]
        if all(isinstance(key, str) and not key.startswith("$") for key in value):
            return dict(items)
        return {"$items": items}
    return value


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """What `_encode` was given: tensors from `arrays`, tuples and dicts as they were."""
    if isinstance(value, list):
        return [_decode(item, arrays) for item in value]
    if not isinstance(value, dict):
        return value
    if "$tensor" in value:
        tensor = torch.from_numpy(arrays[value["$tensor"]])
        return tensor.view(torch.bfloat16) if value["dtype"] == "bfloat16" else tensor
    if "$tuple" in value:
        return tuple(_decode(item, arrays) for item in value["$tuple"])
    if "$items" in value:
        return {key: _decode(item, arrays) for key, item in value["$items"]}
    return {key: _decode(item, arrays) for key, item in value.items()}
