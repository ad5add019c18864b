"""How much each result owes to its seed: every project's training over several seeds, each seed a
DVC experiment, and a table of the spread of test accuracy.

    python -m dlprojects.seeds run              # queue seeds 1-4 as DVC experiments, run them
    python -m dlprojects.seeds run --projects fashion   # only these projects' seeds: the other
                                                # stages are unchanged, so DVC skips them
    python -m dlprojects.seeds table            # reports/seeds.md from `dvc exp show --all-commits`

The report stage puts reports/seeds.md into reports/index.html and reports/README.md.

Seed 0 is the default run (the workspace's committed results). A seed sets initialisation,
dropout, batch order and augmentation of every training stage; the data splits (sentiment's
validation split included) and the embedded review subset stay those of params.yaml.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

from dlprojects.core.errors import UserError, run_main
from dlprojects.core.projects import Project, declared, models, project as project_named
from dlprojects.experiments import dotted, run_dvc

EXPERIMENT_PREFIX = "seed-"


def seed_params(projects: tuple[Project, ...] | None = None) -> tuple[str, ...]:
    """The dotted params that seed the training of `projects` (default: every declared one)."""
    return tuple(name for project in (projects or declared()) for name in project.seed_params)


def _dvc(*args: str) -> str:
    result = run_dvc(["dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"`dvc {' '.join(args)}` failed: "
                        f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return result.stdout


def run(seeds: list[int], projects: tuple[Project, ...] | None = None,
        poll_seconds: float = 30) -> None:
    """Queue one experiment per seed (named seed-<n>, or seed-<n>-<project>... for some projects
    only), start one queue worker (each stage already uses every core) and wait until the queue
    is empty."""
    suffix = "".join(f"-{project.name}" for project in projects or ())
    names = [f"{EXPERIMENT_PREFIX}{seed}{suffix}" for seed in seeds]
    for seed, name in zip(seeds, names):
        overrides = [arg for key in seed_params(projects) for arg in ("-S", f"{key}={seed}")]
        _dvc("exp", "run", "--queue", "-n", name, *overrides)
        print(f"queued {name}", flush=True)
    _dvc("queue", "start", "-j", "1")
    done: set[str] = set()
    while True:  # this run's experiments only: the queue also lists earlier runs' tasks
        states = {name: state for name, state in _queue_states().items() if name in names}
        for name, state in states.items():
            if state not in ("Queued", "Running") and name not in done:
                done.add(name)
                print(f"{name}: {state.lower()}", flush=True)
        if not any(state in ("Queued", "Running") for state in states.values()):
            break
        time.sleep(poll_seconds)
    failed = sorted(name for name, state in states.items() if state == "Failed")
    if failed:
        raise UserError(f"{', '.join(failed)} failed; see `dvc queue logs <name>`")


def _queue_states() -> dict[str, str]:
    """Experiment name -> Queued, Running, Success or Failed, from `dvc queue status` (newest
    task first: an earlier run of `make seeds` leaves its tasks listed under the same names)."""
    states: dict[str, str] = {}
    for line in _dvc("queue", "status").splitlines():
        words = line.split()
        if len(words) >= 3 and words[1].startswith(EXPERIMENT_PREFIX):
            states.setdefault(words[1], words[-1])
    return states


def collect() -> dict[int, dict[str, float | None]]:
    """Test accuracy per model, by seed: seed 0 from the workspace, others from seed-* runs. A run
    counts for a project where that project's params (its own sections and the shared ones) are
    the workspace's but for its seed: changing one project's recipe leaves the others' seeds
    standing, and an experiment of an older recipe, on an older commit, does not count."""
    shown = json.loads(_dvc("exp", "show", "--json", "--no-fetch", "--all-commits"))
    workspace = next(baseline for baseline in shown if baseline.get("rev") == "workspace")
    recipes = {project.name: _recipe(_params_of(workspace), project) for project in declared()}
    by_seed: dict[int, dict[str, float | None]] = {0: _row_values(workspace)}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            state = (experiment.get("executor") or {}).get("state", "success")
            if not (experiment.get("name") or "").startswith(EXPERIMENT_PREFIX) \
                    or state != "success":
                continue  # a queued or running experiment shows its baseline's metrics
            for rev in experiment.get("revs") or []:
                if not rev.get("error"):
                    _take(rev, recipes, by_seed)
    return by_seed


def _take(rev: dict[str, Any], recipes: dict[str, dict[str, Any]],
          by_seed: dict[int, dict[str, float | None]]) -> None:
    """Add an experiment's figures to `by_seed` for each project it ran at one seed (not 0, the
    workspace's) of the workspace's recipe; the newest commit's experiment first."""
    params, values = _params_of(rev), _row_values(rev)
    for project in declared():
        seeds = {dotted(params, key) for key in project.seed_params}
        if len(seeds) != 1 or _recipe(params, project) != recipes[project.name]:
            continue
        seed = seeds.pop()
        if isinstance(seed, int) and seed != 0:
            for model in project.models:
                if values.get(model.name) is not None:
                    by_seed.setdefault(seed, {}).setdefault(model.name, values[model.name])


