"""Image classifiers as pyfunc models: a batch of uint8 images in (N, 28, 28) as the data sets store
them (or (N, 32, 32, 3) for a CIFAR-10 ViT); normalisation happens inside."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from dlprojects.errors import UserError
from dlprojects.serving import (
    HERE,
    MODEL_PACKAGES,
    bad_request,
    class_frame,
    output_schema,
    requirements,
)

MAX_IMAGES = 4096  # per request: a larger batch is refused (send it in parts)


@dataclass(frozen=True)
class ImageNetwork:
    """A trained image classifier: uint8 images of `shape` -> class probabilities (N, classes)."""

    probabilities: Callable[[np.ndarray], np.ndarray]
    classes: list[str]
    shape: tuple[int, ...]  # of one image: (28, 28), or (32, 32, 3) for CIFAR-10


def load_image_network(folder: Path) -> ImageNetwork:
    """The classifier a pipeline stage wrote to `folder`: a backprop network (weights.npz and
    params.json), a FashionMNIST dense network or a ViT (model.safetensors with its params)."""
    folder = Path(folder)
    if (folder / "params.json").is_file():
        return _numpy_network(folder)
    from dlprojects.weights import load_params

    params = load_params(folder / "model.safetensors")
    if "variants" in params:
        from dlprojects.fashion.model import DenseClassifier

        return _torch_network(DenseClassifier(**params["variants"][params["variant"]]), folder,
                              "fashion_mnist")
    if "patch_size" in params:
        from dlprojects.config import TrainVitParams
        from dlprojects.parsing import parse
        from dlprojects.vit.model import ViT

        vit = parse(TrainVitParams, params, "train_vit")
        return _torch_network(ViT(**vit.model_kwargs()), folder, vit.dataset)
    raise UserError(f"{folder} holds no image classifier of this project (a backprop, fashion or "
                    f"vit model folder)")


def _numpy_network(folder: Path) -> ImageNetwork:
    from dlprojects import numpy_nn
    from dlprojects.backprop import network
    from dlprojects.data.images import CLASS_NAMES

    model, params = network.load(folder)
    model.eval()

    def probabilities(images: np.ndarray) -> np.ndarray:
        pixels = network.as_inputs(params["kind"], images)
        return np.concatenate([numpy_nn.softmax(model.forward(pixels[start:start + 1000]))
                               for start in range(0, len(pixels), 1000)])

    return ImageNetwork(probabilities, CLASS_NAMES["mnist"], (28, 28))


def _torch_network(model, folder: Path, dataset: str) -> ImageNetwork:
    import torch

    from dlprojects.data.cifar import CIFAR10_CLASS_NAMES
    from dlprojects.data.images import CLASS_NAMES, normalised_tensor
    from dlprojects.weights import load_weights

    load_weights(model, folder / "model.safetensors").eval()
    cpu = torch.device("cpu")

    @torch.inference_mode()
    def probabilities(images: np.ndarray) -> np.ndarray:
        return np.concatenate([
            model(normalised_tensor(images[start:start + 500], dataset, cpu)).float()
            .softmax(dim=-1).double().numpy() for start in range(0, len(images), 500)])

    classes = CIFAR10_CLASS_NAMES if dataset == "cifar10" else CLASS_NAMES[dataset]
    shape = (32, 32, 3) if dataset == "cifar10" else (28, 28)
    return ImageNetwork(probabilities, list(classes), shape)


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

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        images = image_batch(model_input, self.network.shape)
        return class_frame(self.network.probabilities(images), self.network.classes)


def log_image_classifier(model_dir: Path, example: np.ndarray):
    """Log the model in `model_dir` to the active run as artifact "model"; returns its ModelInfo.
    `example`: a few uint8 images of the test set, the input example."""
    import dlprojects

    network = load_image_network(model_dir)
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *network.shape))])
    signature = ModelSignature(inputs=inputs, outputs=output_schema(network.classes))
    return mlflow.pyfunc.log_model(
        name="model", python_model=str(HERE / "image_model.py"),
        artifacts={"model": str(model_dir)},
        signature=signature, input_example=np.asarray(example, dtype=np.uint8),
        code_paths=[str(Path(dlprojects.__file__).parent)],
        pip_requirements=requirements(*MODEL_PACKAGES))


def split_rows(splits) -> dict[str, int]:
    """Row counts of an `ImageSplits`, by split name."""
    return {"train": len(splits.train_labels), "validation": len(splits.val_labels),
            "test": len(splits.test_labels)}


def publish_image_classifier(registered_name: str, model_dir: Path, splits, data: Path,
                             metrics: dict[str, float]) -> str:
    """In the active (training) run: log the splits of `data` as its inputs, log the model in
    `model_dir` with two test images as its input example, register it once and promote it
    (`registry.publish`). Returns the URI to load, e.g. "models:/vit@champion"."""
    from dlprojects import datasets, registry

    datasets.log_splits(Path(data).as_posix(), Path(data).name, split_rows(splits))
    return registry.publish(registered_name, model_dir,
                            lambda: log_image_classifier(model_dir, splits.test_images[:2]),
                            metrics=metrics, inputs=[Path(data).as_posix()])
