"""Typed params: one dataclass per params.yaml section.

`load_section("download")` reads params.yaml and returns the section's dataclass. An unknown key,
a value of the wrong type or one out of range raises `ConfigError` naming the key, before any work.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from dlprojects.errors import UserError

PARAMS_FILE = Path("params.yaml")


class ConfigError(UserError):
    """A params value that cannot work."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError for `key` unless `condition` holds (used in __post_init__)."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


# --------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SourceParams:
    mirrors: list[str] = field(default_factory=list)  # base URLs tried before the built-in mirrors

    def __post_init__(self):
        for url in self.mirrors:
            check(url.startswith(("http://", "https://")), "mirrors",
                  f"{url!r} is not an http(s):// URL")


@dataclass(frozen=True)
class BertSourceParams(SourceParams):
    model: Literal["all-MiniLM-L6-v2", "bert-base-uncased"] = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class DownloadParams:
    mnist: SourceParams = field(default_factory=SourceParams)
    fashion_mnist: SourceParams = field(default_factory=SourceParams)
    imdb: SourceParams = field(default_factory=SourceParams)
    bert: BertSourceParams = field(default_factory=BertSourceParams)
    cifar10: SourceParams = field(default_factory=SourceParams)  # vit; URL only, not in dvc.yaml


@dataclass(frozen=True)
class LoopParams:
    """What every torch training stage shares (see training.py)."""

    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present, else CPU
    amp: bool = True  # bf16 autocast, CUDA only
    threads: int = 2  # CPU threads for torch and BLAS
    deterministic: bool = False  # deterministic CUDA kernels (slower); the CPU path already is

    def __post_init__(self):
        check(self.epochs >= 1, "epochs", f"{self.epochs} must be at least 1")
        check(self.batch_size >= 1, "batch_size", f"{self.batch_size} must be at least 1")
        check(self.threads >= 1, "threads", f"{self.threads} must be at least 1")


SECTIONS: dict[str, type] = {"download": DownloadParams}


@dataclass(frozen=True)
class ImageDataParams:
    """Which images a model trains on; the validation split chooses the epoch."""

    validation_size: int = 5000  # carved from the training set, seeded
    seed: int = 0  # the split's seed
    train_samples: int = 0  # 0: all remaining training images; N: a seeded subset (quick runs)
    test_samples: int = 0  # 0: the whole test set

    def __post_init__(self):
        check(self.validation_size >= 1, "validation_size", f"{self.validation_size} must be at least 1")
        check(self.train_samples >= 0, "train_samples", f"{self.train_samples} must be 0 (all) or more")
        check(self.test_samples >= 0, "test_samples", f"{self.test_samples} must be 0 (all) or more")


