"""The seed-spread table (`make seeds`): figures per project from each seed's experiment."""

from __future__ import annotations

import json
import statistics

import pytest

from dlprojects import seeds


def _runs(values: dict[str, list[float]]) -> dict[int, dict[str, float | None]]:
    count = len(next(iter(values.values())))
    return {seed: {label: series[seed] for label, series in values.items()}
            for seed in range(count)}


def test_table_gives_mean_spread_and_the_default_run():
    accuracies = [0.9045, 0.9031, 0.9052, 0.9040, 0.9019]
    text = seeds.table(_runs({"fashion": accuracies,
                              "fashion-baseline": [0.8974, 0.8980, 0.8960, 0.8991, 0.8970]}))
    row = next(line for line in text.splitlines() if line.startswith("| fashion |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    percent = [100 * value for value in accuracies]
    assert cells == ["fashion", "90.45", f"{statistics.mean(percent):.2f}",
                     f"{statistics.stdev(percent):.2f}", "90.19", "90.52", "5"]
    assert "fashion above fashion-baseline in 5 of 5 seeds." in text  # its declared baseline


def test_a_seed_whose_experiment_failed_is_left_out_and_counted():
    runs = _runs({"vit": [0.91, 0.92, 0.93]})
    runs[2]["vit"] = None
    row = next(line for line in seeds.table(runs).splitlines() if line.startswith("| vit"))
    assert row.endswith("| 2 |")


@pytest.mark.parametrize("metrics, expected", [
    ({"reports/vit/metrics.json": {"data": {"test_accuracy": 0.9126}}}, 0.9126),
    ({"reports/vit/metrics.json": {"data": {}}}, None),
    ({}, None),
])
def test_accuracy_read_from_dvc_exp_show_metrics(metrics, expected):
    assert seeds._row_values({"data": {"metrics": metrics}})["vit"] == expected


def _rev(seed: int, accuracy: float, epochs: int = 6) -> dict:
    """One revision as `dvc exp show --json` (DVC 3.67) gives it, trimmed to what is read."""
    seeds_params = {"train_backprop": {"seed": seed}, "train_fashion": {"loop": {"seed": seed}},
                    "train_vit": {"loop": {"seed": seed, "epochs": epochs}},
                    "train_sentiment": {"loop": {"seed": seed}}}
    return {"rev": "x", "name": None, "error": None, "data": {
        "params": {"params.yaml": {"data": seeds_params}},
        "metrics": {"reports/vit/metrics.json": {"data": {"test_accuracy": accuracy}}}}}


def test_collect_takes_finished_seed_experiments_only(monkeypatch):
    shown = [{**_rev(0, 0.91), "rev": "workspace"},
             {"rev": "c8f37c1", "name": "main", "experiments": [
                 {"name": "seed-1", "executor": None, "revs": [_rev(1, 0.92)]},
                 # still running: it shows its baseline's metrics, which are not seed 2's
                 {"name": "seed-2", "executor": {"state": "running"}, "revs": [_rev(2, 0.91)]},
                 {"name": "seed-3", "executor": {"state": "failed"}, "revs": [_rev(3, 0.5)]},
                 # a seed-4 whose params say otherwise is not seed 4
                 {"name": "seed-4", "executor": None, "revs": [_rev(0, 0.91)]},
                 {"name": "lr-sweep", "executor": None, "revs": [_rev(0, 0.8)]}]}]
    monkeypatch.setattr(seeds, "_dvc", lambda *args: json.dumps(shown))
    by_seed = seeds.collect()
    assert sorted(by_seed) == [0, 1]
    assert by_seed[1]["vit"] == 0.92 and by_seed[0]["vit"] == 0.91


def test_collect_leaves_out_seed_experiments_of_another_recipe(monkeypatch):
    shown = [{**_rev(0, 0.91), "rev": "workspace"},
             {"rev": "d3848ae", "name": "main", "experiments": [
                 {"name": "seed-1", "executor": None, "revs": [_rev(1, 0.92)]}]},
             {"rev": "c8f37c1", "name": None, "experiments": [  # an older commit: 10 ViT epochs
                 {"name": "seed-1", "executor": None, "revs": [_rev(1, 0.95, epochs=10)]},
                 {"name": "seed-2", "executor": None, "revs": [_rev(2, 0.95, epochs=10)]}]}]
    monkeypatch.setattr(seeds, "_dvc", lambda *args: json.dumps(shown))
    by_seed = seeds.collect()
    assert sorted(by_seed) == [0, 1] and by_seed[1]["vit"] == 0.92


def test_one_projects_new_recipe_leaves_the_others_seeds_standing(monkeypatch):
    """fashion's recipe changed after seeds 1 and 2 ran: their ViT figures still count, their
    fashion ones do not; seed-1-fashion, run on the new recipe, gives fashion's seed 1."""
    def rev(seed_of: dict[str, int], accuracy: float, fashion_lr: float = 0.003) -> dict:
        shown = _rev(0, accuracy)
        data = shown["data"]["params"]["params.yaml"]["data"]
        data["train_fashion"]["lr"] = fashion_lr
        for section, seed in seed_of.items():
            (data[section]["loop"] if "loop" in data[section] else data[section])["seed"] = seed
        shown["data"]["metrics"]["reports/fashion/metrics.json"] = {
            "data": {"improved": {"test_accuracy": accuracy - 0.01}}}
        return shown

    everyone = ("train_backprop", "train_fashion", "train_vit", "train_sentiment")
    shown = [{**rev({}, 0.91), "rev": "workspace"},
             {"rev": "d3848ae", "name": "main", "experiments": [
                 {"name": "seed-1-fashion", "executor": None,
                  "revs": [rev({"train_fashion": 1}, 0.935)]}]},
             {"rev": "c8f37c1", "name": None, "experiments": [  # fashion's lr was 0.002
                 {"name": f"seed-{seed}", "executor": None,
                  "revs": [rev(dict.fromkeys(everyone, seed), accuracy, 0.002)]}
                 for seed, accuracy in ((1, 0.93), (2, 0.94))]}]
    monkeypatch.setattr(seeds, "_dvc", lambda *args: json.dumps(shown))
    by_seed = seeds.collect()
    assert {seed: row.get("vit") for seed, row in by_seed.items()} == {0: 0.91, 1: 0.93, 2: 0.94}
    assert {seed: row.get("fashion") for seed, row in by_seed.items()} == \
        pytest.approx({0: 0.90, 1: 0.925, 2: None})


def test_run_seeds_some_projects_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(seeds, "_dvc", lambda *args: calls.append(args) or "")
    seeds.run([3], (seeds.project_named("fashion"),), poll_seconds=0)
    assert calls[0] == ("exp", "run", "--queue", "-n", "seed-3-fashion",
                        "-S", "train_fashion.loop.seed=3")


def test_run_judges_its_own_experiments_alone(monkeypatch):
    """An earlier run's failed seed-4, still listed by `dvc queue status`, is not this run's."""
    status = """Task     Name            Created    Status
9d0c1e2  seed-4-fashion  00:25 AM   Success
28908fb  seed-4          08:19 PM   Failed
"""
    monkeypatch.setattr(seeds, "_dvc", lambda *args: status if args[0] == "queue" else "")
    seeds.run([4], (seeds.project_named("fashion"),), poll_seconds=0)
    status = status.replace("Success", "Failed")
    with pytest.raises(seeds.UserError, match="^seed-4-fashion failed"):
        seeds.run([4], (seeds.project_named("fashion"),), poll_seconds=0)


def test_queue_states_take_the_newest_task_of_each_name(monkeypatch):
    status = """Task     Name    Created    Status
535906e  seed-1  08:18 PM   Running
14f85f9  seed-2  08:18 PM   Queued
c1c83d7  seed-1  06:17 PM   Success

Worker status: 1 active, 0 idle
"""
    monkeypatch.setattr(seeds, "_dvc", lambda *args: status)
    assert seeds._queue_states() == {"seed-1": "Running", "seed-2": "Queued"}


@pytest.mark.parametrize("command", [["seeds", "table"], ["experiments", "show"],
                                     ["sweep", "show", "experiments/sweeps/vit-lr-wd.yaml"]])
def test_no_dvc_on_path_is_one_line(tmp_path, command):
    """Where the project's .venv/bin is not on PATH, the commands that call dvc say so in one
    line, not a FileNotFoundError traceback."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", f"dlprojects.{command[0]}", *command[1:]],
                            cwd=root, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: dvc not found on PATH; run `make setup` and use the project's .venv/bin (or the "
        "make targets)"]
