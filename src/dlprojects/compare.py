"""Whether B beats A, or the difference is noise: test accuracy compared on the same test
examples, from the predictions the evaluate stages write.

    python -m dlprojects.compare reports/<project>/predictions.csv other/predictions.csv
    python -m dlprojects.compare seed-1:reports/<project>/predictions.csv \
                                 seed-2:reports/<project>/predictions.csv
    python -m dlprojects.compare A1,A2,A3 B1,B2,B3      # several seeds a side

A side is a predictions CSV (`index`, `label`, `predicted`, ...): a path in the workspace, or
`REV:path` at a git revision or DVC experiment (`dvc exp show` names them; read through DVC's
cache, as `dvc.api.read` does). One run a side: the paired difference in accuracy with its 95%
confidence interval and McNemar's exact test on the examples the two get differently. Several a
side (seeds): each side's mean, the difference of means with Welch's 95% interval, and the paired
test of each pair. The verdict is "B better", "A better" or "no significant difference" at the
level `--alpha` (default 0.05).
"""

from __future__ import annotations

import argparse
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlprojects.core.errors import UserError, run_main

COLUMNS = ("index", "label", "predicted")


@dataclass(frozen=True)
class Predictions:
    name: str
    index: np.ndarray  # test example numbers
    correct: np.ndarray  # bool, per example

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def read_predictions(source: str) -> Predictions:
    """The predictions of `source`: a CSV path, or REV:path at a git revision or DVC experiment."""
    rev, _, path = source.rpartition(":") if ":" in source and not Path(source).exists() else (
        "", "", source)
    if rev:
        import dvc.api
        from dvc.exceptions import DvcException

        try:
            data = dvc.api.read(path, rev=rev, mode="rb")
        except DvcException as error:
            raise UserError(f"{source}: {' '.join(str(error).split())[:200]}") from None
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise UserError(f"{source}: cannot read it ({error.strerror or error}); run `dvc "
                            f"repro` (or `dvc pull`) so the evaluate stage writes it") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{source}: not a predictions file of an evaluate stage (not UTF-8 text, "
                        f"byte {error.start})") from None
    import pandas as pd

    try:
        frame = pd.read_csv(io.StringIO(text), usecols=list(COLUMNS))
        index, label, predicted = (frame[column].to_numpy(np.int64) for column in COLUMNS)
    except (ValueError, KeyError, pd.errors.ParserError) as error:
        raise UserError(f"{source}: not a predictions file of an evaluate stage (columns "
                        f"{', '.join(COLUMNS)}): {' '.join(str(error).split())[:120]}") from None
    if len(frame) == 0:
        raise UserError(f"{source}: holds no predictions")
    return Predictions(source, index, label == predicted)


@dataclass(frozen=True)
class Paired:
    """B against A on the same test examples."""

    n: int
    accuracy_a: float
    accuracy_b: float
    only_a: int  # examples A gets right and B wrong
    only_b: int
    low: float  # 95% (1 - alpha) interval of accuracy_b - accuracy_a
    high: float
    p_value: float  # McNemar's exact test

    @property
    def difference(self) -> float:
        return self.accuracy_b - self.accuracy_a


def paired(a: Predictions, b: Predictions, alpha: float = 0.05) -> Paired:
    """The difference in accuracy on the same examples: Wald's interval for paired proportions
    (Agresti, Categorical Data Analysis, 10.1) and McNemar's exact (binomial) test."""
    from scipy.stats import binomtest, norm

    if len(a.index) != len(b.index) or not np.array_equal(a.index, b.index):
        raise UserError(f"{a.name} and {b.name} are predictions on different test examples "
                        f"({len(a.index)} and {len(b.index)}); compare runs of one evaluate "
                        f"stage on one test set")
    n = len(a.index)
    only_a, only_b = int((a.correct & ~b.correct).sum()), int((b.correct & ~a.correct).sum())
    difference = (only_b - only_a) / n
    spread = math.sqrt(max((only_a + only_b) / n - difference ** 2, 0.0) / n)
    z = float(norm.ppf(1 - alpha / 2))
    discordant = only_a + only_b
    p_value = binomtest(only_b, discordant, 0.5).pvalue if discordant else 1.0
    return Paired(n, a.accuracy, b.accuracy, only_a, only_b, difference - z * spread,
                  difference + z * spread, float(p_value))


