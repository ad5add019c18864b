"""Registered models that take what a user has: images as the data sets store them (uint8 pixels,
28x28 grey) or review texts in; one probability per class, in columns named by class, and the
predicted label out (`images`, `reviews`). Each evaluate stage logs its model as an MLflow pyfunc
with a signature and an input example, so `make serve MODEL=models:/<name>@champion`
(`dlprojects.serve`, or `mlflow models serve --env-manager local`) serves it and
`mlflow.pyfunc.load_model` loads it with nothing from the project's data folders.

A request the model cannot answer (wrong shape or type, an empty or oversized batch, an empty
review) is an `MlflowException` with INVALID_PARAMETER_VALUE: the server answers 400 and goes on.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.types import ColSpec, Schema

HERE = Path(__file__).parent  # the models' code files: image_model.py, review_model.py


def bad_request(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def class_frame(probabilities: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """One column of probabilities per class, named by class, and the predicted `label`."""
    frame = pd.DataFrame(np.asarray(probabilities, dtype=np.float64), columns=list(classes))
    frame["label"] = [classes[index] for index in np.argmax(probabilities, axis=1)]
    return frame


def output_schema(classes: Sequence[str]) -> Schema:
    return Schema([ColSpec("double", name) for name in classes] + [ColSpec("string", "label")])


def requirements(*packages: str) -> list[str]:
    """Exact pins of the installed `packages` (torch without its local build tag)."""
    return [f"{name}=={version(name).split('+')[0]}" for name in packages]


MODEL_PACKAGES = ("numpy", "pandas", "torch", "safetensors", "PyYAML")  # what dlprojects imports


PACKAGE = Path(__file__).resolve().parent.parent.parent  # src/dlprojects
SHARED = ("__init__.py", "numerics", "core")  # what every model's code needs


@contextmanager
def model_code(model_dir: Path) -> Iterator[Path]:
    """A scratch copy of the code a logged model needs, as a `dlprojects` package: the shared
    core and the one project whose builder `model_dir`/model.json names (MLflow's `code_paths`)."""
    from dlprojects.core.models import manifest

    project = manifest(model_dir)["builder"].split(":")[0].split(".")[1]
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    with tempfile.TemporaryDirectory(prefix="dlprojects-code-") as scratch:
        package = Path(scratch) / "dlprojects"
        package.mkdir()
        for name in (*SHARED, project):
            source = PACKAGE / name
            if source.is_dir():
                shutil.copytree(source, package / name, ignore=skip)
            else:
                shutil.copy2(source, package / name)
        yield package
