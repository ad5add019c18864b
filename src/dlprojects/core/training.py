"""The torch training loop every model shares: bf16 autocast, progress, the history contract
(`dlprojects.core.history`), a checkpoint each epoch and resume from it; the learning-rate schedules
and parameter groups the recipes use.

Read top to bottom: batching, `predict` and `evaluate`, then `fit`, which trains epoch by epoch,
evaluates each named split and keeps the best epoch's weights by `select`.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dlprojects.core import loop_state
from dlprojects.core.data.images import normalised_tensor
from dlprojects.core.distributed import World, all_sum, global_batch, parallel, share
from dlprojects.core.history import FitResult
from dlprojects.core.progress import Progress, check_finite
from dlprojects.core.resume import Checkpoint
from dlprojects.core.runtime import Runtime

Batch = tuple[Any, torch.Tensor]  # (inputs: a tensor or a tuple of them, class-index targets)


# --------------------------------------------------------------------------------------- batching


class TensorBatches:
    """Minibatches by indexing tensors already on the device: no per-sample Python loop."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, *,
                 shuffle: bool = False,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment

    @classmethod
    def of_images(cls, images: np.ndarray, labels: np.ndarray, dataset: str, device: torch.device,
                  batch_size: int, **kwargs: Any) -> TensorBatches:
        """Batches of uint8 `images` standardised as `dataset`'s training set, on `device`."""
        return cls(normalised_tensor(images, dataset, device),
                   torch.from_numpy(labels).to(device), batch_size, **kwargs)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def steps(self) -> int:
        """Batches per pass: the optimiser steps of one epoch."""
        return math.ceil(len(self) / self.batch_size)

    def __call__(self, generator: torch.Generator | None = None) -> Iterator[Batch]:
        count = len(self.targets)
        if self.shuffle:
            order = torch.randperm(count, generator=generator).to(self.targets.device)
        else:
            order = torch.arange(count, device=self.targets.device)
        for start in range(0, count, self.batch_size):
            index = order[start:start + self.batch_size]
            inputs = self.inputs[index]
            if self.augment is not None:
                inputs = self.augment(inputs, generator)
            yield inputs, self.targets[index]


# ---------------------------------------------------------------------------- predict and evaluate


def _forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)


def _autocast(device: torch.device, amp: bool):
    """bf16 autocast when `amp` (`runtime.start` sets it on CUDA only; on the CPU it is how
    tests run the CUDA path)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp)


@torch.inference_mode()
def predict(model: nn.Module, batches: Iterable[Batch], device: torch.device,
            amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (N, C) and targets (N,) of every batch, on the CPU (copied once, at
    the end: the loop never waits for the device)."""
    model.eval()
    probabilities, targets = [], []
    for inputs, target in batches:
        with _autocast(device, amp):
            logits = _forward(model, inputs)
        probabilities.append(logits.float().softmax(dim=-1))
        targets.append(target)
    return torch.cat(probabilities).cpu(), torch.cat(targets).cpu()


class Totals:
    """Sums of a pass kept on the device (loss in float64, as Python floats summed it), read once
    at its end, after adding them up over ranks: the batch loop never waits for the device."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """`loss`: the mean over this batch's `targets`."""
        self.loss += loss.detach().double() * len(targets)
        self.correct += (logits.argmax(dim=-1) == targets).sum()
        self.count += len(targets)

    def read(self, world: World) -> tuple[float, float, int]:
        """(mean loss, accuracy, count) over every rank's share."""
        sums = torch.stack([self.loss, self.correct.double(),
                            torch.tensor(float(self.count), dtype=torch.float64,
                                         device=self.loss.device)])
        loss, correct, count = all_sum(sums, world).tolist()
        return loss / count, correct / count, int(count)


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable[Batch], loss_fn: Callable, device: torch.device,
             amp: bool = False, world: World = World()) -> dict[str, float]:
    """Mean loss and accuracy over `batches`; with several ranks each takes its share of every
    batch and the sums are added up over ranks."""
    model.eval()
    totals = Totals(device)
    for batch in batches:
        inputs, targets = share(batch, world)
        with _autocast(device, amp):
            logits = _forward(model, inputs)
        totals.add(loss_fn(logits.float(), targets), logits, targets)
    loss, accuracy, _ = totals.read(world)
    return {"loss": loss, "accuracy": accuracy}