@dataclass(frozen=True)
class AcrossSeeds:
    mean_a: float
    mean_b: float
    low: float
    high: float
    p_value: float  # Welch's t-test


def across_seeds(a: list[float], b: list[float], alpha: float = 0.05) -> AcrossSeeds:
    """The difference of mean accuracy over seeds, with Welch's interval and test."""
    from scipy.stats import t, ttest_ind

    if min(len(a), len(b)) < 2:
        raise UserError("across seeds needs at least two runs a side; give one run a side for "
                        "the paired test")
    mean_a, mean_b = float(np.mean(a)), float(np.mean(b))
    var_a, var_b = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    spread = math.sqrt(var_a + var_b)
    if spread == 0:
        same = mean_a == mean_b
        return AcrossSeeds(mean_a, mean_b, mean_b - mean_a, mean_b - mean_a, 1.0 if same else 0.0)
    freedom = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    margin = float(t.ppf(1 - alpha / 2, freedom)) * spread
    p_value = float(ttest_ind(b, a, equal_var=False).pvalue)
    return AcrossSeeds(mean_a, mean_b, mean_b - mean_a - margin, mean_b - mean_a + margin, p_value)


def verdict(low: float, high: float, p_value: float, alpha: float) -> str:
    if p_value < alpha and low > 0:
        return "B better"
    if p_value < alpha and high < 0:
        return "A better"
    return "no significant difference"


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


def report(sides_a: list[Predictions], sides_b: list[Predictions], alpha: float) -> list[str]:
    """The comparison, as lines to print."""
    level = f"{100 * (1 - alpha):g}%"
    lines = []
    pairs = [paired(a, b, alpha) for a, b in zip(sides_a, sides_b)]
    for a, b, result in zip(sides_a, sides_b, pairs):
        lines += [f"A {a.name}: {100 * result.accuracy_a:.2f}% of {result.n}",
                  f"B {b.name}: {100 * result.accuracy_b:.2f}%",
                  f"  B - A {points(result.difference)} points, {level} interval "
                  f"[{points(result.low)}, {points(result.high)}]; right in A only "
                  f"{result.only_a}, in B only {result.only_b}; McNemar p = "
                  f"{result.p_value:.3g}: "
                  f"{verdict(result.low, result.high, result.p_value, alpha)}"]
    if len(sides_a) > 1:
        seeds = across_seeds([side.accuracy for side in sides_a],
                             [side.accuracy for side in sides_b], alpha)
        lines += [f"over seeds: A {100 * seeds.mean_a:.2f}% ({len(sides_a)} runs), B "
                  f"{100 * seeds.mean_b:.2f}% ({len(sides_b)} runs); B - A "
                  f"{points(seeds.mean_b - seeds.mean_a)} points, {level} interval "
                  f"[{points(seeds.low)}, {points(seeds.high)}]; Welch p = {seeds.p_value:.3g}: "
                  f"{verdict(seeds.low, seeds.high, seeds.p_value, alpha)}"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="predictions CSV, REV:path, or several joined by commas")
    parser.add_argument("b", help="the same for B")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="the significance level (default: %(default)s)")
    args = parser.parse_args()
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha {args.alpha} must be between 0 and 1, e.g. 0.05")
    sides_a, sides_b = (args.a.split(","), args.b.split(","))
    if len(sides_a) != len(sides_b):
        raise UserError(f"{len(sides_a)} runs for A and {len(sides_b)} for B; give as many a "
                        f"side (seed n of A is paired with seed n of B)")
    print("\n".join(report([read_predictions(s) for s in sides_a],
                           [read_predictions(s) for s in sides_b], args.alpha)))


if __name__ == "__main__":
    run_main(main)
