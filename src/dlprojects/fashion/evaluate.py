"""Stage evaluate_fashion: test figures of every variant, the gain over the baseline, plots, and
each variant's test predictions."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlprojects.core import plots, tracking
from dlprojects.core.config import load_section
from dlprojects.core.data.images import ImageSplits, load_image_splits
from dlprojects.core.errors import run_main
from dlprojects.core.evaluation import classifier_metrics, write_json, write_predictions
from dlprojects.core.history import best_epoch, read_history
from dlprojects.core.image_evaluation import log_and_publish
from dlprojects.core.integrity import check_model
from dlprojects.core.runtime import select_device
from dlprojects.core.training import TensorBatches, predict
from dlprojects.core.weights import load_weights
from dlprojects.fashion.model import DenseClassifier
from dlprojects.fashion.params import FashionVariantParams

SAMPLES = 10  # test images shown with their predicted probabilities, 4 of them misclassified


def main() -> None:
    args = _parse_args()
    params = load_section("train_fashion")
    for variant in params.variants:  # before any work
        check_model("fashion", args.models / variant)
    device = select_device(params.loop.device)
    splits = load_image_splits("fashion_mnist", args.data,
                               validation_size=params.data.validation_size,
                               seed=params.data.seed, test_samples=params.data.test_samples)
    test = TensorBatches.of_images(splits.test_images, splits.test_labels, "fashion_mnist", device,
                                   1000)

    metrics, histories = {}, {}
    for variant, config in params.variants.items():
        metrics[variant], histories[variant] = _evaluate(
            args, variant, config, splits, test, device, samples=variant == params.model_variant)
    curves = plots.loss_curves(histories, args.reports / "loss_curves.png",
                               splits=("train", "test"), title="FashionMNIST")
    if "baseline" in metrics:
        for variant in metrics:
            if variant != "baseline":
                metrics[variant]["gain_over_baseline_points"] = 100 * (
                    metrics[variant]["test_accuracy"] - metrics["baseline"]["test_accuracy"])
    write_json(metrics, args.reports / "metrics.json")
    for variant in params.variants:
        with tracking.resume_run("fashion", args.models / variant):
            tracking.log_artifacts([curves, args.reports / "metrics.json"], artifact_path="figures")
    for variant, values in metrics.items():
        print(f"{variant}: test accuracy {values['test_accuracy']:.4f}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="data/raw/fashion_mnist")
    parser.add_argument("models", type=Path, help="models/fashion (one folder per variant)")
    parser.add_argument("reports", type=Path, help="reports/fashion (histories in, figures out)")
    return parser.parse_args()


def _evaluate(args: argparse.Namespace, variant: str, config: FashionVariantParams,
              splits: ImageSplits, test: TensorBatches, device: torch.device,
              samples: bool) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """(test metrics, history) of one variant, whose predictions and figures are written, added
    to its MLflow run and its model published; `samples`: the sample figure too."""
    names = splits.class_names
    model = DenseClassifier(hidden=config.hidden, batch_norm=config.batch_norm,
                            dropout=config.dropout)
    load_weights(model, args.models / variant / "model.safetensors").to(device)
    probabilities, labels = (t.numpy() for t in predict(model, test(), device))
    metrics, matrix = classifier_metrics(probabilities, labels, names)
    history = read_history(args.reports / variant / "history.csv")
    metrics["best_epoch"] = best_epoch(history)
    write_predictions(labels, probabilities, args.reports / f"predictions_{variant}.csv")
    figures = [plots.confusion_figure(matrix, names, args.reports / f"confusion_{variant}.png",
                                      title=f"{variant}: test confusion matrix")]
    if samples:
        figures.append(_sample_figure(splits, probabilities, labels, args.reports / "samples.png"))
    log_and_publish("fashion", args.models / variant, metrics, history, figures, splits, args.data,
                    predicted=probabilities.argmax(axis=1))
    return metrics, history


def _sample_figure(splits, probabilities, labels, path):
    """A fixed, seeded choice of test images: some right, some misclassified."""
    predictions = probabilities.argmax(axis=1)
    rng = np.random.default_rng(0)
    wrong, right = np.flatnonzero(predictions != labels), np.flatnonzero(predictions == labels)
    chosen = np.concatenate([rng.choice(right, SAMPLES - min(4, len(wrong)), replace=False),
                             rng.choice(wrong, min(4, len(wrong)), replace=False)])
    return plots.probability_bars(splits.test_images[chosen], probabilities[chosen], labels[chosen],
                                  splits.class_names, path)


if __name__ == "__main__":
    run_main(main)
