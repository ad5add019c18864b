"""IMDB reviews as the download stage stores them: reading, cleaning, balanced subsets, the
validation split and truncation to a token budget."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from dlprojects.core.errors import UserError

_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


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
