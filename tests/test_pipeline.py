"""The whole pipeline from a fresh clone: `dvc repro` on smoke-sized params, then the DVC round trip."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dlprojects.core.projects import smoke_params

from conftest import (EXAMPLE_TAG, OFFLINE, ROOT, checkout_env, copy_working_tree, free_port,
                      merge, run, tool_env)
from dlprojects import numerics
from test_distributed import FASHION, assert_same_training, node
from test_numerics import _digests, _train_fashion, probe

pytestmark = [pytest.mark.slow, pytest.mark.network]


REGISTERED = {"backprop-mlp": "backprop/mlp", "backprop-cnn": "backprop/cnn",
              "fashion": "fashion/improved", "fashion-baseline": "fashion/baseline",
              "vit": "vit", "sentiment": "sentiment"}  # registered name: folder under models/
MODELS = (("backprop", "backprop/mlp"), ("backprop", "backprop/cnn"),
          ("fashion", "fashion/improved"), ("fashion", "fashion/baseline"), ("vit", "vit"),
          ("sentiment", "sentiment"))  # MLflow experiment, folder under models/


def assert_registered_once(root: Path) -> None:
    """Every registered model the README names has exactly one version, holding the model now in
    its folder (tag model.digest)."""
    import mlflow

    from dlprojects.core import lineage

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for name, folder in REGISTERED.items():
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == 1, f"{name}: {len(versions)} versions"
        digest = lineage.model_digest(root / "models" / folder)
        assert versions[0].tags[lineage.MODEL_TAG] == digest


def test_repro_runs_every_stage_and_a_second_repro_has_nothing_to_do(project):
    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    listed = run(["dvc", "stage", "list", "--name-only"], project).stdout.split()
    assert sorted(stages) == sorted(listed)
    started = time.perf_counter()
    again = run(["dvc", "repro"], project)
    seconds = time.perf_counter() - started
    assert "Data and pipelines are up to date." in again.stdout
    print(f"no-op dvc repro: {seconds:.1f} s")
    assert run(["dvc", "status"], project).stdout.strip() == "Data and pipelines are up to date."


# ------------------------------------------ bad input to a stage costs nothing (each test
# leaves the project as it found it)


def workspace_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under models/ and reports/, by path."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in ("models", "reports") for path in sorted((root / folder).rglob("*"))
            if path.is_file()}


def failed(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env={**tool_env(), **env}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode != 0, f"{' '.join(command)} succeeded:\n{result.stdout}"
    return result


@pytest.mark.parametrize(("stage", "override", "message"), [
    ("train_vit", {"train_vit": {"lr": -1}}, "error: train_vit.lr: -1.0 must be positive"),
    ("train_vit", {"train_vit": {"dataset": "svhn"}}, "data/raw/svhn"),  # DVC's: a missing dep
    ("train_fashion@improved", {"train_fashion": {"variants": {"improved": {"dropout": 1.0}}}},
     "error: train_fashion.variants.improved.dropout: 1.0 must be in [0, 1)"),
    ("embed_imdb", {"embed_imdb": {"max_length": 0}}, "error: embed_imdb.max_length"),
])
def test_a_bad_param_costs_no_output(project, stage, override, message):
    """DVC deletes a stage's outputs before running it unless they persist: with a refused
    param, `dvc repro -s` of the stage leaves the model, its history and every report as they
    were, and the stage is still recorded as up to date once the param is put back."""
    before, params = workspace_digest(project), project / "params.yaml"
    original = params.read_bytes()
    params.write_text(yaml.safe_dump(merge(yaml.safe_load(original), override), sort_keys=False))
    try:
        result = failed(["dvc", "repro", "-s", stage], project)
    finally:
        params.write_bytes(original)
    assert message in result.stdout + result.stderr
    assert workspace_digest(project) == before
    assert run(["dvc", "status"], project).stdout.strip() == "Data and pipelines are up to date."


def test_a_model_changed_after_training_is_refused_before_evaluation(project):
    """16 bytes flipped in the weights of models/vit: its bytes match no training run and not
    dvc.lock, so evaluate_vit refuses in one line before any work (no report rewritten, no
    registered version added)."""
    import mlflow

    weights = project / "models/vit/model.safetensors"
    original = weights.read_bytes()
    altered = bytearray(original)
    altered[-64:-48] = bytes(255 - b for b in altered[-64:-48])  # in the tensor data, not the header
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    versions = len(client.search_model_versions("name = 'vit'"))
    before = workspace_digest(project)
    weights.write_bytes(bytes(altered))
    try:
        result = failed(["dvc", "repro", "-s", "evaluate_vit"], project)
    finally:
        weights.write_bytes(original)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert lines == [lines[0]] and "models/vit: its files match no training run of 'vit'" in lines[0]
    assert workspace_digest(project) == before
    assert len(client.search_model_versions("name = 'vit'")) == versions
    assert run(["dvc", "status"], project).stdout.strip() == "Data and pipelines are up to date."


def test_an_unreachable_tracking_server_stops_evaluation_before_any_work(project):
    """The README: with the server down, evaluate says so before it writes anything, and
    predict from the registry says so in seconds, not minutes of retries."""
    before = workspace_digest(project)
    down = f"http://127.0.0.1:{free_port()}"
    result = failed(["dvc", "repro", "--force", "-s", "evaluate_fashion"], project,
                    MLFLOW_TRACKING_URI=down)
    assert f"error: MLflow tracking server {down} is unreachable" in result.stderr
    assert workspace_digest(project) == before
    image = project / "shoe.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    try:
        started = time.perf_counter()
        result = failed([sys.executable, "-m", "dlprojects.predict", "models:/fashion@champion",
                         str(image)], project, MLFLOW_TRACKING_URI=down)
        seconds = time.perf_counter() - started
    finally:
        image.unlink()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: MLflow tracking server {down} is "
                                                   f"unreachable (")
    assert seconds < 60  # start-up included; MLflow's own retries took 270 s
    assert run(["dvc", "status"], project).stdout.strip() == "Data and pipelines are up to date."


# ----------------------------------------- the torch stages as 2 processes, and on 2 "nodes"
# (before any test below changes the project)


@pytest.fixture(scope="module")
def two_processes(project, tmp_path_factory) -> Path:
    """The smoke project (conftest: trained as 1 process) with its torch stages run again as 2
    processes, by `dvc repro` (`distributed.processes: 2`)."""
    copy = tmp_path_factory.mktemp("distributed") / "project"
    shutil.copytree(project, copy, symlinks=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    (copy / "params.yaml").write_text(yaml.safe_dump(
        merge(params, {"distributed": {"processes": 2}}), sort_keys=False))
    result = run(["dvc", "repro", "--force", "-s", "train_fashion@improved", "train_vit",
                  "embed_imdb", "train_sentiment"], copy, timeout=1800)
    assert result.stdout.count("2 processes on this node") + \
        result.stderr.count("2 processes on this node") == 4
    return copy


@pytest.mark.parametrize("history", ["reports/fashion/improved/history.csv",
                                     "reports/vit/history.csv", "reports/sentiment/history.csv"])
def test_two_processes_train_as_one_does(project, two_processes, history):
    assert_same_training(project, two_processes, history)


def test_two_processes_embed_the_very_bytes_one_does(project, two_processes):
    store = "data/embeddings/imdb"
    for path in sorted((project / store).iterdir()):
        assert path.read_bytes() == (two_processes / store / path.name).read_bytes(), path.name


def test_rank_0_alone_writes_and_logs(two_processes):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{two_processes / 'mlflow.db'}")
    for project in ("fashion", "vit", "sentiment"):
        experiment = client.get_experiment_by_name(project).experiment_id
        runs = client.search_runs([experiment], filter_string="tags.processes = '2'")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert len(client.get_metric_history(runs[0].info.run_id, "train_loss")) >= 1
    assert not any((two_processes / "checkpoints").glob("*"))


def test_two_nodes_on_one_rendezvous_train_as_one_process(project, tmp_path):
    """Two launches of train_fashion (1 process each) as node 0 and node 1 of one rendezvous on
    127.0.0.1: node 0 writes what the 1-process run wrote; node 1 writes nothing."""
    nodes = [node(tmp_path / f"node{n}", project) for n in (0, 1)]
    topology = {"DLPROJECTS_NNODES": "2", "DLPROJECTS_RDZV_ENDPOINT": f"127.0.0.1:{free_port()}",
                "GLOO_SOCKET_IFNAME": "lo"}
    launched = [subprocess.Popen([sys.executable, "-m", *FASHION], cwd=folder, text=True,
                                 stderr=subprocess.PIPE,
                                 env={**tool_env(), **topology, "DLPROJECTS_NODE_RANK": str(n)})
                for n, folder in enumerate(nodes)]
    errors = [process.communicate(timeout=600)[1] for process in launched]
    assert [process.returncode for process in launched] == [0, 0], errors
    assert_same_training(project, nodes[0], FASHION[4])
    assert sorted(path.name for path in nodes[1].iterdir()) == ["data", "params.yaml"]


def test_an_unreachable_rendezvous_is_one_line(project, tmp_path):
    folder = node(tmp_path / "node1", project)
    result = subprocess.run(
        [sys.executable, "-m", *FASHION], cwd=folder,
        env={**tool_env(), "DLPROJECTS_NNODES": "2", "DLPROJECTS_NODE_RANK": "1",
             "DLPROJECTS_RDZV_ENDPOINT": f"127.0.0.1:{free_port()}",
             "DLPROJECTS_RDZV_TIMEOUT": "5"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: node 0 did not answer at "
                                            "DLPROJECTS_RDZV_ENDPOINT=127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(path.name for path in folder.iterdir()) == ["data", "params.yaml"]


@pytest.mark.skipif(not numerics.portable(), reason=numerics.summary())
def test_same_bytes_under_two_isa_ceilings(project, raw_data, tmp_path):
    """Fashion MLP (matrix products, batch norm), ViT (oneDNN convolution, attention), frozen BERT
    and the bi-GRU: the same model, history and embedding bytes with MKL capped at AVX2 as the
    smoke pipeline (conftest) made on this CPU's best instructions. Natively, the two differ on an
    Intel CPU with AVX-512 (the control, on the fashion MLP; MKL ignores MKL_ENABLE_INSTRUCTIONS
    on an AMD CPU, and there the capped native run gave the very bytes of the uncapped one).
    (Another vendor's CPU is what the numerics probe's committed hashes check.)"""
    capped = tmp_path / "capped"
    shutil.copytree(project, capped, symlinks=True)
    result = subprocess.run(["dvc", "repro", "--force", "-s", "train_fashion@improved",
                             "train_vit", "embed_imdb", "train_sentiment"], cwd=capped,
                            env={**tool_env(), "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = ["models/fashion/improved", "models/vit", "models/sentiment", "data/embeddings",
               "reports/fashion/improved/history.csv", "reports/vit/history.csv",
               "reports/sentiment/history.csv"]
    best, cap = ({name: _digests(root / name) if (root / name).is_dir()
                  else hashlib.sha256((root / name).read_bytes()).hexdigest()
                  for name in outputs} for root in (project, capped))
    assert best == cap, [name for name in best if best[name] != cap[name]]

    if probe(DLPROJECTS_NUMERICS="native")["aten"] != "AVX512" or \
            numerics.cpu()["vendor"] != "GenuineIntel":
        return  # the control needs an Intel CPU whose best is wider than AVX2
    project = copy_working_tree(tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    smoke = smoke_params()
    params["train_fashion"] = merge(params["train_fashion"], smoke["train_fashion"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / "data/raw").mkdir(parents=True)
    (project / "data/raw/fashion_mnist").symlink_to(raw_data / "fashion_mnist")
    native_best = _train_fashion(project, {"DLPROJECTS_NUMERICS": "native"})
    native_capped = _train_fashion(project, {"DLPROJECTS_NUMERICS": "native",
                                             "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                                             "ATEN_CPU_CAPABILITY": "avx2"})
    assert native_best != native_capped


def test_metrics_plots_and_mlflow_runs_exist(project):
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    shown = json.dumps(metrics)
    for name in ("backprop/mlp/metrics.json", "backprop/cnn/metrics.json", "fashion/metrics.json",
                 "sentiment/metrics.json", "vit/metrics.json"):
        assert name in shown
    fashion = json.loads((project / "reports/fashion/metrics.json").read_text())
    assert 0 < fashion["improved"]["test_accuracy"] <= 1
    assert "gain_over_baseline_points" in fashion["improved"]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    commit = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    every_run = []
    for experiment, count in (("backprop", 2), ("fashion", 2), ("sentiment", 1), ("vit", 1)):
        runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        assert len(runs) == count
        every_run += runs
        for found in runs:
            assert found.data.tags["git.commit"] == commit
            assert found.data.tags["numerics"] == numerics.mode()
            assert found.data.tags["cpu.vendor"] == numerics.cpu()["vendor"]
            assert found.data.tags["cpu.model"] == numerics.cpu()["model"]
            assert found.data.tags["dvc.stage"].startswith("train_")
            assert found.data.tags[next(t for t in found.data.tags if t.startswith("data."))].endswith(".dir")
            assert "test_accuracy" in found.data.metrics
    def training_seconds(found) -> float:  # from the run's start to its last epoch's metrics
        history = client.get_metric_history(found.info.run_id, "train_loss")
        return (max(m.timestamp for m in history) - found.info.start_time) / 1000
    # sampled every 0.2 s here (tool_env), every 10 s by default; a smoke run can be over before
    # the first sample (test_tracking holds a run open to see them always)
    for found in (found for found in every_run if training_seconds(found) >= 1):
        for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
            assert key in found.data.metrics, (found.data.tags["dvc.stage"], found.data.metrics)
    sentiment = json.loads((project / "reports/sentiment/metrics.json").read_text())
    assert sentiment["test_reviews"] == 80 and 0 <= sentiment["test_roc_auc"] <= 1
    examples = (project / "reports/sentiment/examples.md").read_text().splitlines()
    assert len(examples) == 2 + 4  # header, rule, evaluate_sentiment.examples rows
    vit = json.loads((project / "reports/vit/metrics.json").read_text())
    assert vit["dataset"] == "fashion_mnist" and 0 < vit["test_accuracy"] <= 1
    for figure in ("attention.png", "patches.png", "confusion.png", "loss_curves.png"):
        assert (project / "reports/vit" / figure).read_bytes()[:4] == b"\x89PNG"
    page = (project / "reports/index.html").read_text()
    readme = (project / "reports/README.md").read_text()
    for found in every_run:  # no run id, no "(dirty)": the report names each model by digest
        assert found.info.run_id not in page and found.info.run_id not in readme
        assert found.data.tags["model.digest"] in page and found.data.tags["model.digest"] in readme
    assert "dirty" not in page + readme
    lock = {out["path"]: out["md5"] for stage in yaml.safe_load(
        (project / "dvc.lock").read_text())["stages"].values() for out in stage.get("outs", [])}
    from dlprojects.core.lineage import model_digest

    for _, folder in MODELS:  # digest and DVC hash (as dvc.lock holds it once the pipeline ran)
        path = f"models/{folder}"
        assert f"| `{path}` | `{model_digest(project / path)}` | `{lock[path]}` |" in readme
    table = [line for line in readme.splitlines() if line.startswith("| ") and "%" in line]
    assert len(table) == 6 + 1 and "<script" not in page  # the example project's row too
    assert_registered_once(project)
    predicted = run([sys.executable, "-m", "dlprojects.sentiment", "A fine film."], project)
    assert 0 <= float(predicted.stdout.strip().splitlines()[-1]) <= 1


def test_an_added_project_is_everywhere_the_declared_ones_are(project, tmp_path):
    """README's "Add a project": the example's folder and params section, dvc.yaml written
    again, nothing else; `dvc repro` trained and evaluated it, and it is in the report,
    `dvc metrics show`, the seeds table, the registry with its alias, predict, HTTP serving and
    lineage."""
    import mlflow
    from PIL import Image

    from dlprojects.core.lineage import model_digest
    from test_serving import Served, post

    changed = run(["git", "diff", "--name-only", f"{EXAMPLE_TAG}~1", EXAMPLE_TAG],
                  project).stdout.split()
    assert {path for path in changed if not path.startswith("src/dlprojects/digits/")} == {
        "params.yaml", "dvc.yaml"}, changed
    digest = model_digest(project / "models/digits")
    readme = (project / "reports/README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| digits |"))
    assert "softmax regression | mnist |" in row and digest[:12] in row and "88.0%" in row
    assert "## digits" in readme and "digits/confusion.png" in readme
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    assert "reports/digits/metrics.json" in json.dumps(shown)
    seeds = run([sys.executable, "-m", "dlprojects.seeds", "table", "--output",
                 str(tmp_path / "seeds.md")], project).stdout
    accuracy = json.loads((project / "reports/digits/metrics.json").read_text())["test_accuracy"]
    assert f"| digits | {100 * accuracy:.2f} |" in seeds

    store = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(store)
    champion = client.get_model_version_by_alias("digits", "champion")
    assert champion.tags["model.digest"] == digest
    image = tmp_path / "digit.png"
    Image.fromarray(np.full((40, 40), 255, dtype=np.uint8)).save(image)
    for model in ("models/digits", "models:/digits@champion"):
        predicted = run([sys.executable, "-m", "dlprojects.predict", model, str(image)], project)
        header, line = predicted.stdout.strip().splitlines()[-2:]
        assert header.split(",")[:3] == ["file", "label", "0"] and line.startswith(str(image))
    with Served("models:/digits@champion", store, cwd=project) as server:
        status, answer = post(server.url, {"inputs": np.zeros((2, 28, 28), np.uint8).tolist()})
        assert status == 200 and len(answer["predictions"]) == 2, answer
    listed = run([sys.executable, "-m", "dlprojects.lineage", "model", "models/digits"],
                 project).stdout
    assert f"model digest  {digest}" in listed and "models:/digits@champion" in listed


def champion_inputs(project: Path, count: int = 8) -> dict:
    """{registered name: (raw inputs, the probabilities its evaluate stage wrote for them, atol)}:
    the first test images, or the first test reviews' text, of the smoke project."""
    from dlprojects.core.config import load_section
    from dlprojects.core.data.images import load_image_splits
    from dlprojects.sentiment.reviews import read_reviews
    from dlprojects.sentiment.store import load_split

    def written(path: str) -> np.ndarray:  # p_0.. of predictions.csv (6 decimals)
        return np.loadtxt(project / "reports" / path, delimiter=",", skiprows=1)[:count, 3:]

    def test_images(dataset: str, section: str) -> np.ndarray:
        data = load_section(section, project / "params.yaml").data
        return load_image_splits(dataset, project / "data/raw" / dataset,
                                 validation_size=data.validation_size, seed=data.seed,
                                 test_samples=data.test_samples).test_images[:count]

    digits = test_images("mnist", "train_backprop")
    clothes = test_images("fashion_mnist", "train_fashion")
    store = load_split(project / "data/embeddings/imdb", "test")
    texts, _ = read_reviews(project / "data/raw/imdb/test.jsonl")
    reviews = pd.DataFrame({"review": [texts[row] for row in store.rows[:count]]})
    return {"backprop-mlp": (digits, written("backprop/mlp/predictions.csv"), 1e-6),
            "backprop-cnn": (digits, written("backprop/cnn/predictions.csv"), 1e-6),
            "fashion": (clothes, written("fashion/predictions_improved.csv"), 1e-6),
            "fashion-baseline": (clothes, written("fashion/predictions_baseline.csv"), 1e-6),
            "vit": (test_images("fashion_mnist", "train_vit"), written("vit/predictions.csv"),
                    1e-6),
            # from the text, through the frozen BERT, against the stored fp16 states
            "sentiment": (reviews, written("sentiment/predictions.csv"), 1e-5)}


