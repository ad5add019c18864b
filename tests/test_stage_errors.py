"""Params that cannot work stop a stage before any work, in one line that names the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_stage(tmp_path: Path, section: str, override: dict, *args: str) -> subprocess.CompletedProcess:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[section] = {**params[section], **override}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True)


MODULES = {"train_fashion.py": "dlprojects.fashion.train",
           "train_backprop.py": "dlprojects.backprop.train",
           "train_sentiment.py": "dlprojects.sentiment.train"}


@pytest.mark.parametrize(("section", "override", "stage", "message"), [
    ("train_fashion", {"variants": {"improved": {"dropout": 1.0}}}, ["train_fashion.py", "improved"],
     "train_fashion.variants.improved.dropout: 1.0 must be in [0, 1)"),
    ("train_fashion", {"variants": {"improved": {"hidden": []}}}, ["train_fashion.py", "improved"],
     "train_fashion.variants.improved.hidden: the layer list is empty; give at least one size"),
    ("train_fashion", {}, ["train_fashion.py", "wide"],
     "train_fashion.variants: no variant 'wide' (known: baseline, improved)"),
    ("train_fashion", {"loop": {"device": "gpu"}}, ["train_fashion.py", "improved"],
     "train_fashion.loop.device: 'gpu' is not one of 'auto', 'cpu', 'cuda'"),
    ("train_backprop", {"mlp": {"hidden": [512, 0]}}, ["train_backprop.py", "mlp"],
     "train_backprop.mlp.hidden: layer size 0 must be at least 1"),
    ("train_backprop", {"mlp": {"activation": "swish"}}, ["train_backprop.py", "mlp"],
     "train_backprop.mlp.activation: 'swish' is not one of 'relu', 'tanh', 'sigmoid'"),
    ("train_backprop", {"cnn": {"training": {"lr": -0.1}}}, ["train_backprop.py", "cnn"],
     "train_backprop.cnn.training.lr: -0.1 must be positive"),
    ("train_backprop", {"mlp": {"training": {"optimizer": "lbfgs"}}}, ["train_backprop.py", "mlp"],
     "train_backprop.mlp.training.optimizer: 'lbfgs' is not one of 'sgd', 'adam'"),
])
def test_bad_params_fail_before_work(tmp_path, section, override, stage, message):
    script, name = stage
    result = run_stage(tmp_path, section, override, "-m", MODULES[script], name,
                       "data/raw/x", "models/x", "reports/x/history.csv")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


@pytest.mark.parametrize(("stage", "message"), [
    (["train_fashion.py", "improved", "data/raw/fashion_mnist", "models/f", "reports/f/history.csv"],
     "data/raw/fashion_mnist/FashionMNIST/raw not found; run `dvc repro download@fashion_mnist` first"),
    (["train_sentiment.py", "data/embeddings/imdb", "models/sentiment", "reports/s/history.csv"],
     "not found; run `dvc repro embed_imdb`"),
])
def test_a_missing_input_folder_names_the_stage_that_makes_it(tmp_path, stage, message):
    script, *args = stage
    result = run_stage(tmp_path, "train_fashion", {}, "-m", MODULES[script], *args)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written
