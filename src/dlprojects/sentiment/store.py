"""The embedding store of the `embed_imdb` stage: frozen-BERT states of each review's real tokens.

The store is one folder (the `embed_imdb` stage's out) holding, for each split:

    <split>_states.npy   (T, H) float16   hidden state of every real token, reviews concatenated
    <split>_offsets.npy  (N + 1,) int64   review i is states[offsets[i]:offsets[i + 1]]
    <split>_labels.npy   (N,) int64       1 = positive
    <split>_rows.npy     (N,) int64       the review's line in data/raw/imdb/<split>.jsonl

and `meta.json` (the BERT, max_length, truncation, sizes). No padding is stored, and `.npy` loads
without pickle (`allow_pickle=False`) and memory-maps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dlprojects.core.distributed import World
from dlprojects.core.errors import UserError
from dlprojects.core.files import atomic_folder, write_atomic
from dlprojects.sentiment.bert import (bert_identity, embed, encode, load_bert, read_bert_config,
                                       trim_to_layers)
from dlprojects.sentiment.reviews import balanced_subset, read_reviews


@dataclass
class Embeddings:
    """One split of the store: fp16 token states (T, H) concatenated over reviews, with offsets."""

    states: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def review(self, index: int) -> np.ndarray:
        """(length, H) states of review `index`."""
        return self.states[self.offsets[index]:self.offsets[index + 1]]


def create_split(folder: Path, split: str, lengths: np.ndarray, hidden_size: int,
                 labels: np.ndarray, rows: np.ndarray) -> Embeddings:
    """An empty split on disk, sized by the token count of each review; fill `states` in place
    (a writable memory map, so the full-size store never has to fit in memory)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    np.save(folder / f"{split}_offsets.npy", offsets)
    np.save(folder / f"{split}_labels.npy", np.asarray(labels, dtype=np.int64))
    np.save(folder / f"{split}_rows.npy", np.asarray(rows, dtype=np.int64))
    states = np.lib.format.open_memmap(folder / f"{split}_states.npy", mode="w+",
                                       dtype=np.float16, shape=(int(offsets[-1]), hidden_size))
    return Embeddings(states, offsets, np.asarray(labels), np.asarray(rows))


def load_split(folder: Path, split: str) -> Embeddings:
    """A split of the store, read into memory."""
    folder = Path(folder)
    if not (folder / f"{split}_states.npy").exists():
        raise UserError(f"{folder / f'{split}_states.npy'} not found; run `dvc repro embed_imdb`")
    states = np.load(folder / f"{split}_states.npy")
    return Embeddings(states, np.load(folder / f"{split}_offsets.npy"),
                      np.load(folder / f"{split}_labels.npy"),
                      np.load(folder / f"{split}_rows.npy"))


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    write_atomic(Path(folder) / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise UserError(f"{path} not found; run `dvc repro embed_imdb`")
    return json.loads(path.read_text())


def store_bytes(folder: Path) -> int:
    """Bytes on disk of the store (what DVC caches)."""
    return sum(path.stat().st_size for path in Path(folder).iterdir() if path.is_file())


def gather_batches(batches: Iterator[tuple[np.ndarray, list[np.ndarray]]], world: World, *,
                   hidden_size: int, device: torch.device,
                   ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """The batches `embed` yields on every rank, all on rank 0 (the others get none): one
    all_gather per round of `world.size` batches, each padded to the round's largest."""
    if world.size == 1:
        yield from batches
        return
    batches = iter(batches)
    while True:
        index, states = next(batches, (np.zeros(0, dtype=np.int64), []))
        shape = torch.tensor([len(index), max((len(s) for s in states), default=0)],
                             device=device)
        shapes = [torch.empty_like(shape) for _ in range(world.size)]
        dist.all_gather(shapes, shape)
        rows, width = (int(value) for value in torch.stack(shapes).amax(0))
        if rows == 0:
            return
        lengths = torch.zeros(rows, dtype=torch.int64)
        lengths[:len(index)] = torch.tensor([len(s) for s in states], dtype=torch.int64)
        padded = torch.zeros((rows, width, hidden_size), dtype=torch.float16)
        for row, review_states in enumerate(states):
            padded[row, :len(review_states)] = torch.from_numpy(review_states)
        local = torch.cat([torch.from_numpy(np.asarray(index, dtype=np.int64)),
                           torch.full((rows - len(index),), -1, dtype=torch.int64), lengths])
        parts = [(torch.empty_like(local, device=device), torch.empty_like(padded, device=device))
                 for _ in range(world.size)]
        dist.all_gather([part[0] for part in parts], local.to(device))
        dist.all_gather([part[1] for part in parts], padded.to(device))
        if not world.main:
            continue
        for reviews, their_states in parts:
            reviews, their_states = reviews.cpu().numpy(), their_states.cpu().numpy()
            real = reviews[:rows] >= 0
            yield (reviews[:rows][real],
                   [their_states[row, :reviews[rows + row]] for row in np.flatnonzero(real)])


def build_store(imdb: Path, bert_folder: Path, out: Path, params, device: torch.device,
                world: World = World()) -> dict[str, Any]:
    """The embed_imdb stage: fp16 states of the real tokens of each review in the balanced
    subsets of both splits, written to the store `out` (see above). Returns its meta. With
    several ranks each embeds its share of the batches and rank 0 alone writes."""
    config = read_bert_config(bert_folder, params.max_length, "embed_imdb.max_length",
                              params.bert_layers, "embed_imdb.bert_layers")
    tokenizer, bert = load_bert(bert_folder, device=device)
    layers = trim_to_layers(bert, params.bert_layers)
    if world.main:
        with atomic_folder(out) as scratch:  # the store swapped in whole, once every split is in
            return _fill_store(imdb, scratch, params, tokenizer, bert, layers, config, device,
                               world)
    return _fill_store(imdb, out, params, tokenizer, bert, layers, config, device, world)


def _fill_store(imdb: Path, out: Path, params, tokenizer, bert, layers, config: dict[str, Any],
                device: torch.device, world: World) -> dict[str, Any]:
    meta = {"bert": bert_identity(config), "max_length": params.max_length,
            "truncation": params.truncation, "head_tokens": params.head_tokens,
            "bert_layers": list(params.bert_layers), "amp": params.amp, "splits": {}}
    for split, count in (("train", params.train_samples), ("test", params.test_samples)):
        texts, labels = read_reviews(Path(imdb) / f"{split}.jsonl")
        rows = balanced_subset(labels, count, params.seed)
        token_ids = encode([texts[row] for row in rows], tokenizer, max_length=params.max_length,
                           truncation=params.truncation, head_tokens=params.head_tokens)
        lengths = np.array([len(ids) for ids in token_ids])
        batches = gather_batches(
            embed(token_ids, bert, batch_size=params.batch_size, device=device, layers=layers,
                  amp=params.amp, desc=f"embed {split}", world=world),
            world, hidden_size=config["hidden_size"], device=device)
        if not world.main:
            for _ in batches:  # this rank's share goes to rank 0
                pass
            continue
        store = create_split(out, split, lengths, config["hidden_size"], labels[rows], rows)
        for index, states in batches:
            for review, review_states in zip(index, states):
                store.states[store.offsets[review]:store.offsets[review + 1]] = review_states
        store.states.flush()
        meta["splits"][split] = {"reviews": len(rows), "tokens": int(lengths.sum()),
                                 "bytes": int(store.states.nbytes)}
    if world.main:
        write_meta(out, meta)
    return meta
