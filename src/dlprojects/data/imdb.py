"""IMDB reviews for the sentiment project: reading, cleaning, balanced subsets, truncation, the
frozen BERT that embeds them, and the compact store of its hidden states that the RNN trains on.

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
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dlprojects.errors import UserError

SPLITS = ("train", "test")
REVIEWS_PER_SPLIT = 25_000
_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


# ---------------------------------------------------------------------------------------- reviews


def read_reviews(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts and int64 labels (1 = positive) of a `{"text", "label"}` JSON-lines file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found; run `dvc repro download@imdb` first")
    texts, labels = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            review = json.loads(line)
            texts.append(review["text"])
            labels.append(int(review["label"]))
    return texts, np.asarray(labels, dtype=np.int64)


def clean_review(text: str) -> str:
    """The review without its HTML line breaks (`<br />`), whitespace collapsed."""
    return " ".join(_LINE_BREAK.sub(" ", text).split())


def balanced_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of `count` reviews, half of each class (0 = all)."""
    if count == 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label, share in ((0, count // 2), (1, count - count // 2)):
        members = np.flatnonzero(labels == label)
        if share > len(members):
            raise UserError(f"asked for {share} reviews of class {label}, the split has "
                            f"{len(members)}")
        chosen.append(rng.choice(members, size=share, replace=False))
    return np.sort(np.concatenate(chosen))


def split_validation(labels: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a seeded `fraction` of each class held out (at least one)."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = min(len(members) - 1, max(1, round(fraction * len(members))))
        validation.append(members[:held])
        train.append(members[held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def truncate(ids: list[int], budget: int, mode: str = "head_tail", head: int = 0) -> list[int]:
    """At most `budget` token ids: the first ones ("head"), the last ones ("tail"), or the first
    `head` plus the last `budget - head` ("head_tail"; Sun et al., 2019: reviews open with context
    and close with the verdict)."""
    if len(ids) <= budget:
        return list(ids)
    if mode == "head":
        return list(ids[:budget])
    if mode == "tail":
        return list(ids[len(ids) - budget:])
    return list(ids[:head]) + list(ids[len(ids) - (budget - head):])


# ------------------------------------------------------------------------------------------ BERT

BERT_PARAM = "download.bert.model"  # the param that chooses what data/raw/bert holds


def read_bert_config(folder: Path, max_length: int, max_length_param: str,
                     layers: Sequence[int] = (-1,), layers_param: str = "") -> dict[str, Any]:
    """config.json of a BERT folder, after checking that it is one, that `max_length` fits its
    positions and that it has the hidden `layers` asked for."""
    folder = Path(folder)
    refetch = f"set {BERT_PARAM} and run `dvc repro download@bert`"
    if not (folder / "config.json").is_file():
        raise UserError(f"{BERT_PARAM}: {folder} is missing or holds no model (no config.json); "
                        f"{refetch}")
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError:
        raise UserError(f"{BERT_PARAM}: {folder}/config.json is not valid JSON; "
                        f"{refetch}") from None
    if config.get("model_type") != "bert":
        raise UserError(f"{BERT_PARAM}: {folder} holds a {config.get('model_type')!r} model, not a "
                        f"BERT; {refetch}")
    limit = int(config.get("max_position_embeddings", 512))
    if max_length > limit:
        raise UserError(f"{max_length_param}: {max_length} exceeds the {limit} positions of the "
                        f"BERT in {folder}; use at most {limit}")
    depth = int(config.get("num_hidden_layers", 0))
    for layer in layers:
        if not -depth - 1 <= layer <= depth:
            raise UserError(f"{layers_param}: layer {layer} does not exist; the BERT in {folder} "
                            f"has hidden states 0 (embeddings) to {depth} (or -1 to {-depth - 1})")
    return config


def bert_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What an RNN trained on a BERT's states depends on: saved with the RNN, checked by predict."""
    keys = ("_name_or_path", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "vocab_size")
    return {key: config.get(key) for key in keys}


def load_bert(folder: Path, *, device: torch.device):
    """(tokenizer, frozen BertModel in eval mode on `device`) from a local folder, offline.
    Check the folder with `read_bert_config` first."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # the "Loading weights" bar says nothing in a stage's log
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModel.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise UserError(f"{BERT_PARAM}: cannot load the BERT in {folder} ({error}); set "
                        f"{BERT_PARAM} and run `dvc repro download@bert`") from None
    model.requires_grad_(False)
    return tokenizer, model.eval().to(device)


def trim_to_layers(model: nn.Module, layers: Sequence[int]) -> list[int]:
    """Drop the encoder layers after the deepest hidden layer in `layers`, whose work would be
    thrown away (a sixth of MiniLM's time for the default [-3, -2]); returns `layers` as indices
    counted from the embeddings (0), which stay valid in the trimmed model."""
    depth = len(model.encoder.layer)
    absolute = [layer % (depth + 1) for layer in layers]
    model.encoder.layer = model.encoder.layer[:max(absolute)]
    return absolute


def encode(texts: Sequence[str], tokenizer, *, max_length: int, truncation: str = "head_tail",
           head_tokens: int = 0) -> list[list[int]]:
    """Token ids of each review: `<br />` removed, truncated to `max_length` including [CLS] and
    [SEP] (see `truncate` for the modes)."""
    cleaned = [clean_review(text) for text in texts]
    pieces = tokenizer(cleaned, add_special_tokens=False, truncation=False, verbose=False)
    budget = max_length - 2
    return [[tokenizer.cls_token_id, *truncate(ids, budget, truncation, head_tokens),
             tokenizer.sep_token_id] for ids in pieces["input_ids"]]


@torch.inference_mode()
def embed(token_ids: Sequence[list[int]], model: nn.Module, *, batch_size: int,
          device: torch.device, layers: Sequence[int] = (-1,), amp: bool = True,
          sort_by_length: bool = True, pad_to: int | None = None,
          desc: str = "embed") -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Yields (review indices, fp16 states (length_i, H) of their real tokens) batch by batch; a
    token's state is the mean of its hidden `layers` (0: the embeddings, -1: the last layer).

    Batches hold reviews of similar length (longest first, so memory trouble shows at once) and
    are padded to their own longest review; `sort_by_length=False, pad_to=max_length` is the naive
    loop the benchmark compares against. bf16 autocast on CUDA when `amp`.
    """
    lengths = np.array([len(ids) for ids in token_ids])
    order = np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(len(lengths))
    pad_id = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
    only_last = list(layers) == [-1]
    bar = tqdm(total=len(order), desc=desc, unit="review", disable=None, file=sys.stderr)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        width = pad_to or int(lengths[index].max())
        input_ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, review in enumerate(index):
            input_ids[row, :lengths[review]] = torch.tensor(token_ids[review])
            attention_mask[row, :lengths[review]] = 1
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=amp and device.type == "cuda"):
            output = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                           output_hidden_states=not only_last)
        if only_last:
            hidden = output.last_hidden_state.float()
        else:
            hidden = torch.stack([output.hidden_states[layer].float() for layer in layers]).mean(0)
        hidden = hidden.to(torch.float16).cpu().numpy()  # (B, width, H)
        yield index, [hidden[row, :lengths[review]] for row, review in enumerate(index)]
        bar.update(len(index))
    bar.close()


# -------------------------------------------------------------------------------- embedding store


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


def load_split(folder: Path, split: str, *, in_memory: bool = True) -> Embeddings:
    """A split of the store; `in_memory=False` memory-maps the states instead of reading them."""
    folder = Path(folder)
    if not (folder / f"{split}_states.npy").exists():
        raise UserError(f"{folder / f'{split}_states.npy'} not found; run `dvc repro embed_imdb`")
    states = np.load(folder / f"{split}_states.npy", mmap_mode=None if in_memory else "r")
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
    subsets of both splits, written to the store `out` (see data/imdb.py). Returns its meta."""
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
