"""Counting the calls that make the host wait for the device: reading a tensor's value into
Python (`.item()`, `bool()`, `float()`, `.tolist()`, ...), copying it to host memory (`.cpu()`,
`.numpy()`) or asking for a data-dependent shape (`nonzero`). On CUDA each one stalls the queue
of kernels; on the CPU they cost nothing, which is why they go unnoticed until a GPU run, and why
this counts them on any device. Counted: the calls made outside PyTorch's own code (its
optimisers read their step counters, which stay in host memory, with `.item()`).

    with HostSyncs() as syncs:
        fit(...)
    print(syncs.counts)
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

TORCH = os.path.dirname(torch.__file__) + os.sep

SYNCHRONISING = frozenset({"item", "__bool__", "__float__", "__int__", "__index__", "tolist",
                           "cpu", "numpy", "nonzero", "masked_select", "unique"})


class HostSyncs(TorchFunctionMode):
    """While active: `counts`, the synchronising tensor calls made, by name."""

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
