"""Where a stage computes: the device, CPU threads and seeds, set up once at its start.

The CPU kernels themselves are pinned earlier, when the package is imported (`numerics`).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from dlprojects.core import distributed
from dlprojects.numerics import gemm
from dlprojects.core.errors import UserError


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
    """Pin torch and BLAS threads (unpinned BLAS threads oversubscribe a small CPU). With portable
    numerics torch's matrix products cut themselves into `threads` single-threaded OpenBLAS
    calls (`numerics.gemm`), so OpenBLAS's own pool stays at one thread."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    if gemm.routed():
        threadpool_limits(1, user_api="blas")


def autocast_on(device: torch.device, amp: bool) -> bool:
    """Whether param `amp` means bf16 autocast on `device`: on CUDA only (the CPU stays fp32)."""
    return amp and device.type == "cuda"


def launch_processes() -> None:
    """Run this stage as the processes param `distributed.processes` asks for (see
    `dlprojects.core.distributed`); returns in the process that is to compute."""
    from dlprojects.core.config import load_section
    from dlprojects.core.distributed.launch import launch

    launch(load_section("distributed").processes)


def start_processes(threads: int, device_name: str) -> tuple[distributed.World, torch.device]:
    """Launch, threads, device and process group: (this rank's place, its device). Each of the
    ranks on a node gets its share of `threads`."""
    launch_processes()
    world = distributed.World.from_environment()
    set_threads(max(1, threads // world.local_size))
    return distributed.init(select_device(device_name))


@dataclass(frozen=True)
class Runtime:
    """What a training stage sets up before anything else (params section `loop`)."""

    device: torch.device
    generator: torch.Generator  # orders the training batches; saved in checkpoints
    epochs: int
    amp: bool  # bf16 autocast (`autocast_on`: CUDA only, unless a test asks for it on the CPU)
    world: distributed.World = distributed.World()  # this rank among the processes


def start(loop) -> Runtime:
    """Processes, threads, device and seeds from a `LoopParams`, in that order."""
    world, device = start_processes(loop.threads, loop.device)
    generator = seed_everything(loop.seed, deterministic=loop.deterministic)
    return Runtime(device=device, generator=generator, epochs=loop.epochs,
                   amp=autocast_on(device, loop.amp), world=world)
