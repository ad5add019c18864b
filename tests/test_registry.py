"""The model registry in a real SQLite store: one version per model however often an evaluate stage
registers it, tagged with what made it, and the `champion` alias moved only on a significant
gain."""

from __future__ import annotations

import subprocess

import mlflow
import numpy as np
import pytest

from dlprojects.core import lineage, registry, significance
from dlprojects.backprop import network
from dlprojects.core.serving.images import log_image_classifier

PARAMS = {  # what a model folder's params.json records (the network's section, in short)
    "mlp": {"seed": 0, "kind": "mlp",
            "mlp": {"hidden": [16], "activation": "relu", "dropout": 0.2, "batch_norm": True}},
    "cnn": {"seed": 0, "kind": "cnn", "cnn": {"channels": [2, 3], "hidden": 8, "dropout": 0.0}},
}
DATA_HASH = "0123456789abcdef0123456789abcdef.dir"


def write_model(kind: str, folder, rng: np.random.Generator | None = None):
    """A network of `kind` saved in `folder` as the train stage saves one; random weights from
    `rng`, else its initial ones."""
    built = network.build(PARAMS[kind], np.random.default_rng(0))
    if rng is not None:
        built.load_state_dict({name: rng.normal(size=value.shape).astype(value.dtype)
                               for name, value in built.state_dict().items()})
    network.save(built, PARAMS[kind], folder)
    return built


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A committed project folder (dvc.lock records the MNIST hash) with its own SQLite store."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  download@mnist:\n    cmd: download\n    outs:\n"
        f"    - path: data/raw/mnist\n      md5: {DATA_HASH}\n")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", *command], check=True)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("backprop")
    try:
        yield tmp_path
    finally:
        mlflow.set_tracking_uri(None)


def publish(folder, accuracy: float, results=None, alpha: float = 0.05) -> str:
    example = np.zeros((2, 28, 28), dtype=np.uint8)
    with mlflow.start_run():
        return registry.publish("backprop-mlp", folder,
                                lambda: log_image_classifier(folder, example),
                                metrics={"test_accuracy": accuracy, "test_loss": 0.25},
                                inputs=["data/raw/mnist"], results=results, alpha=alpha)


LABELS = np.arange(2000) % 10  # a test set of 2,000 examples


