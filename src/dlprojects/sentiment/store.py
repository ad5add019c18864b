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
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlprojects.errors import UserError
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
    (Path(folder) / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise UserError(f"{path} not found; run `dvc repro embed_imdb`")
    return json.loads(path.read_text())


def store_bytes(folder: Path) -> int:
    """Bytes on disk of the store (what DVC caches)."""
    return sum(path.stat().st_size for path in Path(folder).iterdir() if path.is_file())


def build_store(imdb: Path, bert_folder: Path, out: Path, params,
                device: torch.device) -> dict[str, Any]:
    """The embed_imdb stage: fp16 states of the real tokens of each review in the balanced
    subsets of both splits, written to the store `out` (see above). Returns its meta."""
    config = read_bert_config(bert_folder, params.max_length, "embed_imdb.max_length",
                              params.bert_layers, "embed_imdb.bert_layers")
    tokenizer, bert = load_bert(bert_folder, device=device)
    layers = trim_to_layers(bert, params.bert_layers)
    if Path(out).exists():
        shutil.rmtree(out)
    meta = {"bert": bert_identity(config), "max_length": params.max_length,
            "truncation": params.truncation, "head_tokens": params.head_tokens,
            "bert_layers": list(params.bert_layers), "amp": params.amp, "splits": {}}
    for split, count in (("train", params.train_samples), ("test", params.test_samples)):
        texts, labels = read_reviews(Path(imdb) / f"{split}.jsonl")
        rows = balanced_subset(labels, count, params.seed)
        token_ids = encode([texts[row] for row in rows], tokenizer, max_length=params.max_length,
                           truncation=params.truncation, head_tokens=params.head_tokens)
        lengths = np.array([len(ids) for ids in token_ids])
        store = create_split(out, split, lengths, config["hidden_size"], labels[rows], rows)
        for index, states in embed(token_ids, bert, batch_size=params.batch_size, device=device,
                                   layers=layers, amp=params.amp,
                                   desc=f"embed {split}"):
            for review, review_states in zip(index, states):
                store.states[store.offsets[review]:store.offsets[review + 1]] = review_states
        store.states.flush()
        meta["splits"][split] = {"reviews": len(rows), "tokens": int(lengths.sum()),
                                 "bytes": int(store.states.nbytes)}
    write_meta(out, meta)
    return meta
