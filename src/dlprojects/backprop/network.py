"""The backprop project's networks, built from what their model folder records.

A model folder (`models/backprop/<kind>`) holds `weights.npz` (read with `allow_pickle=False`) and
`params.json`, the resolved `train_backprop` params with `kind` naming the network. `build` turns
those params into the network, so training, evaluation and the MLflow pyfunc build it one way.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dlprojects.backprop import numpy_nn
from dlprojects.core import models
from dlprojects.core.errors import missing_model, mismatched_model, unreadable_model
from dlprojects.core.models import ImageNetwork

PIXELS, CLASSES = 28 * 28, 10


def resolved_params(params, kind: str) -> dict[str, Any]:
    """What `params.json` records: the shared data and seed, `kind`, and that network's section."""
    return {"data": dataclasses.asdict(params.data), "seed": params.seed, "kind": kind,
            kind: dataclasses.asdict(getattr(params, kind))}


def build(params: dict[str, Any], rng: np.random.Generator) -> numpy_nn.Sequential:
    """The untrained network of `params` (as `resolved_params` gives them), initialised from `rng`."""
    kind = params["kind"]
    network = params[kind]
    if kind == "mlp":
        return numpy_nn.build_mlp([PIXELS, *network["hidden"], CLASSES],
                                  activation=network["activation"], dropout=network["dropout"],
                                  batch_norm=network["batch_norm"], rng=rng)
    return numpy_nn.build_cnn(channels=list(network["channels"]), hidden=network["hidden"],
                              dropout=network["dropout"], rng=rng)


def as_inputs(kind: str, images: np.ndarray) -> np.ndarray:
    """MNIST-style images, (N, 28, 28) or (N, 784), uint8 intensities or floats in [0, 1] ->
    float32 in [0, 1]: (N, 784) for the MLP, (N, 1, 28, 28) for the CNN."""
    raw = np.asarray(images)
    pixels = raw.astype(np.float32).reshape(-1, PIXELS)
    if np.issubdtype(raw.dtype, np.integer):
        pixels /= 255.0
    return pixels if kind == "mlp" else pixels.reshape(-1, 1, 28, 28)


def save(network: numpy_nn.Sequential, params: dict[str, Any], folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    numpy_nn.save_npz(folder / "weights.npz", network.state_dict())
    (folder / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    models.describe(folder, classifier, "images")


def classifier(folder: Path) -> ImageNetwork:
    """The trained network in `folder` as an image classifier: uint8 28x28 digits in (the
    builder its model.json names)."""
    from dlprojects.core.data.images import class_names

    model, params = load(folder)
    model.eval()

    def probabilities(images: np.ndarray) -> np.ndarray:
        pixels = as_inputs(params["kind"], images)
        return np.concatenate([numpy_nn.softmax(model.forward(pixels[start:start + 1000]))
                               for start in range(0, len(pixels), 1000)])

    return ImageNetwork(probabilities, class_names("mnist"), (28, 28))


def load(folder: Path) -> tuple[numpy_nn.Sequential, dict[str, Any]]:
    """The trained network in `folder` and its params; a missing or damaged folder is a one-line
    error that says how to restore it."""
    folder = Path(folder)
    params_file = folder / "params.json"
    if not params_file.is_file():
        raise missing_model(params_file)
    try:
        params = json.loads(params_file.read_text())
        network = build(params, np.random.default_rng(params["seed"]))
    except (ValueError, KeyError, TypeError) as error:
        raise unreadable_model(params_file, error) from None
    return load_weights(network, folder / "weights.npz"), params


def load_weights(network: numpy_nn.Sequential, path: Path) -> numpy_nn.Sequential:
    """Load an `.npz` written by `numpy_nn.save_npz`; a missing, damaged or mismatched file is a
    one-line error that says how to restore it."""
    path = Path(path)
    if not path.is_file():
        raise missing_model(path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            weights = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise unreadable_model(path, error) from None
    try:
        network.load_state_dict(weights)
    except (KeyError, ValueError) as error:
        raise mismatched_model(path, str(error).strip(chr(39))) from None
    return network