def test_every_champion_takes_raw_inputs_and_answers_as_its_evaluate_stage(project):
    """`models:/<name>@champion` from the project's store: raw test images (uint8) or review texts
    in, the probabilities the evaluate stage wrote out, in columns named by class."""
    import mlflow.pyfunc

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    try:
        for name, (inputs, expected, atol) in champion_inputs(project).items():
            frame = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(inputs)
            classes = [column for column in frame.columns if column != "label"]
            assert len(classes) == expected.shape[1] and frame["label"].isin(classes).all()
            np.testing.assert_allclose(frame[classes].to_numpy(), expected, atol=atol,
                                       err_msg=name)
    finally:
        mlflow.set_tracking_uri(previous)


def test_every_champion_is_served_over_http_and_refuses_a_bad_request(project):
    """`mlflow models serve -m models:/<name>@champion --env-manager local`, as the README shows:
    real requests, the same answers as the model loaded in this process (to 1e-5)."""
    import mlflow.pyfunc

    from test_serving import Served, post

    store = f"sqlite:///{project / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    try:
        for name, (inputs, _, _) in champion_inputs(project, count=4).items():
            uri = f"models:/{name}@champion"
            offline = mlflow.pyfunc.load_model(uri).predict(inputs)
            body = ({"inputs": inputs["review"].tolist()} if name == "sentiment"
                    else {"inputs": inputs.tolist()})
            with Served(uri, store, cwd=project) as server:
                status, answer = post(server.url, body)
                assert status == 200, (name, answer)
                served = pd.DataFrame(answer["predictions"])
                assert list(served.columns) == list(offline.columns)
                assert list(served["label"]) == list(offline["label"])
                classes = [column for column in offline.columns if column != "label"]
                np.testing.assert_allclose(served[classes], offline[classes], atol=1e-5)
                bad = {"inputs": [7]} if name == "sentiment" else {"inputs": "an image"}
                status, answer = post(server.url, bad)
                assert 400 <= status < 500 and answer["message"], (name, status)
                print(f"{uri}: served in {server.cold_start:.1f} s from a cold start")
    finally:
        mlflow.set_tracking_uri(previous)


