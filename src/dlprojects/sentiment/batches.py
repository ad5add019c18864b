"""Batches of stored review states for the RNN: the callable `training.fit` expects."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from dlprojects.sentiment.store import Embeddings


class ReviewBatches:
    """((states (B, L, H) fp32 zero-padded, lengths (B,)), labels (B,)) batches of the reviews
    `indices` of a store split: the callable `training.fit` expects.

    Shuffled batches are drawn from buckets of similar length (shuffle, sort each window of 32
    batches by length, shuffle the batches), so little time goes into padding.
    """

    window = 32  # batches per length-sorted window

    def __init__(self, store: Embeddings, indices: np.ndarray, batch_size: int, *,
                 device: torch.device, shuffle: bool = False):
        self.store, self.indices = store, np.asarray(indices)
        self.batch_size, self.device, self.shuffle = batch_size, device, shuffle
        self.labels = torch.from_numpy(store.labels[self.indices])

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def steps(self) -> int:
        """Batches per pass: the optimiser steps of one epoch."""
        return math.ceil(len(self) / self.batch_size)

    def _batches(self, generator: torch.Generator | None) -> list[np.ndarray]:
        if not self.shuffle:
            return [np.arange(start, min(start + self.batch_size, len(self.indices)))
                    for start in range(0, len(self.indices), self.batch_size)]
        order = torch.randperm(len(self.indices), generator=generator).numpy()
        lengths = self.store.lengths[self.indices]
        span = self.batch_size * self.window
        for start in range(0, len(order), span):
            window = order[start:start + span]
            order[start:start + span] = window[np.argsort(lengths[window], kind="stable")]
        batches = [order[start:start + self.batch_size]
                   for start in range(0, len(order), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[number] for number in shuffled]

    def __call__(self, generator: torch.Generator | None = None,
                 ) -> Iterator[tuple[tuple[Tensor, Tensor], Tensor]]:
        lengths = self.store.lengths
        for batch in self._batches(generator):
            reviews = self.indices[batch]
            batch_lengths = torch.from_numpy(lengths[reviews])
            padded = np.zeros((len(reviews), int(batch_lengths.max()), self.store.states.shape[1]),
                              dtype=np.float32)
            for row, review in enumerate(reviews):
                padded[row, :lengths[review]] = self.store.review(review)
            yield ((self._to_device(torch.from_numpy(padded)), batch_lengths),
                   self._to_device(self.labels[batch]))

    def _to_device(self, tensor: Tensor) -> Tensor:
        """Host to device; to a GPU through pinned memory, without waiting for the copy."""
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)