@dataclass(frozen=True)
class NumpyTrainingParams:
    """Optimisation of a NumPy model (numpy_nn.fit)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_epochs: float = 0.0

    def __post_init__(self):
        check(self.epochs >= 1, "epochs", f"{self.epochs} must be at least 1")
        check(self.batch_size >= 1, "batch_size", f"{self.batch_size} must be at least 1")
        check(self.lr > 0, "lr", f"{self.lr} must be positive")
        check(0 <= self.momentum < 1, "momentum", f"{self.momentum} must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", f"{self.weight_decay} must be 0 or more")
        check(self.warmup_epochs >= 0, "warmup_epochs", f"{self.warmup_epochs} must be 0 or more")


@dataclass(frozen=True)
class BackpropMlpParams:
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # hidden layer widths
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    dropout: float = 0.2
    batch_norm: bool = True
    training: NumpyTrainingParams = field(default_factory=NumpyTrainingParams)

    def __post_init__(self):
        check(len(self.hidden) >= 1, "hidden", "needs at least one layer size")
        for size in self.hidden:
            check(size >= 1, "hidden", f"layer size {size} must be at least 1")
        check(0 <= self.dropout < 1, "dropout", f"{self.dropout} must be in [0, 1)")


@dataclass(frozen=True)
class BackpropCnnParams:
    channels: list[int] = field(default_factory=lambda: [16, 32])  # 3x3 conv + 2x2 pool blocks
    hidden: int = 128  # dense layer after the conv blocks
    dropout: float = 0.25
    training: NumpyTrainingParams = field(default_factory=NumpyTrainingParams)

    def __post_init__(self):
        check(1 <= len(self.channels) <= 4, "channels", "needs 1 to 4 conv blocks for 28x28 images")
        for size in self.channels:
            check(size >= 1, "channels", f"channel count {size} must be at least 1")
        check(self.hidden >= 1, "hidden", f"{self.hidden} must be at least 1")
        check(0 <= self.dropout < 1, "dropout", f"{self.dropout} must be in [0, 1)")


@dataclass(frozen=True)
class TrainBackpropParams:
    data: ImageDataParams = field(default_factory=ImageDataParams)
    seed: int = 0  # weight initialisation, dropout masks and batch order
    threads: int = 1  # BLAS threads: one is fastest for these matrix sizes
    mlp: BackpropMlpParams = field(default_factory=BackpropMlpParams)
    cnn: BackpropCnnParams = field(default_factory=BackpropCnnParams)

    def __post_init__(self):
        check(self.threads >= 1, "threads", f"{self.threads} must be at least 1")


@dataclass(frozen=True)
class FashionVariantParams:
    hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    batch_norm: bool = True
    dropout: float = 0.2

    def __post_init__(self):
        check(len(self.hidden) >= 1, "hidden", "the layer list is empty; give at least one size")
        for size in self.hidden:
            check(size >= 1, "hidden", f"layer size {size} must be at least 1")
        check(0 <= self.dropout < 1, "dropout", f"{self.dropout} must be in [0, 1)")


@dataclass(frozen=True)
class TrainFashionParams:
    """Both variants share data, seed, optimiser and epoch budget, so the comparison is fair."""

    data: ImageDataParams = field(default_factory=ImageDataParams)
    loop: LoopParams = field(default_factory=LoopParams)
    lr: float = 1e-3  # AdamW peak learning rate, cosine-decayed per step
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    crop_padding: int = 0  # random translations of up to this many pixels (0: no augmentation)
    variants: dict[str, FashionVariantParams] = field(default_factory=dict)

    def __post_init__(self):
        check(self.lr > 0, "lr", f"{self.lr} must be positive")
        check(self.weight_decay >= 0, "weight_decay", f"{self.weight_decay} must be 0 or more")
        check(0 <= self.label_smoothing < 1, "label_smoothing",
              f"{self.label_smoothing} must be in [0, 1)")
        check(0 <= self.crop_padding <= 8, "crop_padding", f"{self.crop_padding} must be in [0, 8]")
        check(len(self.variants) >= 1, "variants", "name at least one variant")


SECTIONS.update({"train_backprop": TrainBackpropParams, "train_fashion": TrainFashionParams})


# >>> sentiment: embed_imdb, train_sentiment, evaluate_sentiment >>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>

IMDB_REVIEWS_PER_SPLIT = 25_000


@dataclass(frozen=True)
class EmbedImdbParams:
    """Frozen-BERT token states of IMDB reviews (stage embed_imdb); download.bert.model picks it."""

    train_samples: int = 6000  # seeded balanced subset of the 25,000 train reviews (0: all)
    test_samples: int = 4500  # likewise of the 25,000 test reviews (0: all)
    seed: int = 0  # which reviews the subsets keep
    max_length: int = 224  # tokens per review incl. [CLS] and [SEP]; at most the BERT's positions
    truncation: Literal["head_tail", "head", "tail"] = "head_tail"  # which part of a review stays
    head_tokens: int = 64  # head_tail: tokens kept from the start; the rest come from the end
    # hidden layers averaged per token (-1: the last, 0: the embeddings)
    bert_layers: list[int] = field(default_factory=lambda: [-3, -2])
    batch_size: int = 32  # reviews per BERT forward pass (batches hold reviews of similar length)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present, else CPU
    amp: bool = True  # bf16 autocast, CUDA only
    threads: int = 2  # CPU threads for torch

    def __post_init__(self):
        for key in ("train_samples", "test_samples"):
            value = getattr(self, key)
            check(value == 0 or 2 <= value <= IMDB_REVIEWS_PER_SPLIT, key,
                  f"{value} must be 0 (all) or in [2, {IMDB_REVIEWS_PER_SPLIT}]")
        check(self.max_length >= 8, "max_length", f"{self.max_length} must be at least 8")
        check(0 <= self.head_tokens <= self.max_length - 2, "head_tokens",
              f"{self.head_tokens} must be in [0, max_length - 2 = {self.max_length - 2}]")
        check(len(self.bert_layers) >= 1, "bert_layers", "name at least one hidden layer")
        check(len(set(self.bert_layers)) == len(self.bert_layers), "bert_layers",
              f"{self.bert_layers} names a layer twice")
        check(self.batch_size >= 1, "batch_size", f"{self.batch_size} must be at least 1")
        check(self.threads >= 1, "threads", f"{self.threads} must be at least 1")


@dataclass(frozen=True)
class TrainSentimentParams:
    """The RNN head on the stored states (stage train_sentiment)."""

    cell: Literal["gru", "lstm"] = "gru"
    hidden_size: int = 128  # per direction
    layers: int = 1  # stacked bidirectional layers
    projection: int = 128  # > 0: token states -> this many features before the RNN (cheaper)
    pooling: Literal["last", "mean_max"] = "mean_max"  # what the output layer reads (see model)
    dropout: float = 0.25  # on the RNN inputs, between layers and before the output
    val_fraction: float = 0.2  # of the embedded train reviews, stratified, seeded; picks the epoch
    lr: float = 2e-3  # AdamW
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # cosine: to 0 over loop.epochs, per step
    weight_decay: float = 1e-2
    patience: int = 2  # stop after this many epochs without a val_accuracy gain
    loop: LoopParams = field(
        default_factory=lambda: LoopParams(epochs=5, batch_size=128, threads=2))

    def __post_init__(self):
        check(self.hidden_size >= 1, "hidden_size", f"{self.hidden_size} must be at least 1")
        check(self.layers >= 1, "layers", f"{self.layers} must be at least 1")
        check(self.projection >= 0, "projection", f"{self.projection} must be 0 (none) or more")
        check(0 <= self.dropout < 1, "dropout", f"{self.dropout} must be in [0, 1)")
        check(0 < self.val_fraction < 1, "val_fraction", f"{self.val_fraction} must be in (0, 1)")
        check(self.lr > 0, "lr", f"{self.lr} must be positive")
        check(self.weight_decay >= 0, "weight_decay", f"{self.weight_decay} must be 0 or more")
        check(self.patience >= 1, "patience", f"{self.patience} must be at least 1")


@dataclass(frozen=True)
class EvaluateSentimentParams:
    """Test figures of the trained RNN (stage evaluate_sentiment); the test split is used once."""

    batch_size: int = 256  # reviews per forward pass
    examples: int = 12  # test reviews in the examples table (confident, wrong and unsure ones)
    log_model: bool = True  # log the RNN to MLflow and register it as "sentiment"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 2

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", f"{self.batch_size} must be at least 1")
        check(self.examples >= 0, "examples", f"{self.examples} must be 0 or more")
        check(self.threads >= 1, "threads", f"{self.threads} must be at least 1")


SECTIONS.update({"embed_imdb": EmbedImdbParams, "train_sentiment": TrainSentimentParams,
                 "evaluate_sentiment": EvaluateSentimentParams})

# <<< sentiment <<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<


# >>> vit: train_vit, evaluate_vit >>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>

VIT_IMAGES = {"fashion_mnist": (1, 28), "mnist": (1, 28), "cifar10": (3, 32)}  # (channels, side)


@dataclass(frozen=True)
class TrainVitParams:
    """A Vision Transformer from scratch (stage train_vit); the defaults are the 2-core CPU recipe."""

    dataset: Literal["fashion_mnist", "mnist", "cifar10"] = "fashion_mnist"  # data/raw/<dataset>
    data: ImageDataParams = field(default_factory=ImageDataParams)
    loop: LoopParams = field(default_factory=LoopParams)
    patch_size: int = 7  # pixels per patch side; divides the image side (28; 32 for cifar10)
    dim: int = 64  # token width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads; divides dim
    mlp_dim: int = 128  # hidden width of each block's MLP
    dropout: float = 0.0  # on token embeddings, attention output and MLP
    stem_channels: int = 16  # two 3x3 conv-BN-ReLU layers before patchifying (0: no stem)
    lr: float = 2e-3  # AdamW peak learning rate, per step: linear warm-up, then cosine to 0
    weight_decay: float = 0.05  # not on biases, norms, the position embedding or the class token
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1  # training loss only; val/test losses are plain cross-entropy
    crop_padding: int = 0  # random translations of up to this many pixels (0: none)
    flip: bool = True  # random horizontal flips (clothes, objects; refused for digits)
    compile: bool = False  # torch.compile the model (pays off on a GPU, not on a small CPU)

    def __post_init__(self):
        side = VIT_IMAGES[self.dataset][1]
        fits = [size for size in range(2, side + 1) if side % size == 0]
        check(self.patch_size >= 1 and side % self.patch_size == 0, "patch_size",
              f"{self.patch_size} does not divide the {side}x{side} images of {self.dataset}; "
              f"use one of {', '.join(map(str, fits))}")
        for key in ("dim", "depth", "heads", "mlp_dim"):
            check(getattr(self, key) >= 1, key, f"{getattr(self, key)} must be at least 1")
        check(self.dim % self.heads == 0, "heads",
              f"{self.heads} does not divide dim {self.dim}; "
              f"pick heads so that dim / heads is whole")
        check(0 <= self.dropout < 1, "dropout", f"{self.dropout} must be in [0, 1)")
        check(self.stem_channels >= 0, "stem_channels",
              f"{self.stem_channels} must be 0 (none) or more")
        check(self.lr > 0, "lr", f"{self.lr} must be positive")
        check(self.weight_decay >= 0, "weight_decay", f"{self.weight_decay} must be 0 or more")
        check(self.warmup_epochs >= 0, "warmup_epochs", f"{self.warmup_epochs} must be 0 or more")
        check(0 <= self.label_smoothing < 1, "label_smoothing",
              f"{self.label_smoothing} must be in [0, 1)")
        check(0 <= self.crop_padding <= 8, "crop_padding", f"{self.crop_padding} must be in [0, 8]")
        check(not (self.flip and self.dataset == "mnist"), "flip",
              "mirrored digits are not digits (2 and 5, say); set flip: false for mnist")

    def model_kwargs(self) -> dict[str, int | float]:
        """The `ViT(...)` arguments these params describe."""
        channels, side = VIT_IMAGES[self.dataset]
        return {"image_size": side, "in_channels": channels, "num_classes": 10,
                "patch_size": self.patch_size, "dim": self.dim, "depth": self.depth,
                "heads": self.heads, "mlp_dim": self.mlp_dim, "dropout": self.dropout,
                "stem_channels": self.stem_channels}


SECTIONS.update({"train_vit": TrainVitParams})

# <<< vit <<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<


# ----------------------------------------------------------------------------------------- parsing


def load_section(name: str, params_file: Path | str = PARAMS_FILE) -> Any:
    """The typed dataclass for section `name` of params.yaml."""
    path = Path(params_file)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root")
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    if name not in params:
        raise ConfigError(f"{path}: section '{name}' is missing")
    return parse(SECTIONS[name], params[name], name)


def parse(cls: type, data: Any, key: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and ranges."""
    if not isinstance(data, dict):
        raise ConfigError(f"{key}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    values = {name: _coerce(value, hints[name], f"{key}.{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError as error:  # a __post_init__ check: prefix the section path
        raise ConfigError(f"{key}.{error}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, key)
    if origin is Literal:
        if value not in get_args(hint):
            choices = ", ".join(repr(a) for a in get_args(hint))
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, item = get_args(hint)
        return {name: _coerce(v, item, f"{key}.{name}") for name, v in value.items()}
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(value, inner, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and
                                                 (hint is bool or not isinstance(value, bool))):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def as_flat_dict(params: Any, prefix: str = "") -> dict[str, Any]:
    """`{"loop.epochs": 10, ...}` for logging a section's params (dataclass or dict) to MLflow."""
    flat: dict[str, Any] = {}
    as_dict = params if isinstance(params, dict) else dataclasses.asdict(params)
    for name, value in as_dict.items():
        _flatten(value, f"{prefix}{name}", flat)
    return flat


def _flatten(value: Any, key: str, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for name, inner in value.items():
            _flatten(inner, f"{key}.{name}", into)
    else:
        into[key] = value
