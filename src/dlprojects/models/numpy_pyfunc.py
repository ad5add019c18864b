"""The hand-written NumPy networks of the backprop project as MLflow pyfunc models, registered as
`backprop-mlp` and `backprop-cnn`: `mlflow.pyfunc.load_model("models:/backprop-mlp/latest")`
takes MNIST-style images, (N, 28, 28) or (N, 784), uint8 or floats in [0, 1], and predicts the ten
class probabilities. The weights travel as `.npz` (read with `allow_pickle=False`), the
architecture as JSON."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from dlprojects import numpy_nn
from dlprojects.errors import UserError


def build_network(spec: dict[str, Any]) -> numpy_nn.Sequential:
    """The network that `spec` ({"kind": "mlp" | "cnn", **builder arguments}) describes."""
    arguments = {key: value for key, value in spec.items() if key != "kind"}
    rng = np.random.default_rng(0)  # overwritten by the stored weights
    if spec["kind"] == "mlp":
        return numpy_nn.build_mlp(rng=rng, **arguments)
    return numpy_nn.build_cnn(rng=rng, **arguments)


def load_weights(network: numpy_nn.Sequential, path: Path) -> numpy_nn.Sequential:
    """Load an `.npz` written by `numpy_nn.save_npz`; a missing, damaged or mismatched file is a
    one-line error that says how to restore it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run `dvc repro` to train it (or `dvc pull` to fetch it)")
    try:
        with np.load(path, allow_pickle=False) as stored:
            weights = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{path} is not a readable model ({str(error)[:120]}); restore it with "
                        f"`dvc checkout {path.parent}` or retrain it with `dvc repro`") from None
    try:
        network.load_state_dict(weights)
    except (KeyError, ValueError) as error:
        raise UserError(f"{path} does not fit the network params.yaml describes "
                        f"({str(error).strip(chr(39))[:160]}); retrain it with `dvc repro`") from None
    return network


class NumpyClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.spec = json.loads(Path(context.artifacts["spec"]).read_text())
        self.network = build_network(self.spec)
        with np.load(context.artifacts["weights"], allow_pickle=False) as weights:
            self.network.load_state_dict(dict(weights))
        self.network.eval()

    def predict(self, context, model_input, params=None) -> np.ndarray:
        raw = np.asarray(model_input)
        pixels = raw.astype(np.float32).reshape(-1, 28 * 28)
        if np.issubdtype(raw.dtype, np.integer):
            pixels /= 255.0  # uint8 intensities
        if self.spec["kind"] == "cnn":
            pixels = pixels.reshape(-1, 1, 28, 28)
        logits = np.concatenate([self.network.forward(pixels[start:start + 1000])
                                 for start in range(0, len(pixels), 1000)])
        return numpy_nn.softmax(logits)


def log_numpy_model(spec: dict[str, Any], weights: Path, registered_name: str, *,
                    model_dir: Path) -> None:
    """Log the network to the active run as artifact "model" and register it, unless a version
    of `registered_name` already holds the model in `model_dir` (the train stage's out that
    `weights` is in; see `tracking.register_once`)."""
    import dlprojects
    from dlprojects import tracking

    with tempfile.TemporaryDirectory() as scratch:
        spec_file = Path(scratch) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        tracking.register_once(registered_name, model_dir, lambda: mlflow.pyfunc.log_model(
            name="model", python_model=NumpyClassifier(),
            artifacts={"spec": str(spec_file), "weights": str(weights)},
            code_paths=[str(Path(dlprojects.__file__).parent)],
            pip_requirements=[f"numpy=={np.__version__}"]))
