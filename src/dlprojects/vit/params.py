"""Typed params of the ViT project's section (`train_vit`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from dlprojects.core.config import ImageDataParams, LoopParams
from dlprojects.core.parsing import Count, NonNegative, Positive, Range, Rate, Shift, check


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


SECTIONS = {"train_vit": TrainVitParams}
