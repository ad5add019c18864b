"""The torch training loop every model shares: device, seeding, bf16 autocast, progress, history,
a checkpoint each epoch and resume from it.

Read top to bottom: batching, device and seeding, then `fit`, which trains epoch by epoch, evaluates
each named split, keeps the best epoch's weights by `select` and writes `history.csv` as it goes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dlprojects.errors import UserError

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

    def __len__(self) -> int:
        return len(self.targets)

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


# -------------------------------------------------------------------------------- device and seeds


def select_device(name: str) -> torch.device:
    """"auto": CUDA when present, else the CPU; "cuda" without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device is 'cuda' but no CUDA GPU is visible; set device: auto or cpu")
    return torch.device(name)


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch; returns the generator that orders the training batches.

    On the CPU the same seed and thread count already give the same bytes. `deterministic` makes
    CUDA do so too: deterministic cuBLAS/cuDNN kernels, no autotuning, and an error from any op
    that has no deterministic version, at some cost in speed."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(threads: int) -> None:
    """Pin torch and BLAS threads (unpinned BLAS threads oversubscribe a small CPU)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def fingerprint(*objects: Any) -> str:
    """A short hash of the resolved params, stored in checkpoints so others are never resumed."""
    text = json.dumps(objects, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_state: dict[str, torch.Tensor] = field(repr=False)


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


def fit(model: nn.Module, *, optimizer: torch.optim.Optimizer, loss_fn: Callable,
        train: Callable[[torch.Generator], Iterable[Batch]], train_size: int,
        evals: dict[str, Callable[[], Iterable[Batch]]], epochs: int, device: torch.device,
        generator: torch.Generator, checkpoint: Path, history_file: Path, run_fingerprint: str,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, amp: bool = True,
        select: str = "val_accuracy", patience: int | None = None,
        eval_loss_fn: Callable | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train for `epochs`, resuming from `checkpoint` when it holds this run's state.

    `scheduler` steps once per batch. After each epoch every split in `evals` is evaluated; the
    weights of the epoch with the highest `select` metric are kept. `patience`: stop after that
    many epochs without improvement. The last checkpoint stays when training completes, so a
    failure in what follows (saving, tracking) loses nothing: the caller removes it once its
    results are safe (`tracking.start_run` does).
    """
    eval_loss_fn = eval_loss_fn or loss_fn
    state = _load_checkpoint(checkpoint, run_fingerprint)
    history: list[dict[str, float]] = []
    best_state, best_epoch, best_score = None, 0, -math.inf
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        generator.set_state(state["generator"])
        history, best_state = state["history"], state["best_state"]
        best_epoch, best_score = state["best_epoch"], state["best_score"]
        print(f"resuming from {checkpoint} after epoch {len(history)}", file=sys.stderr)

    for epoch in range(len(history) + 1, epochs + 1):
        if patience is not None and epoch - best_epoch > patience and best_epoch > 0:
            print(f"early stop: no {select} gain for {patience} epochs", file=sys.stderr)
            break
        model.train()
        started = time.perf_counter()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(train(generator), total=math.ceil(train_size / _batch_size(train)),
                   desc=f"epoch {epoch}/{epochs}", leave=False, disable=None, file=sys.stderr)
        for inputs, targets in bar:
            with _autocast(device, amp):
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
        seconds = time.perf_counter() - started
        metrics = {"epoch": epoch, "train_loss": total_loss / seen, "train_accuracy": correct / seen}
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
        write_history(history, history_file)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        _save_checkpoint(checkpoint, {
            "fingerprint": run_fingerprint, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "rng": torch.get_rng_state(), "generator": generator.get_state(), "history": history,
            "best_state": best_state, "best_epoch": best_epoch, "best_score": best_score})

    write_history(history, history_file)  # also when a completed checkpoint was all there was
    model.load_state_dict(best_state)
    return FitResult(history=history, best_epoch=best_epoch, best_state=best_state)


def _batch_size(train: Any) -> int:
    return getattr(train, "batch_size", 1)


def _summary(metrics: dict[str, float]) -> str:
    shown = {k: v for k, v in metrics.items() if k.endswith(("loss", "accuracy"))}
    parts = [f"{k} {v:.4f}" for k, v in shown.items()]
    return (f"epoch {metrics['epoch']}: " + ", ".join(parts) +
            f", {metrics['samples_per_second']:.0f} samples/s")


TIMINGS = ("epoch_seconds", "samples_per_second")  # MLflow metrics, not history.csv columns


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """history.csv, one row per epoch: a DVC plot file and the source of the loss-curve figures.

    Timings vary from run to run, so they stay out of it (they are in MLflow): the same params and
    seed write the same file, and `dvc repro --force` leaves dvc.lock as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in history[0] if k not in TIMINGS],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    os.replace(temporary, path)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write then rename, so a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def _load_checkpoint(path: Path, run_fingerprint: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != run_fingerprint:
        print(f"ignoring {path}: it was written with other params; starting afresh",
              file=sys.stderr)
        return None
    return state