# ------------------------------------------------ reproducible, and no fault loses work (#8)


def test_a_forced_rerun_repeats_its_bytes_and_registers_no_second_version(project):
    """Same params and seeds, same bytes: train_fashion@improved and evaluate_fashion run again (a
    second MLflow run of the model), the model and dvc.lock come out as they were, and the
    evaluate stage registers nothing new. (Every stage's bytes: the fresh-clone test below.)"""
    import mlflow

    from dlprojects.core import tracking

    lock = (project / "dvc.lock").read_text()
    model = project / "models/fashion/improved/model.safetensors"
    before = model.read_bytes()
    run(["dvc", "repro", "--force", "-s", "train_fashion@improved", "evaluate_fashion"], project,
        timeout=1800)
    assert model.read_bytes() == before
    assert (project / "dvc.lock").read_text() == lock
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    first, second = tracking.runs_of_model(client, "fashion", model.parent, newest_first=False)
    assert first.data.metrics["test_accuracy"] == second.data.metrics["test_accuracy"]
    assert_registered_once(project)


def test_a_fresh_clone_evaluates_and_registers_every_model_though_training_repeats_its_bytes(
        project):
    """A clone has no DVC cache and no mlflow.db: `dvc repro` retrains each model, to the very
    bytes dvc.lock records, and runs each evaluate stage too (their predictions are cached DVC
    outs, which a clone lacks), so its own store gets every run's test metrics and every
    registered model. The committed files come out as they were: nothing in them is tied to the
    machine that made them."""
    import mlflow

    from dlprojects.core import lineage, tracking

    # the results as they would be committed, on a branch: the project's HEAD and files stay
    index = project.parent / "results.index"
    git_env = {**tool_env(), "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "add", "-A"], cwd=project, env=git_env, check=True)
    tree = subprocess.run(["git", "write-tree"], cwd=project, env=git_env, check=True,
                          capture_output=True, text=True).stdout.strip()
    commit = run(["git", "commit-tree", tree, "-p", "HEAD", "-m", "results"], project).stdout
    run(["git", "branch", "-f", "results", commit.strip()], project)
    index.unlink()
    inputs = ["download@mnist", "download@fashion_mnist", "download@imdb", "download@bert",
              "plots_template"]  # data and the npm-built template: no download in this test
    run(["dvc", "push", *inputs], project)
    clone = project.parent / "clone-without-cache"
    run(["git", "clone", "-q", "-b", "results", str(project), str(clone)], project.parent)
    assert not (clone / ".dvc/cache").exists() and not (clone / "mlflow.db").exists()
    run(["dvc", "pull", *inputs], clone)

    started = time.perf_counter()
    output = run(["dvc", "repro"], clone, timeout=1800).stdout
    print(f"dvc repro in a fresh clone: {time.perf_counter() - started:.0f} s")
    for stage in ("train_vit", "evaluate_backprop@mlp", "evaluate_backprop@cnn",
                  "evaluate_fashion", "evaluate_vit", "evaluate_sentiment", "report"):
        assert f"Running stage '{stage}'" in output
    client = mlflow.MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    for name, folder in MODELS:
        digest = lineage.model_digest(clone / "models" / folder)
        assert digest == lineage.model_digest(project / "models" / folder)  # the same bytes
        (found,) = tracking.runs_of_model(client, name, clone / "models" / folder)
        assert "test_accuracy" in found.data.metrics and "val_accuracy" in found.data.metrics
    assert_registered_once(clone)
    changed = run(["git", "status", "--porcelain"], clone).stdout
    assert changed == "", f"files differ from the commit after dvc repro:\n{changed}"

    again = run(["dvc", "repro"], clone)
    assert "Data and pipelines are up to date." in again.stdout
    assert_registered_once(clone)
    assert run(["dvc", "status"], clone).stdout.strip() == "Data and pipelines are up to date."

    short = lineage.model_digest(clone / "models/vit")[:12]  # as reports/README.md shows it
    assert short in (clone / "reports/README.md").read_text()
    found = run([sys.executable, "-m", "dlprojects.lineage", "model", short], clone).stdout
    assert f"git commit    {commit.strip()} " in found and "written by 1 run(s)" in found
    assert "registered    models:/vit/1  models:/vit@champion" in found


@pytest.fixture(scope="module")
def side(project) -> Path:
    """A copy of the smoke project with its results committed, for tests that change params."""
    copy = project.parent / "side"
    shutil.copytree(project, copy, symlinks=True)
    run(["git", "add", "-A"], copy)
    run(["git", "commit", "-qm", "results"], copy)
    return copy


def ranks(parent: int) -> dict[int, int]:
    """{global rank: pid} of the torchrun workers below process `parent`."""
    found, queue = {}, [parent]
    while queue:
        pid = queue.pop()
        try:
            queue += map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = [entry for entry in environ if entry.startswith(b"RANK=")]
        if rank and any(entry.startswith(b"LOCAL_RANK=") for entry in environ):
            found[int(rank[0].split(b"=")[1])] = pid
    return found


def test_a_rank_killed_mid_epoch_resumes_under_dvc_repro_and_ends_as_if_never_killed(side):
    """train_fashion as 2 processes; rank 1 killed in epoch 2: `dvc repro` resumes from the
    checkpoint in the same MLflow run and ends with the bytes of a run never killed."""
    stage, checkpoint = "train_fashion@improved", side / "checkpoints/fashion-improved.npz"
    model = side / "models/fashion/improved/model.safetensors"
    history = side / "reports/fashion/improved/history.csv"
    params = yaml.safe_load((side / "params.yaml").read_text())
    params["train_fashion"] = merge(params["train_fashion"], {  # epochs of a couple of seconds
        "data": {"train_samples": 0}, "loop": {"epochs": 4, "threads": 1}})
    params["distributed"] = {"processes": 2}  # torchrun, 2 gloo processes
    (side / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    last_model = model.read_bytes() if model.exists() else None  # persists while a run fails
    try:
        killed = subprocess.Popen(["dvc", "repro", "-s", stage], cwd=side, env=tool_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while not checkpoint.exists():  # epoch 1 done and saved
            assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        time.sleep(0.5)  # into epoch 2
        workers = ranks(killed.pid)
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[1], signal.SIGKILL)  # one rank dies; torchrun stops the other
        output = killed.communicate(timeout=300)[0]
        assert killed.returncode != 0 and "Traceback" not in output, output
        lost = time.time() - checkpoint.stat().st_mtime
        # nothing half-written where the model goes: the last run's model, as it was
        assert (model.read_bytes() if model.exists() else None) == last_model

        resumed = run(["dvc", "repro", "-s", stage], side, timeout=600)
        output = resumed.stdout + resumed.stderr
        assert "resuming from checkpoints/fashion-improved.npz after epoch" in output
        assert "resuming MLflow run" in output  # the killed run goes on
        after_kill = model.read_bytes(), history.read_bytes()
        assert not checkpoint.exists()  # removed once the run was recorded

        never_killed = run(["dvc", "repro", "--force", "-s", stage], side, timeout=600)
        assert "resuming" not in never_killed.stdout + never_killed.stderr
        assert (model.read_bytes(), history.read_bytes()) == after_kill
        print(f"SIGKILL mid-epoch: {lost:.1f} s of training lost")
    finally:
        run(["git", "checkout", "--", "."], side)
        run(["dvc", "checkout", "-f"], side)


def test_queued_experiments_run_two_at_a_time_each_with_its_own_mlflow_run(side):
    import mlflow

    rates, epochs = ["0.001", "0.003"], 15  # a few seconds of logging each, at the same time
    for rate in rates:
        run(["dvc", "exp", "run", "--queue", "-S", f"train_fashion.lr={rate}",
             "-S", f"train_fashion.loop.epochs={epochs}", "-S", "train_fashion.loop.threads=1",
             "train_fashion@improved"], side)
    started = time.perf_counter()
    run(["dvc", "queue", "start", "-j", "2"], side)
    try:
        deadline = time.monotonic() + 900
        while True:
            status = run(["dvc", "queue", "status"], side).stdout
            if not re.search(r"\b(Queued|Running)\b", status):
                break
            assert time.monotonic() < deadline, f"the queue did not finish:\n{status}"
            time.sleep(2)
    finally:
        subprocess.run(["dvc", "queue", "stop"], cwd=side, env=tool_env(), capture_output=True)
    print(f"{len(rates)} queued experiments, 2 workers: {time.perf_counter() - started:.0f} s")
    tasks = re.findall(r"^(\w+)\s+\S+\s+.*\bSuccess\b", status, flags=re.M)
    assert len(tasks) == len(rates), status

    client = mlflow.MlflowClient(f"sqlite:///{side / 'mlflow.db'}")
    runs = [found for found in client.search_runs(
        [client.get_experiment_by_name("fashion").experiment_id],
        filter_string="tags.`dvc.exp_name` != ''") if "dvc.exp_name" in found.data.tags]
    assert sorted(found.data.params["lr"] for found in runs) == sorted(rates)
    for found in runs:  # every epoch of every run recorded: no lost metric, no locked database
        assert found.info.status == "FINISHED"
        for key in ("train_loss", "val_accuracy", "test_accuracy"):
            assert len(client.get_metric_history(found.info.run_id, key)) == epochs
    spans = sorted((found.info.start_time, found.info.end_time) for found in runs)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), \
        "no two experiments ran at the same time"
    shown = json.dumps(json.loads(run(["dvc", "exp", "show", "--json"], side).stdout))
    assert all(found.data.tags["dvc.exp_name"] in shown for found in runs)
    first, second = (f"{found.data.tags['dvc.exp_name']}:reports/fashion/predictions_improved.csv"
                     for found in runs)  # read at each experiment, through DVC's cache
    compared = run([sys.executable, "-m", "dlprojects.compare", first, second], side).stdout
    assert f"A {first}: " in compared and f"B {second}: " in compared and "McNemar p" in compared
    header = run([sys.executable, "-m", "dlprojects.experiments", "show", "--csv"],
                 side).stdout.splitlines()[0].split(",")  # make exps: the table at a glance
    from dlprojects.core.projects import models

    for model in models():  # each declared model's headline, and the params that differ
        assert any(column.endswith(".".join(model.headline)) for column in header), header
    assert {"train_fashion.lr", "train_fashion.loop.epochs"} <= set(header), header
    assert not [column for column in header if "per_class" in column or column.startswith(
        ("src/", "data/")) or column in ("train_vit.lr", "best_epoch")], header
    for task in tasks:
        logs = subprocess.run(["dvc", "queue", "logs", task], cwd=side, env=tool_env(),
                              capture_output=True, text=True).stdout
        assert "Reproducing experiment" in logs and "database is locked" not in logs


def test_dvc_plots_show_renders_offline_with_every_plot(project):
    run(["dvc", "plots", "show", "-o", "plots-html"], project)
    page = (project / "plots-html/index.html").read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:", page)  # no CDN
    assert page.count("vegaEmbed(") >= 12  # the combined figures and each history/curve file
    assert "FashionMNIST: train and test loss, baseline and improved" in page


def test_an_mlproject_entry_point_runs_its_stage(project):
    result = run(["mlflow", "run", ".", "-e", "stage", "-P", "name=report", "--env-manager",
                  "local"], project, timeout=600)
    assert "dvc repro report" in result.stderr + result.stdout
    assert "up to date" in result.stderr + result.stdout  # the stage had run: nothing to redo

    # a typed parameter runs the stage as a DVC experiment that both DVC and MLflow show
    run(["mlflow", "run", ".", "-e", "experiment", "-P", "stage=train_vit", "-P",
         "set=train_vit.loop.epochs=2", "--env-manager", "local"], project, timeout=900)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    latest = client.search_runs([client.get_experiment_by_name("vit").experiment_id],
                                order_by=["attributes.start_time DESC"], max_results=1)[0]
    name = latest.data.tags["dvc.exp_name"]
    assert latest.data.params["loop.epochs"] == "2" and "mlflow.project.run_id" in latest.data.tags
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    assert name in json.dumps(shown)
    listed = run([sys.executable, "-m", "dlprojects.lineage", "exp", name], project).stdout
    assert latest.info.run_id in listed and "train_vit" in listed


def test_push_then_pull_into_a_fresh_clone_restores_the_data(project):
    run(["dvc", "push"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "results"], project)
    clone = project.parent / "fresh-clone"
    run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    run(["dvc", "pull", "download@mnist", "download@fashion_mnist", "download@imdb",
         "download@bert"], clone)
    for name in ("mnist", "fashion_mnist", "imdb", "bert"):
        for original in (project / "data/raw" / name).rglob("*"):
            if original.is_file():
                copy = clone / original.relative_to(project)
                assert copy.read_bytes() == original.read_bytes()
    status = run(["dvc", "status", "download@mnist", "download@bert"], clone).stdout
    assert "up to date" in status


# ------------------------------------------------------------------- in a real browser (Chromium)

UI_WORKFLOW = "workflowType=machine_learning"  # what `make ui` links to
ARTIFACTS = ROOT / "test-artifacts"  # screenshots: kept for people to look at, not committed


def chromium(*arguments: str) -> subprocess.CompletedProcess:
    """Headless Chromium (Debian's `chromium`; `make test` installs it) with a fresh profile."""
    binary = shutil.which("chromium")
    assert binary, "chromium not found: `make test` installs it (apt-get install -y chromium)"
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"chromium-profile-{os.getpid()}"
    shutil.rmtree(profile, ignore_errors=True)
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=20000", "--window-size=1400,1000", *arguments],
        capture_output=True, text=True, timeout=180)
    shutil.rmtree(profile, ignore_errors=True)
    return result