# ------------------------------------------------------------------ schedules and parameter groups


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LambdaLR factor per step: linear from 1/warmup_steps up to 1, then cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def decay_groups(model: nn.Module, weight_decay: float,
                 no_decay: tuple[str, ...] = ()) -> list[dict]:
    """AdamW groups that decay the weight matrices and kernels only: not biases and norm weights
    (1-D tensors), nor the parameters named in `no_decay`."""
    decay, plain = [], []
    for name, parameter in model.named_parameters():
        plain_one = parameter.ndim < 2 or name.split(".")[-1] in no_decay
        (plain if plain_one else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": plain, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------------- fit


def fit(model: nn.Module, runtime: Runtime, *, optimizer: torch.optim.Optimizer,
        loss_fn: Callable, train: TensorBatches | Any,
        evals: dict[str, Callable[[], Iterable[Batch]]], checkpoint: Checkpoint,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        select: str = "val_accuracy", patience: int | None = None,
        eval_loss_fn: Callable | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        on_history: Callable[[list[dict[str, float]]], None] | None = None) -> FitResult:
    """Train for `runtime.epochs`, resuming from `checkpoint` when it holds this run's state.

    `train(generator)` yields the shuffled batches of an epoch (`train.steps` of them). `scheduler`
    steps once per batch. After each epoch every split in `evals` is evaluated; the weights of the
    epoch with the highest `select` metric are kept. `patience`: stop after that many epochs
    without improvement. `on_epoch` and `on_history` as `dlprojects.core.history` describes. The
    checkpoint stays when training completes: the caller removes it once its results are safe.

    With several ranks (`runtime.world`), every rank runs this with the same batches and takes its
    share of each (`distributed`); rank 0 alone writes the checkpoint and calls `on_epoch` and
    `on_history`. The state saved is the same at any world size, so a run may resume on another.
    """
    world = runtime.world
    progress = _resume(checkpoint, model, optimizer, scheduler, runtime, select)
    network = parallel(model, world, runtime.device)
    epoch_of = functools.partial(_epoch, network, model, runtime, train=train, evals=evals,
                                 optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
                                 eval_loss_fn=eval_loss_fn or loss_fn)
    while progress.next_epoch <= runtime.epochs:
        if progress.stalled(patience):
            if world.main:
                print(f"early stop: no {select} gain for {patience} epochs", file=sys.stderr)
            break
        metrics = epoch_of(progress.next_epoch)
        progress.add(metrics, lambda: {k: v.detach().cpu().clone()
                                       for k, v in model.state_dict().items()})
        if world.main:
            _report(progress, metrics, on_epoch, on_history)
            loop_state.save(checkpoint, model, optimizer, scheduler, runtime.generator, progress)
    if on_history is not None and world.main:  # also when a completed checkpoint was all there was
        on_history(progress.history)
    model.load_state_dict(progress.best_state)
    return progress.result()


def _resume(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler | None, runtime: Runtime,
            select: str) -> Progress:
    """The progress saved in `checkpoint`, its state put back; a fresh one when there is none."""
    state = loop_state.load(checkpoint, runtime.world, runtime.device)
    if state is None:
        return Progress(select)
    progress = loop_state.restore(state, model, optimizer, scheduler, runtime.generator, select)
    if runtime.world.main:
        print(f"resuming from {checkpoint.path} after epoch {len(progress.history)}",
              file=sys.stderr)
    return progress


def _report(progress: Progress, metrics: dict[str, float], on_epoch: Callable | None,
            on_history: Callable | None) -> None:
    """The epoch's callbacks, then its summary line."""
    if on_history is not None:
        on_history(progress.history)
    if on_epoch is not None:
        on_epoch(int(metrics["epoch"]), metrics)
    print(_summary(metrics), file=sys.stderr, flush=True)


def _epoch(network: nn.Module, model: nn.Module, runtime: Runtime, epoch: int, *, train: Any,
           evals: dict[str, Callable[[], Iterable[Batch]]], optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LRScheduler | None, loss_fn: Callable,
           eval_loss_fn: Callable) -> dict[str, float]:
    """Train one epoch, then evaluate each split: the epoch's row of the history."""
    started = time.perf_counter()
    metrics, seen = _train_epoch(network, train, optimizer, scheduler, loss_fn, runtime, epoch)
    seconds = time.perf_counter() - started
    metrics = {"epoch": epoch, **metrics}
    for name, batches in evals.items():
        figures = evaluate(model, batches(), eval_loss_fn, runtime.device, runtime.amp,
                           runtime.world)
        metrics |= {f"{name}_{key}": value for key, value in figures.items()}
    return metrics | {"lr": optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
                      "samples_per_second": seen / seconds}


def _train_epoch(network: nn.Module, train: Any, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, loss_fn: Callable,
                 runtime: Runtime, epoch: int) -> tuple[dict[str, float], int]:
    """One pass over `train`: ({train_loss, train_accuracy} averaged over it, samples seen).

    Nothing in the batch loop waits for the device: the sums stay there until the epoch ends,
    and a loss that is no longer finite is caught then. With several ranks each weighs its mean
    loss by its share of the batch, so the gradients DDP averages are those of the batch mean."""
    world = runtime.world
    network.train()
    totals = Totals(runtime.device)
    bar = tqdm(train(runtime.generator), total=train.steps, desc=f"epoch {epoch}/{runtime.epochs}",
               leave=False, disable=None if world.main else True, file=sys.stderr)
    for batch in bar:
        inputs, targets = share(batch, world)
        with _autocast(runtime.device, runtime.amp), global_batch(len(batch[1])):
            logits = _forward(network, inputs)
            loss = loss_fn(logits.float(), targets)
        objective = loss
        if world.size > 1:  # this rank's part of the batch mean (DDP divides by the ranks)
            objective = (loss * (len(targets) * world.size / len(batch[1])) if len(targets)
                         else logits.sum() * 0.0)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if len(targets):
            totals.add(loss, logits, targets)
    loss, accuracy, seen = totals.read(world)
    check_finite(loss, f"in epoch {epoch}")
    return {"train_loss": loss, "train_accuracy": accuracy}, seen


def _summary(metrics: dict[str, float]) -> str:
    shown = {k: v for k, v in metrics.items() if k.endswith(("loss", "accuracy"))}
    parts = [f"{k} {v:.4f}" for k, v in shown.items()]
    return (f"epoch {metrics['epoch']}: " + ", ".join(parts) +
            f", {metrics['samples_per_second']:.0f} samples/s")
