"""The report stage: a self-contained page and a Markdown twin that name each result by its model
digest (runs of a real SQLite MLflow store exist beside it, and are not named)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from conftest import ROOT
from dlprojects import numerics
from dlprojects.core import lineage
from dlprojects.core.errors import UserError
from dlprojects.core.projects import models
from dlprojects.report import write_report

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def fake_results(root: Path, client: mlflow.MlflowClient) -> dict[str, str]:
    """Metrics, figures and one MLflow run per row, as the evaluate stages leave them."""
    run_ids = {}
    accuracy = 0.9
    for number, result in enumerate(models()):
        metrics_path = root / result.metrics
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        target = metrics
        for key in result.headline[:-1]:
            target = target.setdefault(key, {})
        target[result.headline[-1]] = accuracy + number / 1000
        if result.project == "vit":
            metrics["dataset"] = "fashion_mnist"
        metrics_path.write_text(json.dumps(metrics))
        (metrics_path.parent / "confusion.png").write_bytes(PNG)
        experiment = client.get_experiment_by_name(result.project)
        experiment_id = (experiment.experiment_id if experiment
                         else client.create_experiment(result.project))
        model_dir = root / result.folder
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "model.safetensors").write_text(f"weights {number}")
        run = client.create_run(experiment_id, tags={
            "git.commit": f"{number:040d}", "git.dirty": "false",
            lineage.MODEL_TAG: lineage.model_digest(model_dir)})
        run_ids[result.folder] = run.info.run_id
    return run_ids


RUN_ID = re.compile(r"\b[0-9a-f]{32}\b(?!\.dir)")  # an MLflow run id (a DVC hash ends .dir)


def test_the_page_is_self_contained_and_names_every_result_by_its_model_digest(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_ids = fake_results(tmp_path, client)
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        client.set_tag(run.info.run_id, "git.dirty", "true")  # trained before their commit
    page, readme = write_report(tmp_path)

    text, markdown = page.read_text(), readme.read_text()
    assert not re.search(r"<script|<link|@import|url\(|src=\"(?!data:image/png;base64,)", text)
    assert not re.search(r"https?://", text)
    for folder, run_id in run_ids.items():  # no run id, no "(dirty)": they do not travel
        digest = lineage.model_digest(tmp_path / folder)
        for shown in (text, markdown):
            assert run_id not in shown and digest in shown and digest[:12] in shown
    for shown in (text, markdown):
        assert not RUN_ID.search(shown) and "dirty" not in shown
    assert "python -m dlprojects.lineage model &lt;folder or digest&gt;" in text
    assert "`python -m dlprojects.lineage model <folder or digest>`" in markdown
    assert "90.00%" in text and "90.50%" in text  # first and last rows' accuracies
    assert "92.3% (small ViT from scratch)" in text and "91.58%" in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 5 and all(base64.b64decode(image) == PNG for image in images)
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown)
    assert links and all((tmp_path / "reports" / link).exists() for link in links)
    assert sorted(p.name for p in (tmp_path / "reports").iterdir() if p.is_file()) == [
        "README.md", "index.html", "lineage.json"]  # no partial file left behind


def test_the_lineage_table_gives_each_folder_its_digest_and_dvc_hash(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    fake_results(tmp_path, client)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train_vit:\n    cmd: x\n    outs:\n"
        "    - path: models/vit\n      hash: md5\n"
        "      md5: 0123456789abcdef0123456789abcdef.dir\n")
    _, readme = write_report(tmp_path)
    rows = {folder: (digest, dvc_hash) for folder, digest, dvc_hash in
            re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \| `([^`]+)` \|$",
                       readme.read_text(), flags=re.M)}
    assert sorted(rows) == sorted(result.folder for result in models())
    assert rows["models/vit"] == (lineage.model_digest(tmp_path / "models/vit"),
                                  "0123456789abcdef0123456789abcdef.dir")
    assert rows["models/sentiment"][1] == "not in dvc.lock"


def test_the_report_depends_on_the_results_only_not_on_the_tracking_store(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    fake_results(tmp_path, client)
    page, readme = write_report(tmp_path)
    before = page.read_bytes(), readme.read_bytes()
    for result in models():  # a forced retrain: new runs, byte-identical models
        experiment = client.get_experiment_by_name(result.project)
        client.create_run(experiment.experiment_id, tags={
            "git.commit": "f" * 40, "git.dirty": "false",
            lineage.MODEL_TAG: lineage.model_digest(tmp_path / result.folder)})
    (tmp_path / "mlflow.db").unlink()  # or another machine, with a store of its own
    page, readme = write_report(tmp_path)
    assert (page.read_bytes(), readme.read_bytes()) == before


def test_the_report_says_which_bytes_it_shows(tmp_path, monkeypatch):
    """Portable: no CPU named (the same page on every CPU); native: this CPU's own bytes."""
    fake_results(tmp_path, mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    monkeypatch.setattr(numerics, "mode", lambda: "portable")
    page, readme = write_report(tmp_path)
    assert "Numerics: portable, the same bytes on every x86-64 CPU" in readme.read_text()
    assert "Numerics: portable" in page.read_text()
    assert numerics.cpu()["model"] not in readme.read_text()
    monkeypatch.setattr(numerics, "mode", lambda: "native")
    page, readme = write_report(tmp_path)
    line = next(line for line in readme.read_text().splitlines() if "Numerics" in line)
    assert line.startswith("Numerics: native (DLPROJECTS_NUMERICS=native) on ")
    assert numerics.cpu()["model"] in line and "not the committed portable ones" in line


def test_a_missing_result_names_the_fix_and_writes_nothing(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    fake_results(tmp_path, client)
    (tmp_path / "reports/vit/metrics.json").unlink()
    with pytest.raises(UserError, match=r"vit/metrics.json not found; run `dvc repro`"):
        write_report(tmp_path)
    assert not (tmp_path / "reports/index.html").exists()


def test_the_stage_script_fails_in_one_line_without_results(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "pipeline/report.py"), str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                 "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ")
    assert "metrics.json not found; run `dvc repro`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
