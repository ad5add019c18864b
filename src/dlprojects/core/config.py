"""Typed params: one dataclass per params.yaml section, and `load_section` to read one.

params.yaml is the one place for defaults: every param is there, commented. The dataclasses type
and check them (see `parsing`) and repeat no default: the shared sections' here, each project's
in its folder's `params.py` (its `SECTIONS`, the sections its declaration owns).
`load_section("train_vit")` reads params.yaml and returns the section's dataclass, or raises
`ConfigError` naming the key, before any work.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from dlprojects.core.parsing import (PARAMS_FILE, ConfigError, Count, Device, Processes, Range,
                                     Samples, check, parse, read_params, shown)

__all__ = ["ConfigError", "SECTIONS", "load_section", "parse"]


# --------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SourceParams:
    mirrors: list[str]  # base URLs tried before the built-in mirrors

    def __post_init__(self):
        for url in self.mirrors:
            check(url.startswith(("http://", "https://")), "mirrors",
                  f"{shown(url)} is not an http(s):// URL")


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
    """How many processes the torch stages run as (`dlprojects.core.distributed`); not part of a
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
class RegistryParams:
    """Which registered version the evaluate stages make `champion` (`core.registry.promote`)."""

    promote_alpha: Annotated[float, Range(low=0, high=1, low_open=True)]  # 1: on any gain


SECTIONS: dict[str, type] = {"download": DownloadParams, "distributed": DistributedParams,
                             "registry": RegistryParams}


def section_type(name: str) -> type:
    """The dataclass of section `name`: a shared one, or the one of the project that declares
    the section (its `params.py`, imported alone)."""
    if name in SECTIONS:
        return SECTIONS[name]
    from dlprojects.core.projects import declared

    owner = next((project for project in declared() if name in project.params), None)
    if owner is None:
        raise ConfigError(f"params.yaml: no project declares a section '{name}'")
    return importlib.import_module(f"dlprojects.{owner.name}.params").SECTIONS[name]


def load_section(name: str, params_file: Path | str = PARAMS_FILE) -> Any:
    """The typed dataclass for section `name` of params.yaml."""
    params = read_params(params_file)
    if name not in params:
        raise ConfigError(f"{params_file}: section '{name}' is missing")
    return parse(section_type(name), params[name], name)
