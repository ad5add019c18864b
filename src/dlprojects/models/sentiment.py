"""Sentiment: the bidirectional RNN head on frozen-BERT token states, the predictor behind the
`predict` command, and the test figures.

The BERT side (checking and loading it, tokenizing, truncating, embedding, the store) lives in
data/imdb.py, so that editing the head does not invalidate the embed_imdb stage's cached output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dlprojects.data.imdb import (BERT_PARAM, Embeddings, bert_identity, clean_review, embed,
                                  encode, load_bert, read_bert_config, trim_to_layers)
from dlprojects.errors import UserError


# ------------------------------------------------------------------------------------- RNN head


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
            yield ((torch.from_numpy(padded).to(self.device), batch_lengths),
                   self.labels[batch].to(self.device))


def reverse_within_length(sequences: Tensor, lengths: Tensor) -> Tensor:
    """Each (B, L, ...) row's first `length` steps reversed; the padding stays at the end."""
    steps = torch.arange(sequences.shape[1], device=sequences.device).expand(sequences.shape[:2])
    mirrored = lengths.to(sequences.device).unsqueeze(1) - 1 - steps
    index = torch.where(mirrored >= 0, mirrored, steps)  # (B, L)
    index = index.view(*index.shape, *[1] * (sequences.dim() - 2)).expand_as(sequences)
    return sequences.gather(1, index)


class SentimentRNN(nn.Module):
    """Bidirectional GRU or LSTM over each review's real tokens -> dropout -> linear -> 2 logits
    (negative, positive). What the linear layer reads is `pooling`: "last", the last layer's final
    forward and backward states; or "mean_max", the mean and the maximum of the last layer's
    outputs over the review's tokens (on 3,600 reviews: 82% validation accuracy after one epoch
    against 73% for "last", and better at every later epoch).

    Each layer is a forward and a backward one-way RNN; the backward one reads every review reversed
    within its length, so padding never reaches a state that is read. `packed` runs them on packed
    sequences (cuDNN's fast path; the default on CUDA). On the CPU the default is the equivalent
    padded run, read at each review's length: same outputs, but PyTorch's CPU backward through a
    packed RNN takes time quadratic in the sequence length (10x slower at 256 tokens).
    `projection` > 0 maps token states to that many features first, making every step cheaper.
    """

    def __init__(self, *, input_size: int, hidden_size: int = 128, layers: int = 1,
                 cell: str = "gru", dropout: float = 0.25, projection: int = 0,
                 pooling: str = "last"):
        super().__init__()
        if pooling not in ("last", "mean_max"):
            raise ValueError(f"pooling must be 'last' or 'mean_max', not {pooling!r}")
        self.config = dict(input_size=input_size, hidden_size=hidden_size, layers=layers,
                           cell=cell, dropout=dropout, projection=projection, pooling=pooling)
        self.packed: bool | None = None  # None: packed on CUDA, padded on the CPU
        self.project = (nn.Sequential(nn.Linear(input_size, projection), nn.GELU())
                        if projection else nn.Identity())
        self.dropout = nn.Dropout(dropout)
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        sizes = [projection or input_size] + [2 * hidden_size] * (layers - 1)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"left_to_right": rnn(size, hidden_size, batch_first=True),
                           "right_to_left": rnn(size, hidden_size, batch_first=True)})
            for size in sizes)
        self.output = nn.Linear((2 if pooling == "last" else 4) * hidden_size, 2)

    def _one_way(self, rnn: nn.Module, sequences: Tensor, lengths: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, hidden); steps after a review's length hold no meaning."""
        if self.packed or (self.packed is None and sequences.is_cuda):
            packed = pack_padded_sequence(sequences, lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            outputs, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True,
                                             total_length=sequences.shape[1])
            return outputs
        return rnn(sequences)[0]

    def forward(self, states: Tensor, lengths: Tensor) -> Tensor:
        # states (B, L, H) padded after each review's length; lengths (B,) int64
        sequences = self.dropout(self.project(states))  # (B, L, D)
        for number, layer in enumerate(self.layers):
            if number:
                sequences = self.dropout(sequences)
            forward = self._one_way(layer["left_to_right"], sequences, lengths)
            reversed_outputs = self._one_way(
                layer["right_to_left"], reverse_within_length(sequences, lengths), lengths)
            backward = reverse_within_length(reversed_outputs, lengths)
            sequences = torch.cat([forward, backward], dim=-1)  # (B, L, 2 * hidden)
        lengths = lengths.to(states.device)
        if self.config["pooling"] == "last":
            last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, forward.shape[-1])
            pooled = torch.cat([forward.gather(1, last).squeeze(1), backward[:, 0]], dim=-1)
        else:
            steps = torch.arange(sequences.shape[1], device=states.device)
            real = (steps < lengths.unsqueeze(1)).unsqueeze(-1)  # (B, L, 1): not padding
            mean = (sequences * real).sum(1) / lengths.unsqueeze(1)
            peak = sequences.masked_fill(~real, torch.finfo(sequences.dtype).min).amax(1)
            pooled = torch.cat([mean, peak], dim=-1)  # (B, 4 * hidden)
        return self.output(self.dropout(pooled))  # (B, 2)


