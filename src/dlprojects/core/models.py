"""A model folder describes itself: its `model.json` names the builder (module and callable) that
rebuilds the trained model from the folder's files (the weights and the params they record), and
the input its served model takes. One loader (`load`) rebuilds any project's model this way, in
evaluation, predict and serving, importing that project's code alone.

A builder takes the folder (and, for a model that needs more than its folder, named artifacts such
as the frozen BERT) and returns what its project serves: for images, an `ImageNetwork`
(`core.serving.images`); for reviews, a callable from texts to P(positive).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlprojects.core.errors import UserError
from dlprojects.core.files import write_atomic

MANIFEST = "model.json"
PACKAGE = "dlprojects."  # builders are the project's own code: nothing else is imported by name


def describe(folder: Path, builder: Callable[..., Any] | str, input: str) -> Path:
    """Write `folder`/model.json: the builder that rebuilds the model ("module:callable", or the
    callable), the input it takes."""
    path = Path(folder) / MANIFEST
    name = builder if isinstance(builder, str) else f"{builder.__module__}:{builder.__qualname__}"
    spec = {"builder": name, "input": input}
    return write_atomic(path, json.dumps(spec, indent=2, sort_keys=True) + "\n")


def manifest(folder: Path) -> dict[str, str]:
    """What `folder`/model.json says; a missing or foreign one is a one-line error."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise UserError(f"{folder}: no such model folder; run `dvc repro` to train it (or `dvc "
                        f"pull` to fetch it)")
    if not path.is_file():
        inside = sorted(p.name for p in Path(folder).iterdir() if (p / MANIFEST).is_file())
        hint = (f"name one of the model folders in it: {', '.join(inside)}" if inside else
                "run `dvc repro` to train it (or `dvc pull` to fetch it)")
        raise UserError(f"{path} not found: {folder} is not a model folder; {hint}")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        builder, kind = str(spec["builder"]), str(spec["input"])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path} does not describe a model ({str(error)[:80]}); restore it with "
                        f"`dvc checkout {folder}` or retrain it with `dvc repro`") from None
    if not builder.startswith(PACKAGE) or ":" not in builder:
        raise UserError(f"{path}: builder {builder!r} is not a dlprojects module:callable")
    return {"builder": builder, "input": kind}


def builder(folder: Path) -> Callable[..., Any]:
    """The callable `folder`/model.json names."""
    module, _, name = manifest(folder)["builder"].partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise UserError(f"{Path(folder) / MANIFEST}: its builder {module}:{name} is not in this "
                        f"version of the code ({error})") from None
    return found


def load(folder: Path, **artifacts: Path) -> Any:
    """The trained model in `folder`, rebuilt by its builder."""
    return builder(folder)(Path(folder), **artifacts)


@dataclass(frozen=True)
class ImageNetwork:
    """A trained image classifier: uint8 images of `shape` -> class probabilities (N, classes)."""

    probabilities: Callable[[np.ndarray], np.ndarray]
    classes: list[str]
    shape: tuple[int, ...]  # of one image: (28, 28), or (32, 32, 3) for CIFAR-10


def torch_image_network(model, folder: Path, dataset: str) -> ImageNetwork:
    """A torch classifier of `dataset`'s images with the weights of `folder`/model.safetensors,
    on the CPU, normalising uint8 images as training did."""
    import torch

    from dlprojects.core.data.images import class_names, image_shape, normalised_tensor
    from dlprojects.core.weights import load_weights

    load_weights(model, Path(folder) / "model.safetensors").eval()
    cpu = torch.device("cpu")

    @torch.inference_mode()
    def probabilities(images: np.ndarray) -> np.ndarray:
        return np.concatenate([
            model(normalised_tensor(images[start:start + 500], dataset, cpu)).float()
            .softmax(dim=-1).double().numpy() for start in range(0, len(images), 500)])

    return ImageNetwork(probabilities, list(class_names(dataset)), image_shape(dataset))
