"""Stage evaluate_digits: test figures of the trained model, registered as `digits`."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
from pathlib import Path

from dlprojects.core import plots, tracking
from dlprojects.core.config import load_section
from dlprojects.core.data.images import load_image_splits
from dlprojects.core.errors import run_main
from dlprojects.core.evaluation import classifier_metrics, write_json, write_predictions
from dlprojects.core.history import best_epoch, best_of_history, read_history
from dlprojects.core.integrity import check_model
from dlprojects.core.models import load
from dlprojects.core.projects import project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="data/raw/mnist")
    parser.add_argument("model_dir", type=Path, help="models/digits")
    parser.add_argument("reports", type=Path, help="reports/digits (history in, figures out)")
    args = parser.parse_args()
    data = load_section("train_digits").data
    check_model("digits", args.model_dir)  # before any work
    splits = load_image_splits("mnist", args.data, validation_size=data.validation_size,
                               seed=data.seed, test_samples=data.test_samples)
    network = load(args.model_dir)  # the builder its model.json names
    probabilities = network.probabilities(splits.test_images)
    test, matrix = classifier_metrics(probabilities, splits.test_labels, splits.class_names)
    history = read_history(args.reports / "history.csv")
    metrics = {**test, "best_epoch": best_epoch(history)}
    figures = [plots.confusion_figure(matrix, splits.class_names, args.reports / "confusion.png"),
               plots.loss_curves({"digits": history}, args.reports / "loss_curves.png")]
    write_json(metrics, args.reports / "metrics.json")
    write_predictions(splits.test_labels, probabilities, args.reports / "predictions.csv")
    with tracking.resume_run("digits", args.model_dir):
        tracking.log_summary({k: v for k, v in metrics.items() if isinstance(v, (int, float))}
                             | best_of_history(history))
        tracking.log_artifacts([*figures, args.reports / "metrics.json"], artifact_path="figures")
        from dlprojects.core.serving.images import publish_image_classifier

        uri = publish_image_classifier(project("digits").model(args.model_dir).name,
                                       args.model_dir, splits, args.data,
                                       {k: metrics[k] for k in ("test_accuracy", "test_loss")},
                                       predicted=probabilities.argmax(axis=1))
    print(f"evaluate_digits: test accuracy {metrics['test_accuracy']:.4f}, {uri}")


if __name__ == "__main__":
    run_main(main)
