"""Lineage both ways between MLflow runs and the code and data that made them.

    python -m dlprojects.lineage run <run_id>    # commit, stage, data hashes, how to restore them
    python -m dlprojects.lineage exp <name>      # the MLflow runs of a DVC experiment
    python -m dlprojects.lineage model <folder>  # the runs that wrote the model in a folder
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from dlprojects import tracking
from dlprojects.errors import UserError, run_main


def _client():
    import mlflow

    uri = tracking.tracking_uri()
    tracking.check_reachable(uri)
    return mlflow.MlflowClient(uri)


def describe_run(client, run_id: str) -> str:
    """What made run `run_id`, and the commands that restore its code and data."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run {run_id!r} in {tracking.tracking_uri()}; list runs in "
                        f"the UI (make ui) or set MLFLOW_TRACKING_URI to the store that has it"
                        ) from None
    tags = run.data.tags
    commit, stage = tags.get("git.commit", "unknown"), tags.get("dvc.stage", "")
    data = {key.removeprefix("data."): value for key, value in sorted(tags.items())
            if key.startswith("data.")}
    experiment = client.get_experiment(run.info.experiment_id).name
    lines = [f"run         {run_id} ({experiment}, {run.info.status.lower()})",
             f"git commit  {commit}" + ("  (the tree had uncommitted changes)"
                                        if tags.get("git.dirty") == "true" else ""),
             f"dvc stage   {stage or '(run outside dvc repro)'}"]
    if tags.get("dvc.exp_name"):
        lines.append(f"dvc exp     {tags['dvc.exp_name']}")
    lines += [f"data        {path}  {digest}" for path, digest in data.items()]
    lines += ["", "restore:", f"  git checkout {commit}",
              f"  dvc checkout {stage}   # from the local cache, or:" if stage else
              "  dvc checkout   # from the local cache, or:",
              f"  dvc pull {stage}" if stage else "  dvc pull"]
    return "\n".join(lines)


def describe_experiment(client, name: str) -> str:
    """The MLflow runs tagged with DVC experiment `name`, and its commit when DVC knows it."""
    runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string=f"tags.`dvc.exp_name` = '{name.replace(chr(39), '')}'")
    if not runs:
        raise UserError(f"no MLflow run is tagged with DVC experiment {name!r}; "
                        f"`dvc exp show` lists the experiments")
    lines = [f"dvc exp {name}: {len(runs)} MLflow run(s)"]
    for run in runs:
        metrics = run.data.metrics
        shown = ", ".join(f"{key} {metrics[key]:.4f}" for key in ("test_accuracy",
                                                                   "best_val_accuracy")
                          if key in metrics)
        lines.append(f"  {run.info.run_id}  {run.data.tags.get('dvc.stage', '')}  {shown}")
    found = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"],
                           capture_output=True, text=True)
    if found.returncode == 0 and f'"{name}"' in found.stdout:
        lines.append(f"restore: dvc exp apply {name}   (or: dvc exp branch {name} <branch>)")
    return "\n".join(lines)


def describe_model(client, folder: Path) -> str:
    """Every run whose train stage wrote exactly the model now in `folder` (its digest)."""
    if not folder.is_dir() or not any(folder.iterdir()):
        raise UserError(f"{folder} holds no model; give a train stage's out, e.g. models/vit, "
                        f"and run `dvc pull` or `dvc repro` first")
    experiments = [experiment.name for experiment in client.search_experiments()]
    runs = [run for name in experiments
            for run in tracking.runs_of_model(client, name, folder, newest_first=False)]
    if not runs:
        raise UserError(f"no MLflow run in {tracking.tracking_uri()} wrote the model in {folder}; "
                        f"it was trained against another tracking store")
    lines = [f"{folder}: model digest {tracking.model_digest(folder)[:16]}, written by "
             f"{len(runs)} run(s), oldest first"]
    lines += [f"  {run.info.run_id}  {run.data.tags.get('dvc.stage', '')}  "
              f"commit {run.data.tags.get('git.commit', 'unknown')[:12]}" for run in runs]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="an MLflow run id").add_argument("run_id")
    sub.add_parser("exp", help="a DVC experiment name").add_argument("name")
    sub.add_parser("model", help="a model folder, e.g. models/vit").add_argument("folder",
                                                                                   type=Path)
    args = parser.parse_args()
    client = _client()
    if args.command == "run":
        print(describe_run(client, args.run_id))
    elif args.command == "exp":
        print(describe_experiment(client, args.name))
    else:
        print(describe_model(client, args.folder))


if __name__ == "__main__":
    run_main(main)