# --------------------------------------------------------------------------------------- predict


def save_rnn(model: SentimentRNN, folder: Path, *, embedding: dict[str, Any],
             train_params: dict[str, Any]) -> Path:
    """models/sentiment/model.safetensors: RNN weights, with its architecture, the embedding
    settings (so predict embeds text the way the training reviews were) and the train params."""
    from dlprojects.models.checkpoints import save_model

    settings = {key: value for key, value in embedding.items() if key != "splits"}
    return save_model(model, Path(folder) / "model.safetensors",
                      {"model": model.config, "embedding": settings, "train": train_params})


def load_rnn(folder: Path) -> tuple[SentimentRNN, dict[str, Any]]:
    """The trained RNN (eval mode, CPU) and the params saved with it."""
    from dlprojects.models.checkpoints import load_params, load_weights

    weights = Path(folder) / "model.safetensors"
    if not weights.exists():
        raise UserError(f"{weights} not found; run `dvc repro train_sentiment` first")
    saved = load_params(weights)
    return load_weights(SentimentRNN(**saved["model"]), weights).eval(), saved


def check_texts(texts: Sequence[str]) -> None:
    """Refuse a text with nothing to score: empty, or only whitespace and `<br />` tags."""
    if isinstance(texts, str):
        raise TypeError("pass a list of review texts, not one string")
    for number, text in enumerate(texts, 1):
        if not clean_review(text):
            raise UserError(f"review {number} of {len(texts)} is empty (or only whitespace and "
                            f"<br /> tags); give the text of a review")


class SentimentPredictor:
    """Review text in, probability of positive out: the pipeline's trained RNN on the states of
    the same BERT, layers, max_length and truncation it was trained with."""

    def __init__(self, tokenizer, bert: nn.Module, rnn: SentimentRNN, embedding: dict[str, Any],
                 device: torch.device):
        self.tokenizer, self.bert, self.rnn = tokenizer, bert, rnn.eval()
        self.embedding, self.device = embedding, device

    @classmethod
    def load(cls, model_folder: Path, bert_folder: Path, *,
             device: torch.device) -> SentimentPredictor:
        rnn, saved = load_rnn(model_folder)
        embedding = saved["embedding"]
        config = read_bert_config(bert_folder, embedding["max_length"], "embed_imdb.max_length",
                                  embedding["bert_layers"], "embed_imdb.bert_layers")
        if bert_identity(config) != embedding["bert"]:
            raise UserError(f"{BERT_PARAM}: the BERT in {bert_folder} "
                            f"({config.get('_name_or_path')}) is not the one the RNN in "
                            f"{model_folder} was trained on "
                            f"({embedding['bert']['_name_or_path']}); "
                            f"run `dvc repro` to retrain, or restore that BERT")
        tokenizer, bert = load_bert(bert_folder, device=device)
        layers = trim_to_layers(bert, embedding["bert_layers"])
        return cls(tokenizer, bert, rnn.to(device), {**embedding, "bert_layers": layers}, device)

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """P(positive) of each text, float64 (N,)."""
        check_texts(texts)
        token_ids = encode(texts, self.tokenizer, max_length=self.embedding["max_length"],
                           truncation=self.embedding["truncation"],
                           head_tokens=self.embedding["head_tokens"])
        probabilities = np.zeros(len(texts))
        for index, states in embed(token_ids, self.bert, batch_size=batch_size, device=self.device,
                                   layers=self.embedding["bert_layers"],
                                   amp=self.embedding["amp"], desc="predict"):
            lengths = torch.tensor([len(review) for review in states])
            padded = torch.zeros(len(states), int(lengths.max()), states[0].shape[1])
            for row, review in enumerate(states):
                padded[row, :len(review)] = torch.from_numpy(review.astype(np.float32))
            logits = self.rnn(padded.to(self.device), lengths)
            probabilities[index] = logits.float().softmax(dim=-1)[:, 1].cpu().numpy()
        return probabilities


