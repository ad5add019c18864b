"""Where a stage computes: the device, CPU threads and seeds, set up once at its start.

The CPU kernels themselves are pinned earlier, when the package is imported (`numerics`).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from dlprojects.errors import UserError


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


@dataclass(frozen=True)
class Runtime:
    """What a training stage sets up before anything else (params section `loop`)."""

    device: torch.device
    generator: torch.Generator  # orders the training batches; saved in checkpoints
    epochs: int
    amp: bool  # bf16 autocast on CUDA


def start(loop) -> Runtime:
    """Threads, device and seeds from a `LoopParams`, in that order."""
    set_threads(loop.threads)
    device = select_device(loop.device)
    generator = seed_everything(loop.seed, deterministic=loop.deterministic)
    return Runtime(device=device, generator=generator, epochs=loop.epochs, amp=loop.amp)
