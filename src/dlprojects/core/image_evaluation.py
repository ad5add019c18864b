"""What the evaluate stages of the image classifiers end with: the test metrics and figures added
to the model's MLflow run, and the model logged, registered and promoted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlprojects.core import tracking
from dlprojects.core.data.images import ImageSplits
from dlprojects.core.history import best_of_history
from dlprojects.core.projects import project

HEADLINE = ("test_accuracy", "test_loss")  # the metrics a registered version carries


def log_and_publish(name: str, model_dir: Path, metrics: dict[str, Any],
                    history: list[dict[str, float]], figures: Sequence[Path], splits: ImageSplits,
                    data: Path, *, predicted: np.ndarray, leave_out: Sequence[str] = ()) -> str:
    """In the run that trained the model in `model_dir` (experiment `name`): the numeric `metrics`
    but those in `leave_out` and the best of each `history` column as summary metrics, `figures`
    as artifacts under figures/; then the model, published with its test accuracy and loss and
    the classes it `predicted` for the test images. Returns the URI to load it by."""
    with tracking.resume_run(name, model_dir):
        tracking.log_summary({k: v for k, v in metrics.items()
                              if isinstance(v, (int, float)) and k not in leave_out}
                             | best_of_history(history))
        tracking.log_artifacts(list(figures), artifact_path="figures")
        from dlprojects.core.serving.images import publish_image_classifier

        return publish_image_classifier(project(name).model(model_dir).name, model_dir, splits,
                                        data, {k: metrics[k] for k in HEADLINE},
                                        predicted=predicted)
