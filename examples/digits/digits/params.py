"""Typed params of the example project's section (`train_digits`)."""

from __future__ import annotations

from dataclasses import dataclass

from dlprojects.core.config import ImageDataParams, LoopParams
from dlprojects.core.parsing import NonNegative, Positive


@dataclass(frozen=True)
class TrainDigitsParams:
    data: ImageDataParams
    loop: LoopParams
    lr: Positive
    weight_decay: NonNegative


SECTIONS = {"train_digits": TrainDigitsParams}
