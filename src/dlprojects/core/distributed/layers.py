"""The layers whose work spans the batch, made to span every rank's share of it: dropout masks
drawn for the global batch, batch norm statistics summed over ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dlprojects.core.distributed import World, bounds, global_rows


def shard_dropout(model: nn.Module, world: World) -> nn.Module:
    """Replace `model`'s nn.Dropout layers by `ShardedDropout`, in place."""
    for name, child in list(model.named_children()):
        if type(child) is nn.Dropout:
            setattr(model, name, ShardedDropout(child.p, world))
        else:
            shard_dropout(child, world)
    return model


class ShardedDropout(nn.Dropout):
    """Dropout whose mask is drawn for the whole global batch, as one process draws it (every rank
    holds the same random state), and cut to this rank's share: the ranks' masks neither repeat
    each other nor differ from a one-process run's."""

    def __init__(self, p: float, world: World):
        super().__init__(p)
        self.world = world

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        rows = global_rows()
        if not self.training or self.p == 0 or rows is None:
            return super().forward(input)
        noise = torch.empty((rows, *input.shape[1:]), dtype=input.dtype, device=input.device)
        noise.bernoulli_(1 - self.p).div_(1 - self.p)  # what F.dropout computes on the CPU
        start, stop = bounds(rows, self.world)
        return input * noise[start:stop]


# ------------------------------------------------------------------------- batch norm over ranks


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm layers of `model` normalise with statistics over every rank's share of the batch,
    in place (the same parameters and buffers, so optimisers and state_dict keys are unchanged):
    PyTorch's SyncBatchNorm on CUDA, `DistributedBatchNorm` on the CPU (which SyncBatchNorm
    refuses)."""
    for name, child in list(model.named_children()):
        if isinstance(child, _BatchNorm) and not isinstance(child, (nn.SyncBatchNorm,
                                                                    DistributedBatchNorm)):
            synced = (nn.SyncBatchNorm if device.type == "cuda" else DistributedBatchNorm)(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats)
            synced.weight, synced.bias = child.weight, child.bias
            synced.running_mean, synced.running_var = child.running_mean, child.running_var
            synced.num_batches_tracked = child.num_batches_tracked
            synced.train(child.training)
            setattr(model, name, synced)
        else:
            sync_batch_norm(child, device)
    return model


class DistributedBatchNorm(_BatchNorm):
    """Batch norm over the whole global batch on the CPU: per-channel count, sum and sum of squares
    are summed over ranks (float64) forward, the two gradient sums backward."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        momentum = self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # a cumulative average, as BatchNorm keeps it
                momentum = 1.0 / float(self.num_batches_tracked)
        return _SyncedNorm.apply(input, self.weight, self.bias, self.running_mean,
                                 self.running_var, self.eps, momentum)


def _channels_last(input: torch.Tensor) -> torch.Tensor:
    """(N, C, *) -> (M, C): one row per value of each channel."""
    return input.transpose(0, 1).reshape(input.shape[1], -1).t()


def _per_channel(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(1, -1, *[1] * (like.dim() - 2))


class _SyncedNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum):
        rows = _channels_last(input).double()
        stats = torch.cat([rows.sum(0), (rows * rows).sum(0),
                           torch.tensor([float(len(rows))], dtype=torch.float64)])
        dist.all_reduce(stats)
        channels = input.shape[1]
        total, squares, count = stats[:channels], stats[channels:-1], stats[-1]
        mean = total / count
        variance = (squares / count - mean * mean).clamp_min(0)
        invstd = (variance + eps).rsqrt()
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                unbiased = variance * count / (count - 1).clamp_min(1)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        normalised = (input - _per_channel(mean, input).to(input.dtype)) \
            * _per_channel(invstd, input).to(input.dtype)
        ctx.save_for_backward(normalised, weight, invstd.to(input.dtype), count)
        if weight is None:
            return normalised
        return normalised * _per_channel(weight, input) + _per_channel(bias, input)

    @staticmethod
    def backward(ctx, grad_output):
        normalised, weight, invstd, count = ctx.saved_tensors
        grad_rows, normal_rows = _channels_last(grad_output), _channels_last(normalised)
        grad_sum, grad_dot = grad_rows.sum(0), (grad_rows * normal_rows).sum(0)  # this rank's
        sums = torch.cat([grad_sum, grad_dot]).double()
        dist.all_reduce(sums)
        channels = grad_output.shape[1]
        mean_grad = (sums[:channels] / count).to(grad_output.dtype)
        mean_dot = (sums[channels:] / count).to(grad_output.dtype)
        scale = invstd if weight is None else invstd * weight
        grad_input = (grad_output - _per_channel(mean_grad, grad_output)
                      - normalised * _per_channel(mean_dot, grad_output)) \
            * _per_channel(scale, grad_output)
        grad_weight = grad_dot if weight is not None else None
        grad_bias = grad_sum if weight is not None else None
        return grad_input, grad_weight, grad_bias, None, None, None, None
