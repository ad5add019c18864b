"""Typed params: one dataclass per params.yaml section, and `load_section` to read one.

params.yaml is the one place for defaults: every param is there, commented. The dataclasses here
type and check them (see `parsing`) and repeat no default. `load_section("train_vit")` reads
params.yaml and returns the section's dataclass, or raises `ConfigError` naming the key, before
any work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from dlprojects.parsing import (PARAMS_FILE, ConfigError, Count, Device, Layers, NonNegative,
                                Positive, Processes, Range, Rate, Samples, Shift, Sizes, check,
                                parse, read_params)

__all__ = ["ConfigError", "SECTIONS", "load_section", "parse"]


# --------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SourceParams:
    mirrors: list[str]  # base URLs tried before the built-in mirrors

    def __post_init__(self):
        for url in self.mirrors:
            check(url.startswith(("http://", "https://")), "mirrors",
                  f"{url!r} is not an http(s):// URL")


@dataclass(frozen=True)
class BertSourceParams(SourceParams):
    model: Literal["all-MiniLM-L6-v2", "bert-base-uncased"]


@dataclass(frozen=True)
class DownloadParams:
    mnist: SourceParams
    fashion_mnist: SourceParams
    imdb: SourceParams
    bert: BertSourceParams
    cifar10: SourceParams  # vit; URL only, not in dvc.yaml


@dataclass(frozen=True)
class LoopParams:
    """What every torch training stage shares (`runtime.start`, `training.fit`)."""

    epochs: Count
    batch_size: Count
    seed: int
    device: Device
    amp: bool  # bf16 autocast, CUDA only
    threads: Count  # CPU threads for torch and BLAS
    deterministic: bool  # deterministic CUDA kernels (slower); the CPU path already is


@dataclass(frozen=True)
class DistributedParams:
    """How many processes the torch stages run as (`dlprojects.distributed`); not part of a
    model's params, since a model trained on any number equals the one-process one (to the
    rounding of the gradient sums)."""

    processes: Processes


@dataclass(frozen=True)
class ImageDataParams:
    """Which images a model trains on; the validation split chooses the epoch."""

    validation_size: Count
    seed: int
    train_samples: Samples
    test_samples: Samples


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


@dataclass(frozen=True)
class FashionVariantParams:
    hidden: Layers
    batch_norm: bool
    dropout: Rate


@dataclass(frozen=True)
class TrainFashionParams:
    """Both variants share data, seed, optimiser and epoch budget, so the comparison is fair."""

    data: ImageDataParams
    loop: LoopParams
    lr: Positive
    weight_decay: NonNegative
    label_smoothing: Rate
    crop_padding: Shift
    variants: dict[str, FashionVariantParams]

    def __post_init__(self):
        check(len(self.variants) >= 1, "variants", "name at least one variant")

    @property
    def model_variant(self) -> str:
        """The last variant listed: the project's model, registered as `fashion` (the others as
        `fashion-<variant>`) and shown with its predicted probabilities."""
        return list(self.variants)[-1]

    def variant(self, name: str) -> FashionVariantParams:
        if name not in self.variants:
            raise ConfigError(f"train_fashion.variants: no variant '{name}' "
                              f"(known: {', '.join(self.variants)})")
        return self.variants[name]

    def resolved(self, name: str) -> dict[str, Any]:
        """What a variant's model was made with: the shared params and that variant alone."""
        return {**dataclasses.asdict(self), "variant": name,
                "variants": {name: dataclasses.asdict(self.variant(name))}}


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


VIT_IMAGES = {"fashion_mnist": (1, 28), "mnist": (1, 28), "cifar10": (3, 32)}  # (channels, side)


@dataclass(frozen=True)
class TrainVitParams:
    """A Vision Transformer from scratch (stage train_vit)."""

    dataset: Literal["fashion_mnist", "mnist", "cifar10"]
    data: ImageDataParams
    loop: LoopParams
    patch_size: Count
    dim: Count
    depth: Count
    heads: Count
    mlp_dim: Count
    dropout: Rate
    stem_channels: Annotated[int, Range(low=0, zero="none")]
    lr: Positive
    weight_decay: NonNegative
    warmup_epochs: NonNegative
    label_smoothing: Rate
    crop_padding: Shift
    flip: bool
    compile: bool

    def __post_init__(self):
        side = VIT_IMAGES[self.dataset][1]
        fits = [size for size in range(2, side + 1) if side % size == 0]
        check(side % self.patch_size == 0, "patch_size",
              f"{self.patch_size} does not divide the {side}x{side} images of {self.dataset}; "
              f"use one of {', '.join(map(str, fits))}")
        check(self.dim % self.heads == 0, "heads",
              f"{self.heads} does not divide dim {self.dim}; "
              f"pick heads so that dim / heads is whole")
        check(not (self.flip and self.dataset == "mnist"), "flip",
              "mirrored digits are not digits (2 and 5, say); set flip: false for mnist")

    def model_kwargs(self) -> dict[str, int | float]:
        """The `ViT(...)` arguments these params describe."""
        channels, side = VIT_IMAGES[self.dataset]
        return {"image_size": side, "in_channels": channels, "num_classes": 10,
                "patch_size": self.patch_size, "dim": self.dim, "depth": self.depth,
                "heads": self.heads, "mlp_dim": self.mlp_dim, "dropout": self.dropout,
                "stem_channels": self.stem_channels}


SECTIONS: dict[str, type] = {
    "download": DownloadParams, "train_backprop": TrainBackpropParams,
    "train_fashion": TrainFashionParams, "embed_imdb": EmbedImdbParams,
    "train_sentiment": TrainSentimentParams, "evaluate_sentiment": EvaluateSentimentParams,
    "train_vit": TrainVitParams, "distributed": DistributedParams,
}


def load_section(name: str, params_file: Path | str = PARAMS_FILE) -> Any:
    """The typed dataclass for section `name` of params.yaml."""
    params = read_params(params_file)
    if name not in params:
        raise ConfigError(f"{params_file}: section '{name}' is missing")
    return parse(SECTIONS[name], params[name], name)
