"""Run by `torchrun --nproc-per-node 2` from test_distributed: each rank computes its share with
the distributed layers, and rank 0 writes what the one-process layers give on the whole batch
beside what the ranks gave together, for the test to compare."""

import dlprojects  # noqa: F401  first: pins the CPU numerics

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

from dlprojects.distributed import World, bounds, global_batch, init
from dlprojects.distributed.layers import shard_dropout, sync_batch_norm


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


def main() -> None:
    world, _ = init(torch.device("cpu"))
    results = {rows: compare(world, rows) for rows in (16, 7)}  # 7: shares of 4 and 3
    if world.main:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
