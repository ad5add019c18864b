"""The NumPy networks as registered MLflow pyfunc models, in a real SQLite store."""

from __future__ import annotations

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest

from dlprojects import numpy_nn
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
        numpy_nn.save_npz(tmp_path / "weights.npz", weights)
        with mlflow.start_run():
            log_numpy_model(SPECS[kind], tmp_path / "weights.npz", f"backprop-{kind}")

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