@pytest.fixture(scope="module")
def mlflow_ui(project):
    """`mlflow ui` on the project's store, as `make ui` starts it, on a free port of 127.0.0.1."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
         f"sqlite:///{project / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **OFFLINE})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the MLflow UI did not answer /health within 60 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_mlflow_ui_lists_the_four_experiments_and_compares_two_runs(project, mlflow_ui):
    import mlflow

    ARTIFACTS.mkdir(exist_ok=True)
    listing = chromium("--dump-dom", f"{mlflow_ui}/#/experiments").stdout
    for name in ("backprop", "fashion", "sentiment", "vit"):
        assert f">{name}<" in listing, f"experiment {name} not listed by the UI"
    chromium(f"--screenshot={ARTIFACTS / 'mlflow-experiments.png'}", f"{mlflow_ui}/#/experiments")

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fashion")
    first, second = [found.info.run_id for found in client.search_runs([experiment.experiment_id])][:2]
    compare = (f"{mlflow_ui}/#/compare-runs?runs=%5B%22{first}%22,%22{second}%22%5D"
               f"&experiments=%5B%22{experiment.experiment_id}%22%5D")
    page = chromium("--dump-dom", compare).stdout
    assert "Comparing 2 Runs from 1 Experiment" in page
    assert first in page and second in page and "test_accuracy" in page
    chromium(f"--screenshot={ARTIFACTS / 'mlflow-compare.png'}", compare)


def test_the_mlflow_ui_shows_each_runs_datasets_and_the_champion(project, mlflow_ui):
    """Each experiment opens on its training runs, whose Datasets column names the DVC-tracked
    splits; the registered model's page shows which version is the champion."""
    import mlflow

    ARTIFACTS.mkdir(exist_ok=True)
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fashion")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    found = next(run for run in client.search_runs([experiment.experiment_id])  # newest first
                 if run.data.tags.get("dvc.stage") == "train_fashion@improved"
                 and run.inputs.dataset_inputs)
    inputs = {entry.dataset.name: entry for entry in found.inputs.dataset_inputs}
    assert set(inputs) == {"fashion_mnist-train", "fashion_mnist-validation", "fashion_mnist-test"}
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    data_hash = lock["download@fashion_mnist"]["outs"][0]["md5"]
    assert {entry.dataset.digest for entry in inputs.values()} == {data_hash}
    assert json.loads(inputs["fashion_mnist-test"].dataset.profile) == {"num_rows": 500}

    # MLflow 3.17's sidebar switch (GenAI / Model training) picks the page an experiment opens on;
    # `make ui` prints the link that selects model training
    runs_page = f"{mlflow_ui}/#/experiments/{experiment.experiment_id}?{UI_WORKFLOW}"
    page = chromium("--dump-dom", runs_page).stdout
    assert "fashion_mnist-train" in page and found.info.run_name in page
    assert "Overview" not in page  # the GenAI overview, where it opens without the link
    chromium(f"--screenshot={ARTIFACTS / 'mlflow-runs-datasets.png'}", runs_page)
    model_page = f"{mlflow_ui}/#/models/fashion"
    page = chromium("--dump-dom", model_page).stdout
    assert "champion" in page
    chromium(f"--screenshot={ARTIFACTS / 'mlflow-champion.png'}", model_page)


