"""The declared projects. A project is one folder under `src/dlprojects/` holding a `project.yaml`
that says, once, what the rest of the pipeline needs to know of it: its params sections, the data
sets it reads, its DVC stages, the models it trains (each a registered model and a row of the
report, with its headline metric and the input its served model takes), its figures, its seed
params and its smoke-sized params. The shared jobs (report, seeds, registry, serving, predict,
lineage, `dvc.yaml`) loop over these declarations; none of them names a project.

The declarations are read as YAML, without importing any project's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from dlprojects.core.errors import UserError

PACKAGE = Path(__file__).resolve().parent.parent  # src/dlprojects
DECLARATION = "project.yaml"
INPUTS = ("images", "reviews")  # what a served model takes


@dataclass(frozen=True)
class Model:
    """A trained model of a project: a model folder (a train stage's out), its registered name,
    and the metrics file (an evaluate stage's out) holding its headline figure."""

    name: str  # the registered model name
    project: str
    folder: str  # models/...
    label: str  # its row in the report
    metrics: str  # reports/.../metrics.json
    headline: tuple[str, ...]  # the keys of its headline metric in that file
    input: str  # one of INPUTS
    published: dict[str, str] = field(default_factory=dict)  # data set -> published figure
    baseline: str = ""  # the registered name of the model it is compared against, if any

    def value(self, metrics: dict[str, Any]) -> float | None:
        """The headline metric in a metrics file's contents (None when it is not there)."""
        value: Any = metrics
        for key in self.headline:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value)


@dataclass(frozen=True)
class Project:
    name: str  # the folder's name, the MLflow experiment
    title: str
    params: tuple[str, ...]  # params.yaml sections it owns
    data: tuple[str, ...]  # download stages (data/raw/<name>) it reads
    dataset: str  # the data set its results are on, unless its metrics file says ("dataset")
    models: tuple[Model, ...]
    figures: tuple[str, ...]  # folders under reports/ whose PNGs the report shows
    seed_params: tuple[str, ...]  # dotted params that seed its training
    stages: dict[str, Any]  # dvc.yaml stages, without the code deps (the generator adds them)
    plots: tuple[dict[str, Any], ...] = ()  # dvc.yaml top-level plots
    smoke: dict[str, Any] = field(default_factory=dict)  # params for a run of seconds
    probe: dict[str, str] = field(default_factory=dict)  # numerics probe label -> module:callable

    @property
    def folder(self) -> Path:
        return PACKAGE / self.name

    def model(self, folder: Path | str) -> Model:
        """The declared model trained into `folder`."""
        wanted = Path(folder).as_posix().rstrip("/")
        for model in self.models:
            if model.folder == wanted:
                return model
        raise UserError(f"{wanted}: not a model folder of project {self.name} (its models: "
                        f"{', '.join(model.folder for model in self.models)})")


def _require(raw: dict[str, Any], key: str, where: Path) -> Any:
    if key not in raw:
        raise UserError(f"{where}: '{key}' is missing; see the README, \"Add a project\"")
    return raw[key]


def _model(project: str, name: str, raw: dict[str, Any], where: Path) -> Model:
    kind = _require(raw, "input", where)
    if kind not in INPUTS:
        raise UserError(f"{where}: models.{name}.input is {kind!r}; use one of {', '.join(INPUTS)}")
    return Model(name=name, project=project, folder=_require(raw, "folder", where),
                 label=_require(raw, "label", where), metrics=_require(raw, "metrics", where),
                 headline=tuple(str(_require(raw, "headline", where)).split(".")), input=kind,
                 published=dict(raw.get("published") or {}),
                 baseline=str(raw.get("baseline") or ""))


def read(path: Path) -> Project:
    """The project declared in `path` (a project.yaml)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{path}: not a readable project declaration ({error})") from None
    name = path.parent.name
    models = tuple(_model(name, model, spec, path)
                   for model, spec in (_require(raw, "models", path) or {}).items())
    return Project(name=name, title=_require(raw, "title", path),
                   params=tuple(_require(raw, "params", path)), data=tuple(raw.get("data") or ()),
                   dataset=_require(raw, "dataset", path), models=models,
                   figures=tuple(raw.get("figures") or ()),
                   seed_params=tuple(_require(raw, "seed_params", path)),
                   stages=dict(_require(raw, "stages", path)), plots=tuple(raw.get("plots") or ()),
                   smoke=dict(raw.get("smoke") or {}), probe=dict(raw.get("probe") or {}))


@cache
def declared() -> tuple[Project, ...]:
    """Every declared project, by folder name."""
    return tuple(read(path) for path in sorted(PACKAGE.glob(f"*/{DECLARATION}")))


def project(name: str) -> Project:
    """The project named `name` (its folder under src/dlprojects)."""
    path = PACKAGE / name / DECLARATION
    if not path.is_file():
        known = ", ".join(p.name for p in declared())
        raise UserError(f"no project '{name}' (declared: {known}); a project is a folder with a "
                        f"{DECLARATION}")
    return read(path)


def models() -> tuple[Model, ...]:
    """Every declared model, project by project."""
    return tuple(model for declared_project in declared() for model in declared_project.models)


def model_of(folder: Path | str) -> Model | None:
    """The declared model trained into `folder` (a path relative to the project root), or None."""
    wanted = Path(folder).as_posix().rstrip("/")
    return next((model for model in models() if model.folder == wanted), None)


def smoke_params() -> dict[str, Any]:
    """Every project's smoke-sized params (sections to merge into params.yaml): the whole
    pipeline in minutes, each stage for real."""
    merged: dict[str, Any] = {}
    for declared_project in declared():
        merged |= declared_project.smoke
    return merged
