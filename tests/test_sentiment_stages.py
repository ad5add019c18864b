"""The three sentiment stage scripts end to end on a few dozen synthetic reviews and a tiny BERT,
then the predict command, and stage errors that stop before any work."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import runpy
import sys

import pytest
import yaml

from conftest import committed, merge
from test_sentiment import write_tiny_bert, write_tiny_imdb

pytestmark = pytest.mark.slow

SMALL = {  # over the committed params: the tiny BERT, few reviews, a small head
    "embed_imdb": {"train_samples": 40, "test_samples": 24, "seed": 0, "max_length": 64,
                   "truncation": "head_tail", "head_tokens": 16, "bert_layers": [-2, -1],
                   "batch_size": 8, "device": "cpu", "amp": True, "threads": 1},
    "train_sentiment": {"hidden_size": 16, "projection": 8, "patience": 2,
                        "loop": {"epochs": 3, "batch_size": 8, "device": "cpu", "threads": 1}},
    "evaluate_sentiment": {"examples": 6, "device": "cpu", "threads": 1, "log_model": True},
    "distributed": {},  # as committed: one process on the CPU
    "registry": {},  # as committed: champion on a significant gain
}
PARAMS = {section: merge(committed(section), values) for section, values in SMALL.items()}


MODULES = {"embed_imdb.py": "dlprojects.sentiment.embed",
           "train_sentiment.py": "dlprojects.sentiment.train",
           "evaluate_sentiment.py": "dlprojects.sentiment.evaluate",
           "predict_sentiment.py": "dlprojects.sentiment.__main__"}


def stage(script: str, *args: str) -> None:
    """Run a stage's module in this process, as `python -m <module> args` would (by its file:
    pytest's assertion rewriting loads the package's modules, and runpy cannot run those)."""
    argv = sys.argv
    sys.argv = [script, *args]
    try:
        runpy.run_path(importlib.util.find_spec(MODULES[script]).origin, run_name="__main__")
    finally:
        sys.argv = argv


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment")
    write_tiny_imdb(root / "data/raw/imdb", per_split=48)
    write_tiny_bert(root / "data/raw/bert")
    (root / "dvc.yaml").write_text("stages: {}\n")  # marks the project root (mlflow.db goes here)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        stage("embed_imdb.py", "data/raw/imdb", "data/raw/bert", "data/embeddings/imdb")
        stage("train_sentiment.py", "data/embeddings/imdb", "models/sentiment",
              "reports/sentiment/history.csv")
        stage("evaluate_sentiment.py", "data/embeddings/imdb", "data/raw/imdb", "data/raw/bert",
              "models/sentiment", "reports/sentiment")
        yield root


def test_the_stages_write_their_outs(project):
    meta = json.loads((project / "data/embeddings/imdb/meta.json").read_text())
    assert meta["splits"]["train"]["reviews"] == 40 and meta["splits"]["test"]["reviews"] == 24
    assert (project / "models/sentiment/model.safetensors").exists()
    history = list(csv.DictReader((project / "reports/sentiment/history.csv").open()))
    assert 1 <= len(history) <= 3 and "val_accuracy" in history[0]
    assert not any(key.startswith("test_") for key in history[0])  # the test split is seen once
    metrics = json.loads((project / "reports/sentiment/metrics.json").read_text())
    for key in ("test_accuracy", "test_f1", "test_roc_auc", "best_val_accuracy", "best_epoch"):
        assert 0 <= metrics[key] <= 3
    assert metrics["test_reviews"] == 24
    roc = list(csv.DictReader((project / "reports/sentiment/roc.csv").open()))
    assert list(roc[0]) == ["fpr", "tpr", "threshold"] and float(roc[-1]["tpr"]) == 1.0
    for name in ("pr.csv", "loss_curves.png", "roc_pr.png", "confusion.png", "examples.csv"):
        assert (project / "reports/sentiment" / name).stat().st_size > 0
    table = (project / "reports/sentiment/examples.md").read_text().splitlines()
    assert table[0].startswith("| P(positive) |") and len(table) == 2 + 6
    predictions = list(csv.DictReader((project / "reports/sentiment/predictions.csv").open()))
    assert list(predictions[0]) == ["index", "label", "predicted", "p_0", "p_1"]
    assert len(predictions) == 24
    right = sum(row["label"] == row["predicted"] for row in predictions)
    assert right / 24 == pytest.approx(metrics["test_accuracy"])


def test_train_and_evaluate_share_one_mlflow_run_and_the_model_is_registered(project):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    from dlprojects.core import lineage, tracking

    runs = tracking.runs_of_model(client, "sentiment", project / "models/sentiment")
    assert len(runs) == 1  # found from the model folder's digest
    run_id = runs[0].info.run_id
    run = client.get_run(run_id)
    assert {"val_accuracy", "test_accuracy", "test_roc_auc", "best_epoch"} <= set(run.data.metrics)
    assert run.data.params["embed_imdb.max_length"] == "64"
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/roc_pr.png" in artifacts and "evaluation/examples.md" in artifacts
    (version,) = client.search_model_versions("name = 'sentiment'")
    assert version.tags[lineage.MODEL_TAG] == lineage.model_digest(project / "models/sentiment")
    assert version.tags["test_accuracy"] == repr(run.data.metrics["test_accuracy"])
    assert int(client.get_model_version_by_alias("sentiment", "champion").version) == int(
        version.version)
    assert {entry.dataset.name for entry in run.inputs.dataset_inputs} == {
        "imdb-train", "imdb-validation", "imdb-test"}


def test_the_registered_model_scores_text_as_predict_does(project, monkeypatch):
    """models:/sentiment@champion carries the BERT: review text in, the predict command's figure out."""
    import mlflow
    import pandas as pd
    import torch

    from dlprojects.sentiment.predict import SentimentPredictor

    texts = ["great wonderful film", "awful boring waste"]
    monkeypatch.chdir(project)
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    try:
        frame = mlflow.pyfunc.load_model("models:/sentiment@champion").predict(
            pd.DataFrame({"review": texts}))
    finally:
        mlflow.set_tracking_uri(None)
    predictor = SentimentPredictor.load(project / "models/sentiment", project / "data/raw/bert",
                                        device=torch.device("cpu"))
    assert list(frame.columns) == ["negative", "positive", "label"]
    assert frame["positive"].to_numpy() == pytest.approx(predictor(texts), abs=1e-6)