def test_the_report_page_renders_its_images_without_a_network(project):
    import matplotlib.image

    report = project / "reports/index.html"
    dom = chromium("--dump-dom", report.as_uri()).stdout
    figures = len(list((project / "reports").rglob("*.png")))
    assert dom.count('<img alt="') == figures > 10
    shot = ARTIFACTS / "report.png"
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri())
    pixels = matplotlib.image.imread(shot)[..., :3].reshape(-1, 3)
    colours = np.unique((pixels * 255).astype(np.uint8), axis=0)
    assert len(colours) > 200  # figures drawn, not a blank or text-only page


# --------------------------------------------------------------------- sweeps (dlprojects.sweep)

MLP = "train_backprop.mlp"
GRID = f"""model: backprop-mlp
method: grid
seeds: 2
params:
  {MLP}.training.lr: [0.05, 0.2]
  {MLP}.dropout: [0.0, 0.3]
"""
OPTUNA = f"""model: backprop-mlp
method: optuna
trials: 6
seeds: 2
sampler_seed: 0
params:
  {MLP}.training.lr: {{low: 0.01, high: 0.3, log: true}}
  {MLP}.training.epochs: [1, 2]
"""


@pytest.fixture(scope="module")
def sweeping(project) -> Path:
    """A copy of the smoke project with its results and two sweep files committed."""
    pytest.importorskip("optuna")
    copy = project.parent / "sweeping"
    shutil.copytree(project, copy, symlinks=True)
    (copy / "experiments/sweeps").mkdir(parents=True, exist_ok=True)
    (copy / "experiments/sweeps/grid.yaml").write_text(GRID)
    (copy / "experiments/sweeps/tpe.yaml").write_text(OPTUNA)
    run(["git", "add", "-A"], copy)
    run(["git", "commit", "-qm", "results and sweeps"], copy)
    return copy


