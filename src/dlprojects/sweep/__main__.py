"""`python -m dlprojects.sweep run|show|page` (see `dlprojects.sweep`)."""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import zlib
from pathlib import Path
from typing import Any

import dlprojects.sweep
from dlprojects.core.errors import UserError, database_reason, run_main
from dlprojects.sweep.ranking import Configuration, rank, table
from dlprojects.sweep.space import STATE, Sweep, configurations, load
from dlprojects.sweep.trials import ParentRun, Runner, finished, trials_of

def run(sweep: Sweep, workers: int, storage: str | None) -> list[Configuration]:
    # Optuna's storage first: one that refuses the sweep stops it before any MLflow run is made
    study = _study(sweep, storage or _local_storage(sweep)) if sweep.method == "optuna" else None
    parent = ParentRun(sweep)
    runner = Runner(sweep, workers, parent)
    if study is not None:
        done = _run_optuna(sweep, runner, parent, study, shared=storage is not None)
    else:
        trials = [trial for number, values in enumerate(configurations(sweep))
                  for trial in trials_of(sweep, number, values)]
        print(f"sweep {sweep.name}: {len(trials) // sweep.seeds} configurations x {sweep.seeds} "
              f"seeds = {len(trials)} trials, {workers} at a time", flush=True)
        done = runner.run(trials)
        parent.adopt(sorted(done))
        missing = [trial.name for trial in trials if trial.name not in done]
        if missing:
            raise UserError(f"{len(missing)} trials failed ({', '.join(missing[:4])}); see "
                            f"{runner.folder}/<trial>.log, then run the sweep again to retry them")
    ranking = rank(sweep, done)
    parent.finish(ranking)
    return ranking


def _local_storage(sweep: Sweep) -> str:
    """This clone's own study: SQLite in the sweep's state folder."""
    (STATE / sweep.name).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(STATE / sweep.name / 'optuna.db').resolve()}"


def _run_optuna(sweep: Sweep, runner: Runner, parent: ParentRun, study,
                shared: bool) -> dict[str, dict[str, Any]]:
    """Ask Optuna for configurations, `runner.workers` at a time, run their seeds, tell it each
    configuration's mean; a restarted sweep first finishes the configurations it had asked for."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    worker = f"{socket.gethostname()}:{Path.cwd()}"
    # the same draws on every fresh start; a restarted (or another machine's) sweep draws on
    # from where the study stands, not the first draws again
    seed = sweep.sampler_seed + len(study.trials) + (zlib.crc32(worker.encode()) if shared else 0)
    study.sampler = optuna.samplers.TPESampler(seed=seed % 2 ** 32)
    distributions = {key: CategoricalDistribution(values) if isinstance(values, list)
                     else values.distribution() for key, values in sweep.space.items()}
    done: dict[str, dict[str, Any]] = {}
    while True:
        trials = study.get_trials(deepcopy=False)
        mine = [trial for trial in trials if trial.state == TrialState.RUNNING
                and trial.user_attrs.get("worker") == worker]
        taken = sum(trial.state != TrialState.WAITING for trial in trials)  # failed ones too
        while len(mine) < runner.workers and taken < sweep.trials:
            asked = study.ask(distributions)
            asked.set_user_attr("worker", worker)
            mine.append(asked)
            taken += 1
        if not mine:
            return done or finished(sweep)
        batch = [trial for asked in mine for trial in trials_of(sweep, asked.number,
                                                                dict(asked.params))]
        done = runner.run(batch)
        parent.adopt(sorted(name for name in done))
        for asked in mine:
            values = [done.get(sweep.trial_name(asked.number, seed), {}).get("value")
                      for seed in range(sweep.seeds)]
            if None in values:
                study.tell(asked.number, state=TrialState.FAIL)
                print(f"configuration {asked.number} failed; see {runner.folder}", flush=True)
            else:
                study.tell(asked.number, statistics.mean(values))


def _study(sweep: Sweep, storage: str):
    """The sweep's Optuna study in `storage`, made when new; one line when the storage refuses."""
    import optuna
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    for attempt in range(3):
        try:
            return optuna.create_study(study_name=sweep.name, storage=storage,
                                       direction="maximize", load_if_exists=True)
        except sqlalchemy.exc.SQLAlchemyError as error:
            # workers on several machines that make the study's tables at once collide: one
            # wins, and the others find its tables when they try again
            made_at_once = isinstance(error, (sqlalchemy.exc.IntegrityError,
                                              sqlalchemy.exc.ProgrammingError))
            if made_at_once and attempt < 2:
                continue
            where = sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
            raise UserError(f"Optuna's storage {where} refused the sweep "
                            f"({database_reason(error)})") from None