def test_predict_prints_probabilities_and_rejects_empty_text(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    stage("predict_sentiment.py", "great wonderful film", "awful boring waste", "--threads", "1")
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and all(0 < float(p) < 1 for p in printed)
    with pytest.raises(SystemExit) as exit_:
        stage("predict_sentiment.py", "  ")
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: review 1 of 1 is empty (or only whitespace and <br /> tags); "
        "give the text of a review")


def test_predict_refuses_a_wordless_review_and_bytes_that_are_not_utf8(project, monkeypatch,
                                                                        capsys):
    """The checks `dlprojects.predict` and the served model make, before any model loads."""
    monkeypatch.chdir(project)
    for args, stdin, message in (
            (["\U0001f600\U0001f44d !!!"], b"", "error: review 1 of 1 has no words ("),
            (["-"], b"\xff\xfe\x00bad", "error: -: not UTF-8 text (byte 0)")):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        with pytest.raises(SystemExit) as exit_:
            stage("predict_sentiment.py", *args)
        assert exit_.value.code == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(message) and len(error.splitlines()) == 1, error


@pytest.mark.parametrize(("override", "message"), [
    ({"max_length": 600}, "error: embed_imdb.max_length: 600 exceeds the 128 positions of the "
                          "BERT in data/raw/bert; use at most 128"),
    ({"head_tokens": 70}, "error: embed_imdb.head_tokens: 70 must be in [0, max_length - 2 = 62]"),
])
def test_embed_stage_errors_are_one_line_and_write_nothing(project, monkeypatch, capsys, override,
                                                           message):
    monkeypatch.chdir(project)
    params = {**PARAMS, "embed_imdb": {**PARAMS["embed_imdb"], **override}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        with pytest.raises(SystemExit) as exit_:
            stage("embed_imdb.py", "data/raw/imdb", "data/raw/bert", "data/embeddings/other")
    finally:
        (project / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == message
    assert not (project / "data/embeddings/other").exists()
