"""Typed params of the sentiment project's sections (`embed_imdb`, `train_sentiment`,
`evaluate_sentiment`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from dlprojects.core.config import LoopParams
from dlprojects.core.parsing import Count, Device, NonNegative, Positive, Range, Rate, check


Reviews = Annotated[int, Range(low=2, high=25_000, zero="all")]  # of the 25,000 in each IMDB split


@dataclass(frozen=True)
class EmbedImdbParams:
    """Frozen-BERT token states of IMDB reviews (stage embed_imdb); download.bert.model picks it."""

    train_samples: Reviews
    test_samples: Reviews
    seed: int
    max_length: Annotated[int, Range(low=8)]
    truncation: Literal["head_tail", "head", "tail"]
    head_tokens: int
    bert_layers: list[int]
    batch_size: Count
    device: Device
    amp: bool
    threads: Count

    def __post_init__(self):
        check(0 <= self.head_tokens <= self.max_length - 2, "head_tokens",
              f"{self.head_tokens} must be in [0, max_length - 2 = {self.max_length - 2}]")
        check(len(self.bert_layers) >= 1, "bert_layers", "name at least one hidden layer")
        check(len(set(self.bert_layers)) == len(self.bert_layers), "bert_layers",
              f"{self.bert_layers} names a layer twice")


@dataclass(frozen=True)
class TrainSentimentParams:
    """The RNN head on the stored states (stage train_sentiment)."""

    cell: Literal["gru", "lstm"]
    hidden_size: Count
    layers: Count
    projection: Annotated[int, Range(low=0, zero="none")]
    pooling: Literal["last", "mean_max"]
    dropout: Rate
    val_fraction: Annotated[float, Range(low=0, high=1, low_open=True, high_open=True)]
    lr: Positive
    lr_schedule: Literal["constant", "cosine"]
    weight_decay: NonNegative
    patience: Count
    loop: LoopParams


@dataclass(frozen=True)
class EvaluateSentimentParams:
    """Test figures of the trained RNN (stage evaluate_sentiment); the test split is used once."""

    batch_size: Count
    examples: Annotated[int, Range(low=0)]
    log_model: bool
    device: Device
    threads: Count


SECTIONS = {"embed_imdb": EmbedImdbParams, "train_sentiment": TrainSentimentParams,
            "evaluate_sentiment": EvaluateSentimentParams}