def compare(sweep: Sweep, a: str, b: str) -> list[str]:
    """`python -m dlprojects.compare` of two configurations' predictions, seed n with seed n."""
    from dlprojects.compare import read_predictions, report
    from dlprojects.sweep.page import predictions_file

    done, path, sides = finished(sweep), predictions_file(sweep.model), []
    for name in (a, b):
        number = name.removeprefix(f"{sweep.name}-")
        trials = [sweep.trial_name(int(number), seed) for seed in range(sweep.seeds)
                  if number.isdigit()]
        if not trials or any(trial not in done for trial in trials):
            raise UserError(f"{name}: not a configuration of sweep {sweep.name} with every seed "
                            f"finished (`python -m dlprojects.sweep show <its file>` lists them)")
        sides.append([read_predictions(f"{trial}:{path}") for trial in trials])
    return report(*sides, alpha=0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=dlprojects.sweep.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the sweep's trials (again: the rest)")
    run_parser.add_argument("file", type=Path)
    run_parser.add_argument("--workers", type=int, default=1,
                            help="trials at a time on this machine (default: %(default)s; each "
                                 "stage already uses its params' threads)")
    run_parser.add_argument("--storage", default=os.environ.get("DLPROJECTS_SWEEP_STORAGE"),
                            help="Optuna's study storage URL, shared by the workers of every "
                                 "machine (default: $DLPROJECTS_SWEEP_STORAGE, which a team "
                                 "colleague's `team env` sets; else a SQLite file in "
                                 ".dvc/tmp/sweeps/<name>/, this clone's alone)")
    run_parser.add_argument("--dry-run", action="store_true",
                            help="check the sweep file and print its trials, run nothing")
    show_parser = commands.add_parser("show", help="the ranked configurations")
    show_parser.add_argument("file", type=Path)
    pair = commands.add_parser("compare", help="configuration B against A: seed by seed on the "
                                               "same test examples, and over seeds")
    pair.add_argument("file", type=Path)
    pair.add_argument("a", help="a configuration: its number (04) or name (<sweep>-04)")
    pair.add_argument("b")
    page_parser = commands.add_parser("page", help="write the comparison page of one or more "
                                                   "sweeps")
    page_parser.add_argument("files", type=Path, nargs="+")
    page_parser.add_argument("--output", type=Path, help="default: reports/sweeps/<name>.html "
                                                         "(of the first file)")
    args = parser.parse_args()
    if args.command == "page":
        from dlprojects.sweep.page import write_page

        sweeps = [load(file) for file in args.files]
        output = args.output or Path("reports/sweeps") / f"{sweeps[0].name}.html"
        write_page([(sweep, rank(sweep, finished(sweep))) for sweep in sweeps], output)
        print(f"{output}: open it in a browser (it needs no network)")
        return
    sweep = load(args.file)
    if args.command == "compare":
        print("\n".join(compare(sweep, args.a, args.b)))
        return
    if args.command == "run":
        if args.workers < 1:
            raise UserError(f"--workers {args.workers}: give at least 1")
        if args.dry_run:
            for number, values in enumerate(configurations(sweep)
                                            if sweep.method != "optuna" else []):
                for trial in trials_of(sweep, number, values):
                    print(" ".join(trial.command()))
            return
        ranking = run(sweep, args.workers, args.storage)
    else:
        ranking = rank(sweep, finished(sweep))
    if not ranking:
        raise UserError(f"sweep {sweep.name}: no configuration has finished every seed yet; "
                        f"`python -m dlprojects.sweep run {args.file}`")
    print("\n".join(table(sweep, ranking)))


if __name__ == "__main__":
    run_main(main)
