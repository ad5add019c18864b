"""Whether B beats A, or the difference is noise: test accuracy compared on the same test
examples, from the predictions the evaluate stages write.

    python -m dlprojects.compare reports/<project>/predictions.csv other/predictions.csv
    python -m dlprojects.compare seed-1:reports/<project>/predictions.csv \
                                 seed-2:reports/<project>/predictions.csv
    python -m dlprojects.compare A1,A2,A3 B1,B2,B3      # several seeds a side
    python -m dlprojects.compare models:/<name>@champion models:/<name>/7   # registered versions
    python -m dlprojects.compare runs:/<run id> runs:/<run id>   # MLflow runs (their versions)

A side is a predictions CSV (`index`, `label`, `predicted`, ...): a path in the workspace, or
`REV:path` at a git revision or DVC experiment (`dvc exp show` names them; read through DVC's
cache, as `dvc.api.read` does); or a registered version, `models:/<name>/<version>` or
`models:/<name>@champion`, whose evaluate stage recorded which test examples it got right. One run
a side: the paired difference in accuracy with its 95% confidence interval and McNemar's exact test
on the examples the two get differently. Several a side (seeds): each side's mean, the difference
of means with Welch's 95% interval, and the paired test of each pair. The verdict is "B better", "A
better" or "no significant difference" at the level `--alpha` (default 0.05).
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlprojects.core import significance
from dlprojects.core.errors import UserError, run_main
from dlprojects.core.significance import AcrossSeeds, NotComparable, Paired, verdict

COLUMNS = ("index", "label", "predicted")


@dataclass(frozen=True)
class Predictions:
    name: str
    index: np.ndarray  # test example numbers
    correct: np.ndarray  # bool, per example
    examples: str = ""  # which test examples, in which order (`significance.examples_digest`)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def read_predictions(source: str) -> Predictions:
    """The predictions of `source`: a CSV path, REV:path at a git revision or DVC experiment, or
    a registered version (models:/<name>/<version> or models:/<name>@<alias>)."""
    if source.startswith(("models:/", "runs:/")):
        return registered(source)
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
    return Predictions(source, index, label == predicted, significance.examples_digest(label))


def registered(uri: str) -> Predictions:
    """A registered version's test results, from the tags its evaluate stage recorded; for
    runs:/<run id>, the version registered from that (training) run."""
    from mlflow.exceptions import MlflowException

    from dlprojects.core import registry
    from dlprojects.predict import connect_store

    if uri.startswith("runs:/"):
        connect_store(uri)
        import mlflow

        run_id = uri.removeprefix("runs:/").strip("/").split("/")[0]
        versions = mlflow.MlflowClient().search_model_versions(f"run_id = '{run_id}'")
        if not versions:
            raise UserError(f"{uri}: no registered version came from this run (an evaluate "
                            f"stage registers the model its training run wrote)")
        found = min(versions, key=lambda version: int(version.version))
        uri = f"models:/{found.name}/{found.version}"
    name, _, version = uri.removeprefix("models:/").partition("/")
    name, _, alias = name.partition("@")
    if not name or not (version or alias) or (version and alias):
        raise UserError(f"{uri}: name a version, models:/<name>/<version> or "
                        f"models:/<name>@<alias>")
    connect_store(uri)
    import mlflow

    client = mlflow.MlflowClient()
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, version))
    except MlflowException as error:
        raise UserError(f"{uri}: {str(error).splitlines()[0][:200]}") from None
    try:
        correct = significance.unpack(found.tags[registry.CORRECT])
        examples = found.tags[registry.EXAMPLES]
    except (KeyError, ValueError):
        raise UserError(f"{uri} (version {found.version}) records no per-example test results "
                        f"(registered by an older release); compare its predictions CSV") from None
    return Predictions(f"{uri} (version {found.version})", np.arange(len(correct)), correct,
                       examples)


def paired(a: Predictions, b: Predictions, alpha: float = 0.05) -> Paired:
    """B against A on the same test examples (`significance.paired`)."""
    if (len(a.index) != len(b.index) or not np.array_equal(a.index, b.index)
            or (a.examples and b.examples and a.examples != b.examples)):
        raise UserError(f"{a.name} and {b.name} are predictions on different test examples "
                        f"({len(a.index)} and {len(b.index)}); compare runs of one evaluate "
                        f"stage on one test set")
    return significance.paired(a.correct, b.correct, alpha)


def across_seeds(a: list[float], b: list[float], alpha: float = 0.05) -> AcrossSeeds:
    try:
        return significance.across_seeds(a, b, alpha)
    except NotComparable as error:
        raise UserError(str(error)) from None


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