def start(folder: Path, *arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlprojects.sweep", *arguments], cwd=folder,
                            env=checkout_env(folder), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_after(process: subprocess.Popen, finished: int, timeout: float = 600) -> list[str]:
    """SIGKILL the sweep process once `finished` trials have finished; its output until then."""
    lines, deadline = [], time.monotonic() + timeout
    while sum(line.endswith(": finished") for line in lines) < finished:
        line = process.stdout.readline()
        assert line and time.monotonic() < deadline, "".join(lines)
        lines.append(line.rstrip("\n"))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return lines


def experiments(folder: Path, name: str) -> collections.Counter:
    names = run(["dvc", "exp", "list", "--all-commits", "--name-only"], folder).stdout.split()
    return collections.Counter(entry for entry in names if entry.startswith(f"{name}-"))


def sweep_runs(folder: Path, name: str) -> tuple[str, list]:
    """(the sweep's parent run id, its nested runs)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("backprop").experiment_id
    (parent,) = client.search_runs([experiment], f"tags.`sweep.name` = '{name}' and "
                                                 f"tags.`sweep.role` = 'parent'")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = "
                                                f"'{parent.info.run_id}'")
    assert parent.info.status == "FINISHED"
    return parent.info.run_id, children


def assert_nested_once(folder: Path, name: str, trials: collections.Counter) -> None:
    """Each trial's runs (one a train stage it ran: a seed other than 0 retrains the project's
    other model too) under the sweep's parent run, once each, finished."""
    _, children = sweep_runs(folder, name)
    ran = collections.Counter((child.data.tags["dvc.exp_name"], child.data.tags["dvc.stage"])
                              for child in children)
    assert {trial for trial, _ in ran} == set(trials) and set(ran.values()) == {1}, ran
    assert {child.info.status for child in children} == {"FINISHED"}