def right_on(count: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted) of a classifier right on `count` of LABELS: the examples from `shift`
    on, wrapping around."""
    right = np.roll(np.arange(len(LABELS)) < count, shift)
    return LABELS, np.where(right, LABELS, (LABELS + 1) % 10)


def versions_of(name: str) -> list:
    return sorted(mlflow.MlflowClient().search_model_versions(f"name = '{name}'"),
                  key=lambda version: int(version.version))


def test_registering_the_same_model_folder_again_adds_no_version(project, monkeypatch):
    """What an evaluate stage does each time it runs (dvc repro --force): one version, tagged
    with the test metrics, commit, model digest, data hashes and DVC experiment."""
    folder = project / "models/mlp"
    write_model("mlp", folder)
    monkeypatch.setenv("DVC_EXP_NAME", "lr-sweep")
    assert publish(folder, 0.9) == "models:/backprop-mlp@champion"
    assert publish(folder, 0.9) == "models:/backprop-mlp@champion"
    (version,) = versions_of("backprop-mlp")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert version.tags == {lineage.MODEL_TAG: lineage.model_digest(folder), "git.commit": commit,
                            "test_accuracy": "0.9", "test_loss": "0.25",
                            "data.data/raw/mnist": DATA_HASH, "dvc.exp_name": "lr-sweep",
                            "model.interface": "raw inputs, named classes",
                            "promotion": "champion: the first version"}
    assert mlflow.MlflowClient().get_model_version_by_alias(
        "backprop-mlp", "champion").version == int(version.version)


def test_the_champion_moves_only_on_a_significant_gain_and_each_version_says_why(project):
    """Paired on the same 2,000 test examples: 4 more right (+0.2 points, McNemar p = 0.125)
    stays challenger; 100 more right (+5 points) becomes champion; one as accurate as the
    champion but right on other examples stays challenger."""
    folder = project / "models/mlp"
    rng = np.random.default_rng(1)
    steps = ((1800, 0, "champion", "the first version"),
             (1804, 0, "challenger", "not a significant gain"),  # p = 0.125
             (1900, 0, "champion", "McNemar p = 1.58e-30 <= 0.05"),
             (1900, 50, "challenger", "+0.00 points over version 3"))
    client = mlflow.MlflowClient()
    for number, (count, shift, alias, why) in enumerate(steps, start=1):
        write_model("mlp", folder, rng)  # retrained: other weights, a new version
        results = right_on(count, shift)
        assert publish(folder, count / len(LABELS), results) == f"models:/backprop-mlp@{alias}"
        version = client.get_model_version("backprop-mlp", str(number))
        assert version.tags[registry.REASON].startswith(f"{alias}: ") and why in \
            version.tags[registry.REASON], version.tags[registry.REASON]
        assert np.array_equal(significance.unpack(version.tags[registry.CORRECT]),
                              results[0] == results[1])
    assert int(client.get_model_version_by_alias("backprop-mlp", "champion").version) == 3
    assert int(client.get_model_version_by_alias("backprop-mlp", "challenger").version) == 4
    # `python -m dlprojects.compare` reads the same results from the versions' tags
    from dlprojects.compare import read_predictions, report

    found = report([read_predictions("models:/backprop-mlp/2")],
                   [read_predictions("models:/backprop-mlp@champion")], 0.05)
    assert found[0] == "A models:/backprop-mlp/2 (version 2): 90.20% of 2000"
    assert found[1] == "B models:/backprop-mlp@champion (version 3): 95.00%"
    assert found[2].endswith("B better"), found
    run_id = client.get_model_version("backprop-mlp", "2").run_id  # an MLflow run: its version
    assert read_predictions(f"runs:/{run_id}").name == "models:/backprop-mlp/2 (version 2)"


def test_at_promote_alpha_1_any_gain_moves_the_champion(project):
    folder = project / "models/mlp"
    rng = np.random.default_rng(2)
    for count, alias in ((1800, "champion"), (1801, "champion"), (1800, "challenger")):
        write_model("mlp", folder, rng)
        assert publish(folder, count / 2000, right_on(count), alpha=1.0) == \
            f"models:/backprop-mlp@{alias}"


def test_without_results_on_the_same_examples_the_champion_moves_on_accuracy_alone(project):
    """Versions that record no per-example results (registered by an older release, or a test
    set too large for a tag), or results on other test examples: compared by test accuracy."""
    folder = project / "models/mlp"
    rng = np.random.default_rng(1)
    for accuracy, results, expected in (
            (0.90, None, "champion"), (0.85, None, "challenger"), (0.90, right_on(1800),
                                                                   "champion"),
            (0.95, (LABELS[:100], LABELS[:100]), "champion")):  # another test set
        write_model("mlp", folder, rng)  # retrained: other weights, a new version
        assert publish(folder, accuracy, results) == f"models:/backprop-mlp@{expected}"
    reason = mlflow.MlflowClient().get_model_version("backprop-mlp", "4").tags[registry.REASON]
    assert "compared by accuracy alone" in reason, reason


def test_a_version_registered_without_metrics_gets_them_when_its_stage_runs_again(project):
    """A store filled before versions carried their test metrics: the next evaluate run tags the
    existing version (no new one) and can promote it."""
    folder = project / "models/mlp"
    write_model("mlp", folder)
    with mlflow.start_run():
        registry.register_once("backprop-mlp", folder, lambda: log_image_classifier(
            folder, np.zeros((1, 28, 28), dtype=np.uint8)))
    assert publish(folder, 0.97) == "models:/backprop-mlp@champion"
    (version,) = versions_of("backprop-mlp")
    assert version.tags["test_accuracy"] == "0.97"


def test_a_run_lists_its_dvc_data_splits_as_inputs_once_however_often_logged(project):
    """The UI's Datasets column: name, DVC path as source, DVC hash as digest, rows as profile;
    and the experiment opens on its training runs."""
    import json

    from dlprojects.core import datasets

    with mlflow.start_run() as run:
        datasets.log_splits("data/raw/mnist", "mnist", {"train": 50, "validation": 5, "test": 9})
    with mlflow.start_run(run_id=run.info.run_id):  # the evaluate stage again (dvc repro -f)
        datasets.log_splits("data/raw/mnist", "mnist", {"train": 50, "validation": 5, "test": 9})
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    found = {entry.dataset.name: entry for entry in inputs}
    assert len(inputs) == 3 and set(found) == {"mnist-train", "mnist-validation", "mnist-test"}
    for name, rows, context in (("mnist-train", 50, "training"), ("mnist-test", 9, "test")):
        dataset = found[name].dataset
        assert dataset.digest == DATA_HASH and dataset.source_type == "dvc"
        assert json.loads(dataset.source) == {"path": "data/raw/mnist", "md5": DATA_HASH}
        assert json.loads(dataset.profile) == {"num_rows": rows}
        assert [tag.value for tag in found[name].tags] == [context]
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_version_of_the_same_weights_logged_the_old_way_is_not_taken_for_it(project):
    """A store from before the models took raw inputs: its version of these very weights lacks
    the interface tag, so the stage registers a new version, which becomes the champion."""
    folder = project / "models/mlp"
    write_model("mlp", folder)
    client = mlflow.MlflowClient()
    with mlflow.start_run():
        info = log_image_classifier(folder, np.zeros((1, 28, 28), dtype=np.uint8))
    old = mlflow.register_model(info.model_uri, "backprop-mlp",
                                tags={lineage.MODEL_TAG: lineage.model_digest(folder)})
    client.set_registered_model_alias("backprop-mlp", "champion", old.version)
    assert publish(folder, 0.9) == "models:/backprop-mlp@champion"
    assert int(client.get_model_version_by_alias("backprop-mlp", "champion").version) == 2
