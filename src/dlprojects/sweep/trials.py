"""A sweep's trials: each a `dvc exp run --temp`, at most N at a time, taken over after a killed
sweep process (`Runner`); the finished ones read back from `dvc exp show` (`finished`); their
MLflow runs nested under the sweep's parent run (`ParentRun`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlprojects.core.errors import UserError
from dlprojects.core.parsing import shown
from dlprojects.sweep.space import STATE, Sweep

if TYPE_CHECKING:
    from dlprojects.sweep.ranking import Configuration

@dataclass(frozen=True)
class Trial:
    name: str
    configuration: int
    seed: int
    overrides: dict[str, Any]

    def command(self) -> list[str]:
        from dlprojects.experiments import dvc_command

        command = dvc_command(self.name, self.overrides)  # dvc exp run -n <name> -S ...
        return [*command[:3], "--temp", *command[3:]]


def trials_of(sweep: Sweep, configuration: int, values: dict[str, Any]) -> list[Trial]:
    return [Trial(sweep.trial_name(configuration, seed), configuration, seed,
                  sweep.overrides(values, seed)) for seed in range(sweep.seeds)]


def finished(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """This sweep's finished trials: name -> {"value": its model's headline figure, "params":
    its params.yaml}. A trial is an experiment of whichever commit was checked out when it
    started (a commit made while a sweep runs does not run its finished trials again); where
    one name is on several commits, the newest commit's."""
    from dlprojects.experiments import run_dvc

    result = run_dvc(["dvc", "exp", "show", "--json", "--no-fetch", *_commits_with_trials(sweep)],
                     capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"`dvc exp show` failed: "
                        f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    done = {}
    for baseline in json.loads(result.stdout):
        for experiment in baseline.get("experiments") or []:
            name = experiment.get("name") or ""
            if sweep.parse_trial(name) is None or experiment.get("executor"):
                continue  # another experiment, or one still queued or running
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                metrics = ((data.get("metrics") or {}).get(sweep.model.metrics) or {})
                value = sweep.model.value(metrics.get("data") or {})
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                if value is not None and not rev.get("error"):
                    done.setdefault(name, {"value": value, "params": params})  # newest first
    return done


def _commits_with_trials(sweep: Sweep) -> list[str]:
    """`dvc exp show` options that cover every commit holding one of the sweep's trials (from the
    experiment refs git keeps, refs/exps/<commit>/<name>): the last N commits from HEAD, or all
    commits where one is off HEAD's line (slow on a long history)."""
    def git(*args: str) -> list[str]:
        found = subprocess.run(["git", *args], capture_output=True, text=True)
        return found.stdout.split() if found.returncode == 0 else []

    baselines = set()
    for ref in git("for-each-ref", "--format=%(refname)", "refs/exps"):
        parts = ref.split("/")
        if len(parts) == 5 and sweep.parse_trial(parts[4]) is not None:
            baselines.add(parts[2] + parts[3])
    line = git("rev-list", "--first-parent", "HEAD")
    if not baselines <= set(line):
        return ["--all-commits"]
    return ["-n", str(max((line.index(commit) for commit in baselines), default=0) + 1)]


class Runner:
    """Runs trials as `dvc exp run --temp`, at most `workers` at a time, each in a session of its
    own (recorded in .dvc/tmp/sweeps/<name>/running.json), so that a sweep process killed
    outright leaves trials a later one can take over."""

    def __init__(self, sweep: Sweep, workers: int, parent: ParentRun):
        self.sweep, self.workers, self.parent = sweep, workers, parent
        self.folder = STATE / sweep.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.record = self.folder / "running.json"

    def run(self, trials: list[Trial]) -> dict[str, dict[str, Any]]:
        """Run those of `trials` not yet finished; returns every finished trial of the sweep."""
        # alive first, finished second: a trial that ends between the two looks is then among
        # the finished ones, not run again (its runs deleted, its name refused by DVC)
        adopted = {name: pid for name, pid in self._recorded().items() if _alive(pid, name)}
        done = finished(self.sweep)
        waiting = [trial for trial in trials if trial.name not in done]
        for name in adopted:
            print(f"{name}: still running from an earlier sweep process; waiting for it",
                  flush=True)
        waiting = [trial for trial in waiting if trial.name not in adopted]
        running: dict[str, subprocess.Popen] = {}
        try:
            while waiting or running or adopted:
                while waiting and len(running) + len(adopted) < self.workers:
                    trial = waiting.pop(0)
                    running[trial.name] = self._start(trial)
                    self._save(running, adopted)
                for name, process in list(running.items()):
                    if process.poll() is not None:
                        del running[name]
                        state = "finished" if process.returncode == 0 else (
                            f"failed (see {self.folder / name}.log)")
                        print(f"{name}: {state}", flush=True)
                        self._save(running, adopted)
                for name, pid in list(adopted.items()):
                    if not _alive(pid, name):
                        del adopted[name]
                        self._save(running, adopted)
                time.sleep(1)
        except BaseException:  # Ctrl-C, SIGTERM: the trials stop with the sweep
            for process in running.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            for process in running.values():
                process.wait()
            self._save({}, adopted)
            raise
        return finished(self.sweep)

    def _start(self, trial: Trial) -> subprocess.Popen:
        print(f"{trial.name}: {' '.join(f'{k}={v}' for k, v in trial.overrides.items())}",
              flush=True)
        self.parent.discard(trial.name)
        log = open(self.folder / f"{trial.name}.log", "w")
        with log:
            return subprocess.Popen(trial.command(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def _recorded(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads(self.record.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save(self, running: dict[str, subprocess.Popen], adopted: dict[str, int]) -> None:
        from dlprojects.core.files import write_atomic

        write_atomic(self.record, json.dumps(
            {**adopted, **{name: process.pid for name, process in running.items()}}))


def _alive(pid: int, trial: str) -> bool:
    """Whether process `pid` is still the `dvc exp run` of `trial` (a pid is reused once the
    process is gone)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return trial.encode() in command



class ParentRun:
    """The sweep's MLflow run, in its model's project's experiment; each trial's runs (those
    tagged dvc.exp_name = the trial) are nested under it (tag mlflow.parentRunId)."""

    def __init__(self, sweep: Sweep):
        from dlprojects.core import tracking

        self.sweep = sweep
        self.client = tracking.connect(sweep.model.project)
        experiment = self.client.get_experiment_by_name(sweep.model.project)
        self.experiment = experiment.experiment_id
        found = self._parents()
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(self.experiment, run_name=f"sweep {sweep.name}", tags={
            "sweep.name": sweep.name, "sweep.role": "parent", "sweep.method": sweep.method,
            "sweep.model": sweep.model.name})
        self.run_id = run.info.run_id
        self.client.log_param(self.run_id, "seeds", sweep.seeds)
        for key, values in sweep.space.items():
            self.client.log_param(self.run_id, key, shown(
                values if isinstance(values, list) else vars(values), 250))

    def _parents(self) -> list:
        """The sweep's parent runs, the first made first: workers on several machines that start
        together can each make one before they see another's."""
        return self.client.search_runs(
            [self.experiment], filter_string=f"tags.`sweep.name` = '{self.sweep.name}' and "
                                             f"tags.`sweep.role` = 'parent'",
            order_by=["attributes.start_time ASC"])

    def _join_first(self) -> None:
        """Where another worker made the sweep's parent run first, fold this one into it."""
        first = self._parents()[0].info.run_id
        if first != self.run_id:
            self.client.set_tag(self.run_id, "sweep.role", "merged")
            self.client.set_tag(self.run_id, "sweep.merged_into", first)
            self.client.set_terminated(self.run_id, "FINISHED")
            self.run_id = first

    def adopt(self, trial_names: list[str]) -> int:
        """Nest every run of these trials under the parent; returns how many runs that is."""
        self._join_first()
        count = 0
        for name in trial_names:
            configuration, seed = self.sweep.parse_trial(name)
            for found in self._runs_of(name):
                tags = {"mlflow.parentRunId": self.run_id, "sweep.name": self.sweep.name,
                        "sweep.configuration": str(configuration), "sweep.seed": str(seed)}
                for tag, value in tags.items():
                    if found.data.tags.get(tag) != value:
                        self.client.set_tag(found.info.run_id, tag, value)
                count += 1
        return count

    def _runs_of(self, trial: str) -> list:
        """The MLflow runs of `trial` (tag dvc.exp_name), but those set aside by `discard`."""
        return [found for found in self.client.search_runs(
            [self.experiment], filter_string=f"tags.`dvc.exp_name` = '{trial}'")
            if "sweep.discarded" not in found.data.tags]

    def discard(self, trial: str) -> None:
        """Delete the runs of an earlier attempt at `trial` that did not finish (its sweep was
        killed): the trial runs again, and its runs are its new attempt's alone."""
        from mlflow.exceptions import MlflowException

        for found in self._runs_of(trial):
            run_id = found.info.run_id
            try:
                self.client.delete_run(run_id)
                print(f"{trial}: deleted MLflow run {run_id} of an unfinished attempt", flush=True)
            except MlflowException as error:  # a team's colleague deletes no run: set it aside
                if error.error_code != "PERMISSION_DENIED":
                    raise
                if "mlflow.parentRunId" in found.data.tags:
                    self.client.delete_tag(run_id, "mlflow.parentRunId")
                self.client.set_tag(run_id, "sweep.discarded", "an unfinished attempt")
                self.client.set_terminated(run_id, "KILLED")
                print(f"{trial}: MLflow run {run_id} of an unfinished attempt set aside (KILLED, "
                      f"out of the sweep's parent run; deleting runs is the admin's)", flush=True)

    def finish(self, ranking: list[Configuration]) -> None:
        if ranking:
            best = ranking[0]
            self.client.log_metric(self.run_id, "best_mean", best.mean)
            self.client.set_tag(self.run_id, "sweep.best", best.label(self.sweep))
        self.client.set_terminated(self.run_id, "FINISHED")
