"""The backprop networks as MLflow pyfunc models, registered as `backprop-mlp` and `backprop-cnn`:
`mlflow.pyfunc.load_model("models:/backprop-mlp/latest")` takes MNIST-style images, (N, 28, 28) or
(N, 784), uint8 or floats in [0, 1], and predicts the ten class probabilities. The model folder's
`weights.npz` and `params.json` travel as its artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from dlprojects import numpy_nn
from dlprojects.backprop import network
from dlprojects.registry import register_once


class NumpyClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.params = json.loads(Path(context.artifacts["params"]).read_text())
        self.network = network.load_weights(network.build(self.params, np.random.default_rng(0)),
                                            Path(context.artifacts["weights"]))
        self.network.eval()

    def predict(self, context, model_input, params=None) -> np.ndarray:
        pixels = network.as_inputs(self.params["kind"], model_input)
        logits = np.concatenate([self.network.forward(pixels[start:start + 1000])
                                 for start in range(0, len(pixels), 1000)])
        return numpy_nn.softmax(logits)


def log_numpy_model(model_dir: Path, registered_name: str) -> None:
    """Log the network in `model_dir` to the active run as artifact "model" and register it,
    unless a version of `registered_name` already holds it (`registry.register_once`)."""
    import dlprojects

    model_dir = Path(model_dir)
    register_once(registered_name, model_dir, lambda: mlflow.pyfunc.log_model(
        name="model", python_model=NumpyClassifier(),
        artifacts={"params": str(model_dir / "params.json"),
                   "weights": str(model_dir / "weights.npz")},
        code_paths=[str(Path(dlprojects.__file__).parent)],
        pip_requirements=[f"numpy=={np.__version__}"]))
