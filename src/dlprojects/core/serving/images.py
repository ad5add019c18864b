"""Image classifiers as pyfunc models: a batch of uint8 images in (N, 28, 28) as the data sets store
them (or (N, 32, 32, 3) for a CIFAR-10 ViT); normalisation happens inside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from dlprojects.core import models
from dlprojects.core.errors import UserError
from dlprojects.core.models import ImageNetwork
from dlprojects.core.serving import (
    HERE,
    MODEL_PACKAGES,
    model_code,
    bad_request,
    class_frame,
    output_schema,
    requirements,
)

MAX_IMAGES = 4096  # per request: a larger batch is refused (send it in parts)


def load_image_network(folder: Path) -> ImageNetwork:
    """The image classifier a train stage wrote to `folder`, rebuilt by the builder its
    model.json names."""
    network = models.load(folder)
    if not isinstance(network, ImageNetwork):
        raise UserError(f"{folder} holds a model of {models.manifest(folder)['input']}, not an "
                        f"image classifier")
    return network


def image_batch(model_input: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 images of a request, or a 400 that says what was wrong with them."""
    images = (model_input.to_numpy() if isinstance(model_input, pd.DataFrame)
              else np.asarray(model_input))
    side = "x".join(str(size) for size in shape)
    if images.dtype != np.uint8:
        raise bad_request(f"images must be uint8 pixel values 0-255, as the data sets store them; "
                          f"got {images.dtype}")
    if images.shape[1:] != shape:
        raise bad_request(f"expected a batch of {side} images, shape (N, "
                          f"{', '.join(map(str, shape))}); got shape {images.shape}")
    if len(images) == 0:
        raise bad_request("the batch is empty: send at least one image")
    if len(images) > MAX_IMAGES:
        raise bad_request(f"{len(images)} images in one request; send at most {MAX_IMAGES}")
    return images


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Artifact "model": the stage's model folder."""

    def load_context(self, context) -> None:
        self.load(Path(context.artifacts["model"]))

    def load(self, folder: Path) -> ImageClassifier:
        self.network = load_image_network(folder)
        return self

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        # the hint names a type MLflow infers no schema from: the logged signature checks inputs
        images = image_batch(model_input, self.network.shape)
        return class_frame(self.network.probabilities(images), self.network.classes)


def log_image_classifier(model_dir: Path, example: np.ndarray):
    """Log the model in `model_dir` to the active run as artifact "model"; returns its ModelInfo.
    `example`: a few uint8 images of the test set, the input example."""
    network = load_image_network(model_dir)
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *network.shape))])
    signature = ModelSignature(inputs=inputs, outputs=output_schema(network.classes))
    with model_code(model_dir) as code:
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(HERE / "image_model.py"),
            artifacts={"model": str(model_dir)},
            signature=signature, input_example=np.asarray(example, dtype=np.uint8),
            code_paths=[str(code)], pip_requirements=requirements(*MODEL_PACKAGES))


def split_rows(splits) -> dict[str, int]:
    """Row counts of an `ImageSplits`, by split name."""
    return {"train": len(splits.train_labels), "validation": len(splits.val_labels),
            "test": len(splits.test_labels)}


def publish_image_classifier(registered_name: str, model_dir: Path, splits, data: Path,
                             metrics: dict[str, float], predicted: np.ndarray | None = None) -> str:
    """In the active (training) run: log the splits of `data` as its inputs, log the model in
    `model_dir` with two test images as its input example, register it once and promote it
    (`registry.publish`; on a significant gain when the classes it `predicted` for the test
    images are given). Returns the URI to load, e.g. "models:/<name>@champion"."""
    from dlprojects.core import datasets, registry

    datasets.log_splits(Path(data).as_posix(), Path(data).name, split_rows(splits))
    return registry.publish(registered_name, model_dir,
                            lambda: log_image_classifier(model_dir, splits.test_images[:2]),
                            metrics=metrics, inputs=[Path(data).as_posix()],
                            results=None if predicted is None else (splits.test_labels, predicted))
