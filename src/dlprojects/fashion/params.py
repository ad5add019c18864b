"""Typed params of the FashionMNIST project's section (`train_fashion`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dlprojects.core.config import ImageDataParams, LoopParams
from dlprojects.core.parsing import ConfigError, Layers, NonNegative, Positive, Rate, Shift, check


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
    flip: bool
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


SECTIONS = {"train_fashion": TrainFashionParams}
