"""Registered models in a real SQLite store: the NumPy networks as pyfunc models, and one version
per model however often an evaluate stage registers it."""

from __future__ import annotations

import subprocess

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest

from dlprojects import numpy_nn, tracking
from dlprojects.models.numpy_pyfunc import build_network, log_numpy_model

SPECS = {
    "mlp": {"kind": "mlp", "sizes": [784, 16, 10], "activation": "relu", "dropout": 0.2,
            "batch_norm": True},
    "cnn": {"kind": "cnn", "channels": [2, 3], "hidden": 8, "dropout": 0.0},
}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_a_registered_numpy_network_loads_by_name_and_predicts_like_the_original(
        kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("backprop")  # not the active experiment of an earlier test's store
    try:
        network = build_network(SPECS[kind])
        rng = np.random.default_rng(1)
        weights = {name: rng.normal(size=value.shape).astype(value.dtype)
                   for name, value in network.state_dict().items()}
        network.load_state_dict(weights)
        model_dir = tmp_path / "models" / kind
        model_dir.mkdir(parents=True)
        numpy_nn.save_npz(model_dir / "weights.npz", weights)
        with mlflow.start_run():
            log_numpy_model(SPECS[kind], model_dir / "weights.npz", f"backprop-{kind}",
                            model_dir=model_dir)

        loaded = mlflow.pyfunc.load_model(f"models:/backprop-{kind}/latest")
        images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
        probabilities = loaded.predict(images)
        network.eval()
        pixels = images.astype(np.float32) / 255.0
        inputs = pixels.reshape(5, -1) if kind == "mlp" else pixels[:, None]
        np.testing.assert_allclose(probabilities, numpy_nn.softmax(network.forward(inputs)),
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
        numpy_dir.mkdir(parents=True)
        torch_dir.mkdir(parents=True)
        network = build_network(SPECS["mlp"])
        numpy_nn.save_npz(numpy_dir / "weights.npz", network.state_dict())
        linear = torch.nn.Linear(3, 2)
        (torch_dir / "model.bin").write_bytes(b"the weights the evaluate stage read")

        for _ in range(2):  # the stage run twice on the same model (dvc repro --force)
            with mlflow.start_run():
                log_numpy_model(SPECS["mlp"], numpy_dir / "weights.npz", "backprop-mlp",
                                model_dir=numpy_dir)
                tracking.log_torch_model(linear, "linear", torch_dir)
        for name, folder in (("backprop-mlp", numpy_dir), ("linear", torch_dir)):
            (version,) = versions_of(client, name)
            assert version.tags == {tracking.MODEL_TAG: tracking.model_digest(folder),
                                    "git.commit": commit}
        loaded = mlflow.pytorch.load_model("models:/linear/latest")
        assert loaded(torch.zeros(1, 3)).shape == (1, 2)

        (torch_dir / "model.bin").write_bytes(b"retrained: other weights")
        with mlflow.start_run():
            tracking.log_torch_model(linear, "linear", torch_dir)
        first, second = versions_of(client, "linear")
        assert second.tags[tracking.MODEL_TAG] == tracking.model_digest(torch_dir)
        with mlflow.start_run():  # the first model again: it has a version, none is added
            (torch_dir / "model.bin").write_bytes(b"the weights the evaluate stage read")
            tracking.log_torch_model(linear, "linear", torch_dir)
        assert [v.version for v in versions_of(client, "linear")] == [first.version,
                                                                       second.version]
        assert len(versions_of(client, "backprop-mlp")) == 1
    finally:
        mlflow.set_tracking_uri(None)
