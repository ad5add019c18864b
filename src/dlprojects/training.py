"""The torch training loop every model shares: bf16 autocast, progress, the history contract
(`dlprojects.history`), a checkpoint each epoch and resume from it; the learning-rate schedules
and parameter groups the recipes use.

Read top to bottom: batching, `predict` and `evaluate`, then `fit`, which trains epoch by epoch,
evaluates each named split and keeps the best epoch's weights by `select`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dlprojects.data.images import normalised_tensor
from dlprojects.errors import UserError
from dlprojects.history import FitResult
from dlprojects.resume import Checkpoint
from dlprojects.runtime import Runtime

Batch = tuple[Any, torch.Tensor]  # (inputs: a tensor or a tuple of them, class-index targets)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------------------- batching


class TensorBatches:
    """Minibatches by indexing tensors already on the device: no per-sample Python loop."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, *,
                 shuffle: bool = False, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
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
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=amp and device.type == "cuda")


@torch.inference_mode()
def predict(model: nn.Module, batches: Iterable[Batch], device: torch.device,
            amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (N, C) and targets (N,) of every batch, on the CPU."""
    model.eval()
    probabilities, targets = [], []
    for inputs, target in batches:
        with _autocast(device, amp):
            logits = _forward(model, inputs)
        probabilities.append(logits.float().softmax(dim=-1).cpu())
        targets.append(target.cpu())
    return torch.cat(probabilities), torch.cat(targets)


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable[Batch], loss_fn: Callable, device: torch.device,
             amp: bool = True) -> dict[str, float]:
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for inputs, targets in batches:
        with _autocast(device, amp):
            logits = _forward(model, inputs)
        total_loss += loss_fn(logits.float(), targets).item() * len(targets)
        correct += (logits.argmax(dim=-1) == targets).sum().item()
        count += len(targets)
    return {"loss": total_loss / count, "accuracy": correct / count}


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
        (plain if parameter.ndim < 2 or name.split(".")[-1] in no_decay else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": plain, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------------- fit


def fit(model: nn.Module, runtime: Runtime, *, optimizer: torch.optim.Optimizer,
        loss_fn: Callable, train: TensorBatches | Any, evals: dict[str, Callable[[], Iterable[Batch]]],
        checkpoint: Checkpoint, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        select: str = "val_accuracy", patience: int | None = None,
        eval_loss_fn: Callable | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        on_history: Callable[[list[dict[str, float]]], None] | None = None) -> FitResult:
    """Train for `runtime.epochs`, resuming from `checkpoint` when it holds this run's state.

    `train(generator)` yields the shuffled batches of an epoch (`train.steps` of them). `scheduler`
    steps once per batch. After each epoch every split in `evals` is evaluated; the weights of the
    epoch with the highest `select` metric are kept. `patience`: stop after that many epochs
    without improvement. `on_epoch` and `on_history` as `dlprojects.history` describes. The last
    checkpoint stays when training completes, so a failure in what follows (saving, tracking)
    loses nothing: the caller removes it once its results are safe (`tracking.start_run` does).
    """
    eval_loss_fn = eval_loss_fn or loss_fn
    device, generator, epochs, amp = runtime.device, runtime.generator, runtime.epochs, runtime.amp
    state = _load_checkpoint(checkpoint)
    history: list[dict[str, float]] = []
    best_state, best_epoch, best_score = None, 0, -math.inf
    if state is not None:
        _restore(state, model, optimizer, scheduler, generator)
        history, best_state = state["history"], state["best_state"]
        best_epoch, best_score = state["best_epoch"], state["best_score"]
        print(f"resuming from {checkpoint.path} after epoch {len(history)}", file=sys.stderr)

    for epoch in range(len(history) + 1, epochs + 1):
        if patience is not None and epoch - best_epoch > patience and best_epoch > 0:
            print(f"early stop: no {select} gain for {patience} epochs", file=sys.stderr)
            break
        started = time.perf_counter()
        metrics, seen = _train_epoch(model, train, optimizer, scheduler, loss_fn, runtime, epoch)
        seconds = time.perf_counter() - started
        metrics = {"epoch": epoch, **metrics}
        for name, batches in evals.items():
            for key, value in evaluate(model, batches(), eval_loss_fn, device, amp).items():
                metrics[f"{name}_{key}"] = value
        metrics |= {"lr": optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
                    "samples_per_second": seen / seconds}
        history.append(metrics)
        if metrics[select] > best_score:
            best_score, best_epoch = metrics[select], epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        print(_summary(metrics), file=sys.stderr, flush=True)
        if on_history is not None:
            on_history(history)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        _save_checkpoint(checkpoint.path, {
            "fingerprint": checkpoint.fingerprint, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "rng": torch.get_rng_state(), "generator": generator.get_state(), "history": history,
            "best_state": best_state, "best_epoch": best_epoch, "best_score": best_score})

    if on_history is not None:  # also when a completed checkpoint was all there was
        on_history(history)
    model.load_state_dict(best_state)
    return FitResult(history=history, best_epoch=best_epoch)


def _train_epoch(model: nn.Module, train: Any, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, loss_fn: Callable,
                 runtime: Runtime, epoch: int) -> tuple[dict[str, float], int]:
    """One pass over `train`: ({train_loss, train_accuracy} averaged over it, samples seen)."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(train(runtime.generator), total=train.steps, desc=f"epoch {epoch}/{runtime.epochs}",
               leave=False, disable=None, file=sys.stderr)
    for inputs, targets in bar:
        with _autocast(runtime.device, runtime.amp):
            logits = _forward(model, inputs)
            loss = loss_fn(logits.float(), targets)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss.item()} in epoch {epoch}; "
                                   f"lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(dim=-1) == targets).sum().item()
        seen += len(targets)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}")
    return {"train_loss": total_loss / seen, "train_accuracy": correct / seen}, seen


def _restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None,
             generator: torch.Generator) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    generator.set_state(state["generator"])


def _summary(metrics: dict[str, float]) -> str:
    shown = {k: v for k, v in metrics.items() if k.endswith(("loss", "accuracy"))}
    parts = [f"{k} {v:.4f}" for k, v in shown.items()]
    return (f"epoch {metrics['epoch']}: " + ", ".join(parts) +
            f", {metrics['samples_per_second']:.0f} samples/s")


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write then rename, so a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def _load_checkpoint(checkpoint: Checkpoint) -> dict[str, Any] | None:
    path = checkpoint.path
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != checkpoint.fingerprint:
        print(f"ignoring {path}: it was written with other params; starting afresh",
              file=sys.stderr)
        return None
    return state