def test_a_grid_sweep_killed_with_its_trials_goes_on_and_runs_each_trial_once(sweeping):
    """2 x 2 params, 2 seeds: SIGKILL of the sweep and of the trials it is running, after 3 of
    8 have finished; a commit made meanwhile; run again, it reruns only the unfinished ones."""
    first = start(sweeping, "run", "experiments/sweeps/grid.yaml", "--workers", "2")
    before = kill_after(first, 3)
    running = json.loads((sweeping / ".dvc/tmp/sweeps/grid/running.json").read_text())
    for pid in running.values():  # the machine went down: the running trials die too
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done_before = {line.split(":")[0] for line in before if line.endswith(": finished")}
    run(["git", "commit", "-q", "--allow-empty", "-m", "meanwhile"], sweeping)  # a new baseline

    again = run([sys.executable, "-m", "dlprojects.sweep", "run", "experiments/sweeps/grid.yaml",
                 "--workers", "2"], sweeping, timeout=1200).stdout
    started_again = set(re.findall(r"^(grid-\d+-s\d): train", again, flags=re.M))
    assert not started_again & done_before, again  # finished trials are not run again
    assert len(started_again) == 8 - len(done_before), again

    found = experiments(sweeping, "grid")
    assert sorted(found) == [f"grid-{c:02d}-s{s}" for c in range(4) for s in range(2)], found
    assert set(found.values()) == {1}
    assert_nested_once(sweeping, "grid", found)
    assert "| rank | configuration |" in again and "95% interval" in again

    shown = run([sys.executable, "-m", "dlprojects.sweep", "show", "experiments/sweeps/grid.yaml"],
                sweeping).stdout
    rows = [line for line in shown.splitlines() if re.match(r"\| \d+ \| grid-", line)]
    assert len(rows) == 4, shown
    best = rows[0].split("|")[2].strip()
    assert re.search(rf"best \({best}\) against the runner-up", shown), shown
    second = rows[1].split("|")[2].strip()
    paired = run([sys.executable, "-m", "dlprojects.sweep", "compare",
                  "experiments/sweeps/grid.yaml", second, best], sweeping).stdout
    assert paired.count("McNemar p") == 2 and "over seeds: " in paired, paired

    # the best configuration applied reproduces its metric byte for byte
    metrics = "reports/backprop/mlp/metrics.json"
    recorded = run([sys.executable, "-c", f"import dvc.api, sys; sys.stdout.write(dvc.api.read("
                    f"'{metrics}', rev='{best}-s0'))"], sweeping).stdout
    try:
        run(["dvc", "exp", "apply", f"{best}-s0"], sweeping)
        run(["dvc", "repro", "--force", "-s", "train_backprop@mlp"], sweeping, timeout=600)
        run(["dvc", "repro", "--force", "-s", "evaluate_backprop@mlp"], sweeping, timeout=600)
        assert (sweeping / metrics).read_text() == recorded
    finally:
        run(["git", "checkout", "--", "."], sweeping)
        run(["dvc", "checkout", "-f"], sweeping)


