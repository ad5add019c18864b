"""Sweeps (`python -m dlprojects.sweep`): a bad space refused in one line before anything runs.
The sweeps themselves run on the smoke project in test_pipeline.py (its end)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from conftest import ROOT, tool_env

BAD = [  # a sweep file, and what its one-line refusal says
    ("model: nosuch\nparams: {train_vit.lr: [0.001]}\n", "is not a declared model"),
    ("model: vit\nparams: {train_vit.lr: []}\n", "the list is empty"),
    ("model: vit\nmethod: random\ntrials: 2\nparams: {train_vit.lr: {low: 0.01, high: 0.001}}\n",
     "the range is empty"),
    ("model: vit\nparams: {train_vit.lrate: [0.001]}\n", "train_vit.lrate: not a param"),
    ("model: vit\nparams: {train_fashion.lr: [0.001]}\n", "not a param of this model's project"),
    ("model: vit\nparams: {train_vit.lr: [0.001, -1]}\n", "train_vit.lr: -1"),
    ("model: vit\nparams: {train_vit.loop.seed: [1, 2]}\n", "is a seed param"),
    ("model: vit\nparams: {train_vit.lr: {low: 0.001, high: 0.01}}\n", "grid takes lists"),
    ("model: vit\nmethod: bayes\nparams: {train_vit.lr: [0.001]}\n", "use one of grid"),
    ("model: vit\nseeds: 0\nparams: {train_vit.lr: [0.001]}\n", "seeds is 0"),
    ("model: vit\nmethod: optuna\nparams: {train_vit.lr: [0.001]}\n", "trials is missing"),
    ("model: vit\nmethods: grid\nparams: {train_vit.lr: [0.001]}\n", "unknown key 'methods'"),
    ("model: vit\nparams: {train_vit.lr: [0.001\n", "is not valid YAML (line 3)"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_a_bad_sweep_is_one_line_and_runs_nothing(tmp_path, text, message):
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    result = subprocess.run([sys.executable, "-m", "dlprojects.sweep", "run", str(file)],
                            cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert not (ROOT / ".dvc/tmp/sweeps/bad").exists()


def test_an_unreachable_optuna_storage_is_one_line_without_its_password():
    """A shared study's PostgreSQL that refuses the connection: one line naming the storage, its
    password hidden, quoting the first line of the driver's reason."""
    from types import SimpleNamespace

    from dlprojects.core.errors import UserError
    from dlprojects.sweep.__main__ import _study

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = f"postgresql+psycopg2://ana:s3cret@127.0.0.1:{port}/optuna"
    with pytest.raises(UserError) as refused:
        _study(SimpleNamespace(name="lr"), storage)
    message = str(refused.value)
    assert message.startswith(f"Optuna's storage postgresql+psycopg2://ana:***@127.0.0.1:{port}/"
                              f"optuna refused the sweep (") and message.endswith(")"), message
    assert "s3cret" not in message and "\n" not in message and len(message) < 300, message


def test_a_refused_optuna_storage_stops_the_sweep_before_its_mlflow_run(monkeypatch):
    """The storage is opened first: a sweep it refuses leaves no parent run RUNNING behind."""
    from types import SimpleNamespace

    from dlprojects.core.errors import UserError
    from dlprojects.sweep import __main__ as sweep_main

    def parent_run(sweep):
        raise AssertionError("an MLflow parent run was made before the storage was checked")

    monkeypatch.setattr(sweep_main, "ParentRun", parent_run)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserError, match="refused the sweep"):
        sweep_main.run(SimpleNamespace(name="lr", method="optuna"), 1,
                       f"postgresql+psycopg2://ana:s3cret@127.0.0.1:{port}/optuna")
