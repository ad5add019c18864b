"""How often the training loop makes the host wait for the device, per epoch and per step.

Trains the FashionMNIST `improved` network (train_fashion params) for one epoch on the first
`--samples` training images at two batch sizes, counting the synchronising tensor calls
(`HostSyncs`: reading a tensor's value into Python, `.item()`, `bool()`, `.tolist()`..., copying
it to host memory, `.cpu()`, `.numpy()`, or asking for a data-dependent shape, `nonzero`; on CUDA
each stalls the queue of kernels, on the CPU they cost nothing, which is why this counts them on
any device) and the CPU seconds per step. A loop that never waits inside its batch
loop makes the same number of calls per epoch at any batch size.

    python benchmarks/host_syncs.py --samples 20000
    PYTHONPATH=<older checkout>/src python benchmarks/host_syncs.py   # the loop before
"""

import dlprojects  # noqa: F401  first: pins the CPU numerics

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dlprojects.core.config import load_section
from dlprojects.core.data.images import load_image_splits
from dlprojects.core.resume import Checkpoint
from dlprojects.core.runtime import Runtime, seed_everything, set_threads
from dlprojects.core.training import TensorBatches, fit
from dlprojects.fashion.model import DenseClassifier

TORCH = os.path.dirname(torch.__file__) + os.sep

SYNCHRONISING = frozenset({"item", "__bool__", "__float__", "__int__", "__index__", "tolist",
                           "cpu", "numpy", "nonzero", "masked_select", "unique"})


class HostSyncs(TorchFunctionMode):
    """While active: `counts`, the synchronising tensor calls made, by name, outside PyTorch's own
    code (its optimisers read their step counters, which stay in host memory, with `.item()`)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCHRONISING and not sys._getframe(1).f_code.co_filename.startswith(TORCH):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def one_epoch(splits, batch_size: int, samples: int) -> tuple[HostSyncs, int, float]:
    params = load_section("train_fashion")
    device = torch.device("cpu")
    train = TensorBatches.of_images(splits.train_images[:samples], splits.train_labels[:samples],
                                    "fashion_mnist", device, batch_size, shuffle=True)
    val = TensorBatches.of_images(splits.val_images, splits.val_labels, "fashion_mnist", device,
                                  batch_size)
    model = DenseClassifier(**dataclasses.asdict(params.variant("improved")))
    runtime = Runtime(device=device, generator=seed_everything(0), epochs=1, amp=False)
    with tempfile.TemporaryDirectory() as folder, HostSyncs() as syncs:
        started = time.process_time()
        fit(model, runtime, optimizer=torch.optim.AdamW(model.parameters(), lr=params.lr),
            loss_fn=nn.CrossEntropyLoss(), train=train, evals={"val": val},
            checkpoint=Checkpoint(Path(folder) / "c.npz", "benchmark"))
        seconds = time.process_time() - started
    return syncs, train.steps, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--data", type=Path, default=Path("data/raw/fashion_mnist"))
    args = parser.parse_args()
    set_threads(1)
    splits = load_image_splits("fashion_mnist", args.data, validation_size=5000, seed=0,
                               train_samples=0, test_samples=0)
    print("| batch | steps | synchronising calls per epoch | per step | CPU ms per step |")
    print("|---:|---:|---|---:|---:|")
    for batch_size in (256, 64):
        syncs, steps, seconds = one_epoch(splits, batch_size, args.samples)
        names = ", ".join(f"{name} {count}" for name, count in sorted(syncs.counts.items()))
        print(f"| {batch_size} | {steps} | {syncs.total} ({names}) | {syncs.total / steps:.2f} "
              f"| {1000 * seconds / steps:.2f} |")


if __name__ == "__main__":
    main()