def test_an_optuna_sweep_killed_alone_takes_over_its_running_trials(sweeping):
    """The sweep process SIGKILLed after 2 trials: the trials it was running go on, and the
    restarted sweep waits for them rather than running them twice; Optuna's study ends with
    6 configurations told."""
    first = start(sweeping, "run", "experiments/sweeps/tpe.yaml", "--workers", "2")
    kill_after(first, 2)
    again = run([sys.executable, "-m", "dlprojects.sweep", "run", "experiments/sweeps/tpe.yaml",
                 "--workers", "2"], sweeping, timeout=1200).stdout
    found = experiments(sweeping, "tpe")
    assert len(found) == 12 and set(found.values()) == {1}, found
    assert_nested_once(sweeping, "tpe", found)
    import optuna

    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///"
                              f"{sweeping / '.dvc/tmp/sweeps/tpe/optuna.db'}")
    assert [trial.state.name for trial in study.trials] == ["COMPLETE"] * 6, again


def test_the_comparison_page_draws_every_trial_in_a_browser(sweeping):
    """Both sweeps on one page: the tables, parallel coordinates, importances, and 20 learning
    curves, drawn by plotly in Chromium without a network."""
    page = sweeping / "reports/sweeps/grid.html"
    run([sys.executable, "-m", "dlprojects.sweep", "page", "experiments/sweeps/grid.yaml",
         "experiments/sweeps/tpe.yaml"], sweeping)
    text = page.read_text()
    assert "<script src=" not in text and 'id="ranking"' in text  # plotly.js inside the page
    dom = chromium("--dump-dom", page.as_uri()).stdout
    assert dom.count('class="trace scatter') >= 20, "not every learning curve was drawn"
    assert "parcoords" in dom and dom.count("<h2>") == 5
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(f"--screenshot={ARTIFACTS / 'sweep-page.png'}", "--window-size=1400,4000",
             page.as_uri())
    assert (ARTIFACTS / "sweep-page.png").stat().st_size > 50_000
