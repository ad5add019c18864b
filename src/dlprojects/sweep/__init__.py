"""Sweeps over any project's params: grid, random or Optuna (TPE) search, several seeds a
configuration, every trial a DVC experiment and an MLflow run under the sweep's parent run.

    python -m dlprojects.sweep run experiments/sweeps/<name>.yaml [--workers N]  # make sweep
    python -m dlprojects.sweep show experiments/sweeps/<name>.yaml   # ranked, with 95% intervals
    python -m dlprojects.sweep page experiments/sweeps/<name>.yaml   # the comparison page

A sweep file names the model whose headline test figure ranks the configurations, the method
and the space (dotted params.yaml keys of that model's project):

    model: vit                   # a declared model (`make exps` lists their headlines)
    method: optuna               # grid (every combination), random or optuna (TPE)
    trials: 8                    # random and optuna: configurations to try
    seeds: 3                     # runs a configuration: seeds 0, 1, 2 of its project's seed params
    sampler_seed: 0              # random and optuna: the draws repeat
    params:
      train_vit.lr: [0.001, 0.002, 0.004]                          # values
      train_vit.weight_decay: {low: 0.01, high: 0.2, log: true}    # a range (random, optuna)

The whole space is checked before anything runs (an unknown key, an empty list or range, a value
its section refuses: one line). Trial `<name>-<configuration>-s<seed>` runs as `dvc exp run
--temp -n <trial> -S <key>=<value> ...`, at most `--workers` at a time; once it has finished it
is a DVC experiment (`dvc exp show`, `dvc exp apply <trial>`), its MLflow runs nested under the
sweep's parent run. Run again, a sweep skips the trials that finished and takes over the ones an
earlier, killed sweep process left running; Optuna's study (in `.dvc/tmp/sweeps/`, or `--storage`,
e.g. the team's PostgreSQL, for workers on several machines) goes on where it stopped.
"""
