"""Stage evaluate_backprop@<mlp|cnn>: test accuracy, confusion matrix, misclassified digits, the
test predictions."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from dlprojects.backprop import network, numpy_nn
from dlprojects.core import plots
from dlprojects.core.config import load_section
from dlprojects.core.data.images import load_image_splits
from dlprojects.core.errors import run_main
from dlprojects.core.evaluation import (confusion_matrix, per_class_accuracy, write_json,
                                        write_predictions)
from dlprojects.core.history import best_epoch, read_history
from dlprojects.core.image_evaluation import log_and_publish
from dlprojects.core.integrity import check_model


def main() -> None:
    args = _parse_args()
    params = load_section("train_backprop")
    check_model("backprop", args.model_dir)  # before any work
    splits = load_image_splits("mnist", args.data, validation_size=params.data.validation_size,
                               seed=params.data.seed, test_samples=params.data.test_samples)
    model, _ = network.load(args.model_dir)
    with threadpool_limits(params.threads):
        loss, accuracy, predictions, probabilities = numpy_nn.evaluate(
            model, network.as_inputs(args.kind, splits.test_images), splits.test_labels,
            batch_size=1000)
    labels, names = splits.test_labels, splits.class_names
    matrix = confusion_matrix(labels, predictions, 10)
    history = read_history(args.reports / "history.csv")
    wrong = np.flatnonzero(predictions != labels)[:32]
    figures = [
        plots.confusion_figure(matrix, names, args.reports / "confusion.png",
                               title=f"NumPy {args.kind.upper()}: MNIST test confusion matrix"),
        plots.image_grid(splits.test_images[wrong],
                         [f"true {labels[i]}, said {predictions[i]}" for i in wrong],
                         args.reports / "misclassified.png", title="misclassified test digits"),
        plots.loss_curves({args.kind: history}, args.reports / "loss_curves.png",
                          title=f"NumPy {args.kind.upper()}"),
    ]
    metrics = {"test_accuracy": accuracy, "test_loss": loss, "best_epoch": best_epoch(history),
               "per_class_accuracy": per_class_accuracy(matrix, names)}
    write_json(metrics, args.reports / "metrics.json")
    write_predictions(labels, probabilities, args.reports / "predictions.csv")
    uri = log_and_publish("backprop", args.model_dir, metrics, history,
                          figures + [args.reports / "metrics.json"], splits, args.data,
                          predicted=predictions, leave_out=("best_epoch",))
    print(f"backprop {args.kind}: test accuracy {accuracy:.4f}, {uri}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["mlp", "cnn"])
    parser.add_argument("data", type=Path, help="data/raw/mnist")
    parser.add_argument("model_dir", type=Path, help="models/backprop/<kind>")
    parser.add_argument("reports", type=Path, help="reports/backprop/<kind>")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main)
