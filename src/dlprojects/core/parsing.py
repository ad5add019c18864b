"""Reading params.yaml into typed dataclasses: the checks every section shares.

`parse(cls, mapping, key)` builds dataclass `cls`, refusing unknown and missing keys, values of
the wrong type and values out of range, with a `ConfigError` that names the key (`train_vit.lr`).
A field's range is part of its type (`Annotated[int, Range(low=1)]`); what spans fields is checked
in the dataclass's `__post_init__` with `check`.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from dlprojects.core.errors import UserError

PARAMS_FILE = Path("params.yaml")


class ConfigError(UserError):
    """A params value that cannot work."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError for `key` unless `condition` holds (used in __post_init__)."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


# ----------------------------------------------------------------------------------------- ranges


@dataclass(frozen=True)
class Range:
    """The values a number may take: from `low` to `high` (open ends excluded); `zero` names
    what 0 means where 0 is allowed outside the range ("all", "none")."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    zero: str = ""

    def problem(self, value: float) -> str | None:
        if self.zero and value == 0:
            return None
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return None if above and below else f"{value} must be {self}"

    def __str__(self) -> str:
        if self.high is None:
            if self.zero:
                return f"0 ({self.zero}) or more"
            return {(0, True): "positive", (0, False): "0 or more"}.get(
                (self.low, self.low_open), f"at least {self.low}")
        interval = (f"{'(' if self.low_open else '['}{self.low}, "
                    f"{self.high}{')' if self.high_open else ']'}")
        return f"0 ({self.zero}) or in {interval}" if self.zero else f"in {interval}"


@dataclass(frozen=True)
class Sizes:
    """A non-empty list of widths, each at least 1 (`what` names one in messages)."""

    what: str = "layer size"

    def problem(self, values: list[int]) -> str | None:
        if not values:
            return "the layer list is empty; give at least one size"
        small = [value for value in values if value < 1]
        return f"{self.what} {small[0]} must be at least 1" if small else None


@dataclass(frozen=True)
class CountOrAuto:
    """A whole number from 1, or "auto" (chosen at run time)."""

    def problem(self, value: Any) -> str | None:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 1):
            return None
        return f"{shown(value)} must be auto or a whole number from 1"


Count = Annotated[int, Range(low=1)]
Processes = Annotated[object, CountOrAuto()]  # per node; auto: one per visible GPU, else 1
Samples = Annotated[int, Range(low=0, zero="all")]  # 0: all of them
Positive = Annotated[float, Range(low=0, low_open=True)]
NonNegative = Annotated[float, Range(low=0)]
Rate = Annotated[float, Range(low=0, high=1, high_open=True)]  # dropout, label smoothing
Shift = Annotated[int, Range(low=0, high=8)]  # random translations of up to this many pixels
Device = Literal["auto", "cpu", "cuda"]  # auto: CUDA when present, else the CPU
Layers = Annotated[list[int], Sizes()]


# ----------------------------------------------------------------------------------------- parsing


def read_params(params_file: Path | str = PARAMS_FILE) -> dict[str, Any]:
    path = Path(params_file)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root")
    restore = f"fix it or restore it with `git checkout {path}`"
    try:
        with path.open(encoding="utf-8") as f:
            params = yaml.safe_load(f)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}; {restore}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}); {restore}") from None
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"{path} holds a {type(params).__name__}, not sections of params "
                          f"(train_vit: ...); {restore}")
    return params or {}


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error shows it: its repr (one line), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def key_name(name: Any) -> str:
    """A key as an error shows it: as written if it is plain text, else its repr."""
    plain = isinstance(name, str) and name.isprintable() and name and name.strip() == name
    return name if plain else shown(name)


def parse(cls: type, data: Any, key: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and ranges."""
    if not isinstance(data, dict):
        raise ConfigError(f"{key}: expected a mapping, got {shown(data)}")
    hints = get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)  # YAML keys may be numbers or null
    if unknown:
        raise ConfigError(f"{key}.{key_name(unknown[0])}: unknown key (known: "
                          f"{', '.join(sorted(names))})")
    values = {name: _coerce(value, hints[name], f"{key}.{name}") for name, value in data.items()}
    missing = [name for name in names if name not in data]
    if missing:
        raise ConfigError(f"{key}.{missing[0]}: missing; add it to params.yaml (the project's "
                          f"params.yaml lists every param)")
    try:
        return cls(**values)
    except ConfigError as error:  # a __post_init__ check: prefix the section path
        raise ConfigError(f"{key}.{error}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin is Annotated:
        inner, *constraints = get_args(hint)
        value = _coerce(value, inner, key)
        for constraint in constraints:
            problem = constraint.problem(value)
            if problem:
                raise ConfigError(f"{key}: {problem}")
        return value
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, key)
    if origin is Literal:
        if value not in get_args(hint):
            choices = ", ".join(repr(a) for a in get_args(hint))
            raise ConfigError(f"{key}: {shown(value)} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {shown(value)}")
        (item,) = get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {shown(value)}")
        _, item = get_args(hint)
        return {name: _coerce(v, item, f"{key}.{key_name(name)}") for name, v in value.items()}
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
        raise ConfigError(f"{key}: expected {hint.__name__}, got {shown(value)}")
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