# ---------------------------------------------------------------------------------- test figures


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, F1, precision, recall (at 0.5), ROC-AUC, average precision and log loss of
    P(positive) against 0/1 labels."""
    from sklearn import metrics

    predictions = (probabilities >= 0.5).astype(np.int64)
    return {
        "accuracy": float(metrics.accuracy_score(labels, predictions)),
        "f1": float(metrics.f1_score(labels, predictions, zero_division=0)),
        "precision": float(metrics.precision_score(labels, predictions, zero_division=0)),
        "recall": float(metrics.recall_score(labels, predictions, zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(labels, probabilities)),
        "average_precision": float(metrics.average_precision_score(labels, probabilities)),
        "loss": float(metrics.log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7),
                                       labels=[0, 1])),
    }


def _thin(rows: dict[str, np.ndarray], points: int) -> dict[str, np.ndarray]:
    """At most `points` evenly spaced rows of a curve, its ends kept (plot files live in git)."""
    count = len(next(iter(rows.values())))
    keep = np.unique(np.linspace(0, count - 1, min(points, count)).round().astype(int))
    return {name: values[keep] for name, values in rows.items()}


def curves(labels: np.ndarray, probabilities: np.ndarray,
           points: int = 400) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(ROC: fpr, tpr, threshold; precision-recall: recall, precision, threshold), thinned."""
    from sklearn import metrics

    fpr, tpr, roc_thresholds = metrics.roc_curve(labels, probabilities)
    precision, recall, pr_thresholds = metrics.precision_recall_curve(labels, probabilities)
    roc = {"fpr": fpr, "tpr": tpr, "threshold": np.minimum(roc_thresholds, 1.0)}
    pr = {"recall": recall[:-1], "precision": precision[:-1], "threshold": pr_thresholds}
    return _thin(roc, points), _thin(pr, points)


def example_reviews(texts: Sequence[str], labels: np.ndarray, probabilities: np.ndarray,
                    count: int, excerpt: int = 300) -> list[dict[str, Any]]:
    """`count` test reviews to read, with P(positive): the most confident right ones of each
    class, the most confident wrong ones and the least sure (the last group fills any gap)."""
    predictions = (probabilities >= 0.5).astype(np.int64)
    confidence = np.abs(probabilities - 0.5)
    groups = [
        ("confident, right", np.flatnonzero((predictions == labels) & (labels == 1))),
        ("confident, right", np.flatnonzero((predictions == labels) & (labels == 0))),
        ("confident, wrong", np.flatnonzero(predictions != labels)),
        ("unsure", np.arange(len(labels))),
    ]
    chosen, seen, owed = [], set(), 0  # owed: what a short group leaves to the next one
    for number, (kind, members) in enumerate(groups):
        share = count // len(groups) + (number < count % len(groups)) + owed
        order = -confidence[members] if kind != "unsure" else confidence[members]
        taken = [i for i in members[np.argsort(order, kind="stable")] if i not in seen][:share]
        owed = share - len(taken)
        for index in taken:
            seen.add(index)
            text = clean_review(texts[index])
            chosen.append({"index": int(index), "kind": kind, "label": int(labels[index]),
                           "p_positive": round(float(probabilities[index]), 4),
                           "text": text if len(text) <= excerpt else text[:excerpt - 1] + "…"})
    return chosen


def write_examples(examples: list[dict[str, Any]], csv_path: Path, markdown_path: Path) -> None:
    """The examples as CSV (data) and as a Markdown table (for people)."""
    import csv

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["index", "kind", "label", "p_positive", "text"])
        writer.writeheader()
        writer.writerows(examples)
    names = {0: "negative", 1: "positive"}
    lines = ["| P(positive) | true label | kind | review (start) |", "|---:|---|---|---|"]
    for row in examples:
        text = row["text"].replace("|", "\\|")
        lines.append(f"| {row['p_positive']:.3f} | {names[row['label']]} | {row['kind']} "
                     f"| {text} |")
    markdown_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_columns(columns: dict[str, np.ndarray], path: Path) -> Path:
    """A CSV with one column per array (the ROC / PR plot files DVC renders)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(columns))
        writer.writerows(zip(*[np.round(values, 6).tolist() for values in columns.values()]))
    return path
