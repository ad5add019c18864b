"""A sweep file read and checked: its model, method, seeds and space (`load`), and the
configurations of a grid or random sweep (`configurations`)."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlprojects.core.errors import UserError
from dlprojects.core.parsing import PARAMS_FILE, ConfigError, read_params, shown
from dlprojects.core.projects import Model, models, project

METHODS = ("grid", "random", "optuna")
KEYS = {"model", "method", "trials", "seeds", "sampler_seed", "params"}
STATE = Path(".dvc/tmp/sweeps")  # logs, the running trials, Optuna's default study storage
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Span:
    """A range of values: floats (on a log scale with `log`), or integers."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def draw(self, rng) -> float | int:
        if self.integer:
            return int(rng.integers(int(self.low), int(self.high) + 1))
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return float(f"{value:.4g}")  # 4 significant digits: a readable -S value

    def distribution(self):
        from optuna.distributions import FloatDistribution, IntDistribution

        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Sweep:
    name: str
    model: Model
    method: str
    seeds: int
    trials: int
    sampler_seed: int
    space: dict[str, list[Any] | Span]
    seed_params: tuple[str, ...] = field(default=())

    def trial_name(self, configuration: int, seed: int) -> str:
        return f"{self.name}-{configuration:02d}-s{seed}"

    def parse_trial(self, name: str) -> tuple[int, int] | None:
        """(configuration, seed) of one of this sweep's trial names, else None."""
        found = re.fullmatch(rf"{re.escape(self.name)}-(\d+)-s(\d+)", name)
        return (int(found[1]), int(found[2])) if found else None

    def overrides(self, configuration: dict[str, Any], seed: int) -> dict[str, Any]:
        return {**configuration, **{key: seed for key in self.seed_params}}


def load(path: Path) -> Sweep:
    """The sweep in `path`, every value checked; UserError (one line) on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; sweeps live in experiments/sweeps/<name>.yaml")
    raw = read_params(path)
    where = path.as_posix()
    unknown = sorted(set(map(str, raw)) - KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {shown(unknown[0])}; a sweep has "
                        f"{', '.join(sorted(KEYS))}")
    if not NAME.fullmatch(path.stem):
        raise UserError(f"{where}: name the file with letters, digits, '.', '_' and '-' only: "
                        f"the trials are DVC experiments named after it")
    by_name = {model.name: model for model in models()}
    if raw.get("model") not in by_name:
        raise UserError(f"{where}: model {shown(raw.get('model'))} is not a declared model; one "
                        f"of {', '.join(by_name)}")
    model = by_name[raw["model"]]
    method = raw.get("method", "grid")
    if method not in METHODS:
        raise UserError(f"{where}: method {shown(method)}: use one of {', '.join(METHODS)}")
    numbers = {key: raw.get(key, default) for key, default in
               (("seeds", 1), ("trials", 0 if method == "grid" else None), ("sampler_seed", 0))}
    for key, value in numbers.items():
        if value is None:
            raise UserError(f"{where}: {key} is missing; method {method} needs it (a whole "
                            f"number, the configurations to try)")
        low = 0 if key != "seeds" and (key == "sampler_seed" or method == "grid") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{where}: {key} is {shown(value)}; give a whole number of at least "
                            f"{low}")
    owner = project(model.project)
    space = _space(raw.get("params"), owner.params, owner.seed_params, method, where)
    sweep = Sweep(path.stem, model, method, numbers["seeds"], numbers["trials"],
                  numbers["sampler_seed"], space, owner.seed_params)
    _check_values(sweep, where)
    return sweep


def _space(raw: Any, sections: tuple[str, ...], seed_params: tuple[str, ...], method: str,
           where: str) -> dict[str, list[Any] | Span]:
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{where}: params is empty; give at least one dotted key of params.yaml "
                        f"with its values")
    space: dict[str, list[Any] | Span] = {}
    for key, values in raw.items():
        key = str(key)
        name = f"{where}: params.{shown(key)}"
        if key.split(".")[0] not in sections:
            raise UserError(f"{name}: not a param of this model's project (its sections: "
                            f"{', '.join(sections)})")
        if key in seed_params:
            raise UserError(f"{name} is a seed param: set `seeds: N` to run each configuration "
                            f"with seeds 0 to N-1")
        if isinstance(values, list):
            if not values:
                raise UserError(f"{name}: the list is empty; give at least one value")
            scalars = (bool, int, float, str, type(None))
            if method == "optuna" and not all(isinstance(value, scalars) for value in values):
                raise UserError(f"{name}: optuna chooses among numbers, strings and booleans; "
                                f"use grid or random for lists of lists")
            space[key] = values
        elif isinstance(values, dict) and {"low", "high"} <= set(values) <= {"low", "high", "log"}:
            space[key] = _span(values, name)
            if method == "grid":
                raise UserError(f"{name}: grid takes lists of values; give a list, or use method "
                                f"random or optuna for a range")
        else:
            raise UserError(f"{name}: give a list of values, or a range {{low: ..., high: ..., "
                            f"log: true|false}}")
    return space


def _span(values: dict[str, Any], name: str) -> Span:
    low, high, log = values["low"], values["high"], values.get("log", False)
    numbers = [value for value in (low, high) if isinstance(value, (int, float))
               and not isinstance(value, bool)]
    if len(numbers) != 2 or not isinstance(log, bool):
        raise UserError(f"{name}: low and high must be numbers, log true or false")
    if not low < high:
        raise UserError(f"{name}: the range is empty (low {low} is not below high {high})")
    if log and low <= 0:
        raise UserError(f"{name}: a log range needs low above 0 (it is {low})")
    return Span(float(low), float(high), log, isinstance(low, int) and isinstance(high, int))


def _check_values(sweep: Sweep, where: str) -> None:
    """Each value of the space (each end of a range) in params.yaml, as its section checks it."""
    from dlprojects.experiments import apply

    params = read_params(PARAMS_FILE)
    for key, values in sweep.space.items():
        candidates = values if isinstance(values, list) else [
            int(values.low) if values.integer else values.low,
            int(values.high) if values.integer else values.high]
        for value in candidates:
            try:
                apply(params, {key: value})
            except ConfigError as error:
                raise UserError(f"{where}: {error}") from None


def configurations(sweep: Sweep) -> list[dict[str, Any]]:
    """Grid: every combination, in file order; random: `trials` draws."""
    if sweep.method == "grid":
        keys = list(sweep.space)
        return [dict(zip(keys, values)) for values in itertools.product(
            *(sweep.space[key] for key in keys))]
    import numpy as np

    rng = np.random.default_rng(sweep.sampler_seed)
    return [{key: values[int(rng.integers(len(values)))] if isinstance(values, list)
             else values.draw(rng) for key, values in sweep.space.items()}
            for _ in range(sweep.trials)]
