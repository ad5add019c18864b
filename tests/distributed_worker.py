"""Run by `torchrun` from test_distributed.

    distributed_worker.py layers OUT.json       each rank computes its share with the distributed
        layers; rank 0 writes how far what the ranks gave together is from the one-process
        layers on the whole batch
    distributed_worker.py fit FOLDER EPOCHS [STOP]   `training.fit` on a small problem with batch
        norm and dropout, checkpointing to FOLDER; STOP: an error after that epoch (a crash)
"""

import dlprojects  # noqa: F401  first: pins the CPU numerics

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from dlprojects.core.distributed import World, bounds, global_batch, init
from dlprojects.core.distributed.layers import shard_dropout, sync_batch_norm
from dlprojects.core.history import history_writer
from dlprojects.core.resume import Checkpoint
from dlprojects.core.runtime import Runtime, seed_everything
from dlprojects.core.training import TensorBatches, fit


def gathered(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The ranks' shares (uneven sizes allowed), put back together in rank order."""
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world.size)]
    dist.all_gather(sizes, torch.tensor([len(tensor)]))
    rows = int(max(sizes))
    padded = torch.zeros((rows, *tensor.shape[1:]), dtype=tensor.dtype)
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(size)] for part, size in zip(parts, sizes)])


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5))


def compare(world: World, rows: int) -> dict:
    """One training step's forward and backward, whole batch against shares."""
    inputs = torch.randn(rows, 3, 8, 8, generator=torch.Generator().manual_seed(rows))
    whole = network().train()
    torch.manual_seed(1)
    expected = whole(inputs.requires_grad_())
    expected.square().mean().backward()
    shared = shard_dropout(sync_batch_norm(network().train(), torch.device("cpu")), world)
    start, stop = bounds(rows, world)
    part = inputs.detach()[start:stop].clone().requires_grad_()
    torch.manual_seed(1)
    with global_batch(rows):
        output = shared(part)
    # this rank's part of the batch mean, as training weighs it; gradients summed over ranks
    (output.square().sum() / (rows * output.shape[1])).backward()
    for parameter in shared.parameters():
        dist.all_reduce(parameter.grad)
    def largest(a, b):
        return float((a - b).abs().max())
    return {
        "output": largest(gathered(output.detach(), world), expected.detach()),
        "input_grad": largest(gathered(part.grad, world), inputs.grad),
        "weight_grads": max(largest(a.grad, b.grad)
                            for a, b in zip(shared.parameters(), whole.parameters())),
        "running_stats": max(largest(a, b) for a, b in zip(shared.buffers(), whole.buffers())
                             if a.is_floating_point()),
        "scale": float(expected.detach().abs().max()),
    }


class Crash(Exception):
    pass


def fit_small(folder: Path, epochs: int, stop: int | None) -> None:
    world, device = init(torch.device("cpu"))
    generator = seed_everything(0)
    inputs = torch.randn(600, 8, generator=torch.Generator().manual_seed(0))
    labels = inputs[:, :3].argmax(dim=1)
    model = nn.Sequential(nn.Linear(8, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Dropout(0.2), nn.Linear(32, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def on_epoch(epoch, metrics):
        if epoch == stop:
            raise Crash(f"crash after epoch {epoch}")

    runtime = Runtime(device=device, generator=generator, epochs=epochs, amp=False, world=world)
    fit(model, runtime, optimizer=optimizer, loss_fn=nn.CrossEntropyLoss(),
        train=TensorBatches(inputs[:500], labels[:500], 50, shuffle=True),
        evals={"val": TensorBatches(inputs[500:], labels[500:], 50)},
        checkpoint=Checkpoint(folder / "checkpoint.npz", "small"), on_epoch=on_epoch,
        on_history=history_writer(folder / "history.csv"))


def main() -> None:
    if sys.argv[1] == "fit":
        fit_small(Path(sys.argv[2]), int(sys.argv[3]),
                  int(sys.argv[4]) if len(sys.argv) > 4 else None)
        return
    world, _ = init(torch.device("cpu"))
    results = {rows: compare(world, rows) for rows in (16, 7)}  # 7: shares of 4 and 3
    if world.main:
        with open(sys.argv[2], "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
