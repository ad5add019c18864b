"""A sweep's finished configurations ranked by their mean over seeds, with Student's interval,
and whether the best beats the runner-up and params.yaml's own configuration (Welch)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from dlprojects.core.parsing import PARAMS_FILE, read_params
from dlprojects.experiments import dotted
from dlprojects.sweep.space import Sweep

@dataclass(frozen=True)
class Configuration:
    number: int
    params: dict[str, Any]  # the swept keys' values
    values: list[float]  # the headline figure, by seed
    trials: list[str]

    @property
    def mean(self) -> float:
        return statistics.mean(self.values)

    def interval(self, level: float = 0.95) -> tuple[float, float] | None:
        """Student's t interval of the mean over seeds (None with one seed)."""
        if len(self.values) < 2:
            return None
        from scipy.stats import t

        margin = t.ppf((1 + level) / 2, len(self.values) - 1) * statistics.stdev(
            self.values) / math.sqrt(len(self.values))
        return self.mean - margin, self.mean + margin

    def label(self, sweep: Sweep) -> str:
        return f"{sweep.name}-{self.number:02d}: " + ", ".join(
            f"{key}={value}" for key, value in self.params.items())


def rank(sweep: Sweep, done: dict[str, dict[str, Any]]) -> list[Configuration]:
    """Finished configurations (every seed done), best mean first."""
    grouped: dict[int, list[tuple[int, str]]] = {}
    for name in done:
        configuration, seed = sweep.parse_trial(name)
        grouped.setdefault(configuration, []).append((seed, name))
    ranking = []
    for number, entries in grouped.items():
        names = [name for _, name in sorted(entries)]
        if len(names) < sweep.seeds:
            continue
        first = done[names[0]]["params"]
        params = {key: dotted(first, key) for key in sweep.space}
        ranking.append(Configuration(number, params, [done[n]["value"] for n in names], names))
    return sorted(ranking, key=lambda found: (-found.mean, found.number))


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table(sweep: Sweep, ranking: list[Configuration]) -> list[str]:
    """The ranking as lines: mean and 95% interval over seeds, each seed's figure; then whether
    the best beats the runner-up and params.yaml's configuration (the one with its values of the
    keys the sweep varies)."""
    from dlprojects.core.significance import across_seeds, verdict

    keys = list(sweep.space)
    head = ["rank", "configuration", *keys, "mean", "95% interval", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for place, found in enumerate(ranking, start=1):
        interval = found.interval()
        shown_interval = "-" if interval is None else (
            f"[{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]")
        lines.append("| " + " | ".join([
            str(place), f"{sweep.name}-{found.number:02d}",
            *(_value(found.params[key]) for key in keys),
            f"{100 * found.mean:.2f}", shown_interval,
            " ".join(f"{100 * value:.2f}" for value in found.values)]) + " |")
    current = read_params(PARAMS_FILE)
    varied = [key for key in keys if not isinstance(sweep.space[key], list)
              or len(sweep.space[key]) > 1]  # a key of one value holds for every configuration
    default = next((found for found in ranking if all(
        found.params[key] == dotted(current, key) for key in varied)), None)
    for other, what in ((ranking[1] if len(ranking) > 1 else None, "the runner-up"),
                        (default, "params.yaml's configuration")):
        if other is None or other is ranking[0] or sweep.seeds < 2:
            continue
        result = across_seeds(other.values, ranking[0].values)
        lines.append(
            f"best ({sweep.name}-{ranking[0].number:02d}) against {what} "
            f"({sweep.name}-{other.number:02d}): {100 * (result.mean_b - result.mean_a):+.2f} "
            f"points, 95% interval [{100 * result.low:+.2f}, {100 * result.high:+.2f}], Welch p "
            f"= {result.p_value:.3g}: "
            + verdict(result.low, result.high, result.p_value, 0.05).replace(
                "B better", "the best is better").replace("A better", f"{what} is better"))
    return lines