def _params_of(rev: dict[str, Any]) -> dict[str, Any]:
    return ((rev.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data", {})


def _recipe(params: dict[str, Any], project: Project) -> dict[str, Any]:
    """What `project`'s stages read of `params` but its seeds: its own sections and those no
    project owns (downloads, distribution, registry)."""
    owned = {section for other in declared() for section in other.params}
    recipe = copy.deepcopy({section: value for section, value in params.items()
                            if section in project.params or section not in owned})
    for name in project.seed_params:
        *parents, key = name.split(".")
        target = dotted(recipe, ".".join(parents)) if parents else recipe
        if isinstance(target, dict):
            target.pop(key, None)
    return recipe


def _row_values(rev: dict[str, Any]) -> dict[str, float | None]:
    metrics = (rev.get("data") or {}).get("metrics") or {}
    return {model.name: model.value((metrics.get(model.metrics) or {}).get("data") or {})
            for model in models()}


def table(by_seed: dict[int, dict[str, float | None]]) -> str:
    seeds = sorted(by_seed)
    lines = ["# Test accuracy over seeds", "",
             f"Seeds {', '.join(map(str, seeds))} (`make seeds`: one DVC experiment per seed, "
             f"`dvc exp show`); seed 0 is the default run. Percent; the standard deviation is the "
             f"sample one (n - 1).", "",
             "| model | default run | mean | std | min | max | runs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for model in models():
        values = [100 * by_seed[seed][model.name] for seed in seeds
                  if by_seed[seed].get(model.name) is not None]
        if not values:
            continue
        default = by_seed.get(0, {}).get(model.name)
        spread = f"{statistics.stdev(values):.2f}" if len(values) > 1 else "-"
        lines.append(f"| {model.name} | {'-' if default is None else f'{100 * default:.2f}'} | "
                     f"{statistics.mean(values):.2f} | {spread} | {min(values):.2f} | "
                     f"{max(values):.2f} | {len(values)} |")
    if len(seeds) == 1:
        lines += ["", "Only the default run so far: `make seeds` runs seeds 1-4."]
    return "\n".join(lines + _baseline_lines(by_seed, seeds)) + "\n"


def _baseline_lines(by_seed: dict[int, dict[str, float | None]], seeds: list[int]) -> list[str]:
    """For each model declared against a baseline: in how many seeds it scored above it."""
    lines = []
    for model in models():
        if not model.baseline:
            continue
        wins = [by_seed[s][model.name] > by_seed[s][model.baseline] for s in seeds
                if by_seed[s].get(model.name) is not None
                and by_seed[s].get(model.baseline) is not None]
        if wins:
            lines += ["", f"{model.name} above {model.baseline} in {sum(wins)} of {len(wins)} "
                          f"seeds."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="queue and run one DVC experiment per seed")
    run_parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    run_parser.add_argument("--projects", nargs="+", metavar="PROJECT",
                            help="seed these projects alone (default: every project)")
    table_parser = commands.add_parser("table", help="write the spread of test accuracy")
    table_parser.add_argument("--output", type=Path, default=Path("reports/seeds.md"))
    args = parser.parse_args()
    if args.command == "run":
        run(args.seeds, tuple(project_named(name) for name in args.projects or ()) or None)
        return
    by_seed = collect()
    if not by_seed:
        raise UserError("no results in `dvc exp show`; run `dvc repro` first")
    args.output.write_text(table(by_seed))
    print(args.output.read_text(), end="")


if __name__ == "__main__":
    run_main(main)
