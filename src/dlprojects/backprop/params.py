"""Typed params of the backprop project's section (`train_backprop`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from dlprojects.core.config import ImageDataParams
from dlprojects.core.parsing import Count, Layers, NonNegative, Positive, Range, Rate, Sizes, check


@dataclass(frozen=True)
class NumpyTrainingParams:
    """Optimisation of a NumPy model (`numpy_nn.fit`)."""

    epochs: Count
    batch_size: Count
    optimizer: Literal["sgd", "adam"]
    lr: Positive
    momentum: Annotated[float, Range(low=0, high=1, high_open=True)]  # SGD only
    weight_decay: NonNegative
    schedule: Literal["constant", "cosine", "step"]
    warmup_epochs: NonNegative


@dataclass(frozen=True)
class BackpropMlpParams:
    hidden: Layers
    activation: Literal["relu", "tanh", "sigmoid"]
    dropout: Rate
    batch_norm: bool
    training: NumpyTrainingParams


@dataclass(frozen=True)
class BackpropCnnParams:
    channels: Annotated[list[int], Sizes("channel count")]  # 3x3 conv + 2x2 pool blocks
    hidden: Count
    dropout: Rate
    training: NumpyTrainingParams

    def __post_init__(self):
        check(len(self.channels) <= 4, "channels", "needs 1 to 4 conv blocks for 28x28 images")


@dataclass(frozen=True)
class TrainBackpropParams:
    data: ImageDataParams
    seed: int
    threads: Count  # BLAS threads
    mlp: BackpropMlpParams
    cnn: BackpropCnnParams


SECTIONS = {"train_backprop": TrainBackpropParams}
