"""Registered models in a real SQLite store: the NumPy networks as pyfunc models, and one version
per model however often an evaluate stage registers it."""

from __future__ import annotations

import subprocess

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest

from dlprojects import lineage, numpy_nn, registry
from dlprojects.backprop import network
from dlprojects.backprop.pyfunc import log_numpy_model

PARAMS = {  # what a model folder's params.json records (the network's section, in short)
    "mlp": {"seed": 0, "kind": "mlp",
            "mlp": {"hidden": [16], "activation": "relu", "dropout": 0.2, "batch_norm": True}},
    "cnn": {"seed": 0, "kind": "cnn", "cnn": {"channels": [2, 3], "hidden": 8, "dropout": 0.0}},
}


def write_model(kind: str, folder, rng: np.random.Generator | None = None) -> numpy_nn.Sequential:
    """A network of `kind` saved in `folder` as the train stage saves one; random weights from
    `rng`, else its initial ones."""
    built = network.build(PARAMS[kind], np.random.default_rng(0))
    if rng is not None:
        built.load_state_dict({name: rng.normal(size=value.shape).astype(value.dtype)
                               for name, value in built.state_dict().items()})
    network.save(built, PARAMS[kind], folder)
    return built


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_a_registered_numpy_network_loads_by_name_and_predicts_like_the_original(
        kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("backprop")  # not the active experiment of an earlier test's store
    try:
        rng = np.random.default_rng(1)
        model_dir = tmp_path / "models" / kind
        trained = write_model(kind, model_dir, rng)
        with mlflow.start_run():
            log_numpy_model(model_dir, f"backprop-{kind}")

        loaded = mlflow.pyfunc.load_model(f"models:/backprop-{kind}/latest")
        images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
        probabilities = loaded.predict(images)
        trained.eval()
        pixels = images.astype(np.float32) / 255.0
        inputs = pixels.reshape(5, -1) if kind == "mlp" else pixels[:, None]
        np.testing.assert_allclose(probabilities, numpy_nn.softmax(trained.forward(inputs)),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(loaded.predict(pixels.reshape(5, -1)), probabilities,
                                   rtol=1e-5, atol=1e-6)  # [0, 1] floats, flat, alike
    finally:
        mlflow.set_tracking_uri(None)


def versions_of(client: mlflow.MlflowClient, name: str) -> list:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def test_registering_the_same_model_folder_again_adds_no_version(tmp_path, monkeypatch):
    """What an evaluate stage does each time it runs: numpy (pyfunc) and torch models alike."""
    import mlflow.pytorch
    import torch

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "commit", "-qm", "init"], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("registry")
    client = mlflow.MlflowClient()
    try:
        numpy_dir, torch_dir = tmp_path / "models/mlp", tmp_path / "models/linear"
        torch_dir.mkdir(parents=True)
        write_model("mlp", numpy_dir)
        linear = torch.nn.Linear(3, 2)
        (torch_dir / "model.bin").write_bytes(b"the weights the evaluate stage read")

        for _ in range(2):  # the stage run twice on the same model (dvc repro --force)
            with mlflow.start_run():
                log_numpy_model(numpy_dir, "backprop-mlp")
                registry.log_torch_model(linear, "linear", torch_dir)
        for name, folder in (("backprop-mlp", numpy_dir), ("linear", torch_dir)):
            (version,) = versions_of(client, name)
            assert version.tags == {lineage.MODEL_TAG: lineage.model_digest(folder),
                                    "git.commit": commit}
        loaded = mlflow.pytorch.load_model("models:/linear/latest")
        assert loaded(torch.zeros(1, 3)).shape == (1, 2)

        (torch_dir / "model.bin").write_bytes(b"retrained: other weights")
        with mlflow.start_run():
            registry.log_torch_model(linear, "linear", torch_dir)
        first, second = versions_of(client, "linear")
        assert second.tags[lineage.MODEL_TAG] == lineage.model_digest(torch_dir)
        with mlflow.start_run():  # the first model again: it has a version, none is added
            (torch_dir / "model.bin").write_bytes(b"the weights the evaluate stage read")
            registry.log_torch_model(linear, "linear", torch_dir)
        assert [v.version for v in versions_of(client, "linear")] == [first.version,
                                                                       second.version]
        assert len(versions_of(client, "backprop-mlp")) == 1
    finally:
        mlflow.set_tracking_uri(None)
