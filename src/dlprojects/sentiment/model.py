"""The bidirectional RNN head on frozen-BERT token states, and its saved form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dlprojects.core.errors import UserError
from dlprojects.core.models import describe
from dlprojects.core.weights import load_params, load_weights, save_model


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


def save_rnn(model: SentimentRNN, folder: Path, *, embedding: dict[str, Any],
             train_params: dict[str, Any]) -> Path:
    """models/sentiment/model.safetensors: RNN weights, with its architecture, the embedding
    settings (so predict embeds text the way the training reviews were) and the train params."""
    settings = {key: value for key, value in embedding.items() if key != "splits"}
    describe(folder, "dlprojects.sentiment.predict:predictor", "reviews")
    return save_model(model, Path(folder) / "model.safetensors",
                      {"model": model.config, "embedding": settings, "train": train_params})


def load_rnn(folder: Path) -> tuple[SentimentRNN, dict[str, Any]]:
    """The trained RNN (eval mode, CPU) and the params saved with it."""
    weights = Path(folder) / "model.safetensors"
    if not weights.exists():
        raise UserError(f"{weights} not found; run `dvc repro train_sentiment` first")
    saved = load_params(weights)
    return load_weights(SentimentRNN(**saved["model"]), weights).eval(), saved


def probe_steps() -> list:
    """The numerics probe's check of this model: three training steps from a fixed start."""
    from dlprojects.numerics.probe import random_tensor, train_steps

    torch.manual_seed(0)
    model = SentimentRNN(input_size=384, hidden_size=32, projection=64, pooling="mean_max")
    lengths = torch.arange(32) % 40 + 10
    return train_steps(model, (random_tensor(32, 50, 384, seed=15), lengths), torch.arange(32) % 2)
