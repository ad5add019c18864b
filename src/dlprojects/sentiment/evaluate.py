"""Stage evaluate_sentiment: test figures of the trained RNN (the test split's only use), added to
its MLflow run: metrics, ROC and precision-recall curves, confusion matrix, example reviews; and
the test predictions."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
from pathlib import Path

import numpy as np

from dlprojects.core import datasets, plots, registry, tracking
from dlprojects.core.config import load_section
from dlprojects.core.errors import run_main
from dlprojects.core.evaluation import confusion_matrix, write_json, write_predictions
from dlprojects.core.history import best_epoch, best_of_history, read_history
from dlprojects.core.integrity import check_model
from dlprojects.core.projects import project
from dlprojects.core.runtime import autocast_on, select_device, set_threads
from dlprojects.core.training import predict
from dlprojects.sentiment.batches import ReviewBatches
from dlprojects.sentiment.evaluation import (binary_metrics, curves, example_reviews, write_columns,
                                             write_examples)
from dlprojects.sentiment.model import load_rnn
from dlprojects.sentiment.params import EvaluateSentimentParams
from dlprojects.sentiment.reviews import read_reviews, split_validation
from dlprojects.sentiment.store import Embeddings, load_split


def main() -> None:
    args = _parse_args()
    params = load_section("evaluate_sentiment")
    check_model("sentiment", args.model_dir)  # before any work

    set_threads(params.threads)
    device = select_device(params.device)
    rnn, saved = load_rnn(args.model_dir)
    store = load_split(args.embeddings, "test")
    batches = ReviewBatches(store, np.arange(len(store)), params.batch_size, device=device)
    probabilities, labels = predict(rnn.to(device), batches(), device,
                                    amp=autocast_on(device, saved["train"]["loop"]["amp"]))
    positive, labels = probabilities[:, 1].double().numpy(), labels.numpy()

    test = binary_metrics(labels, positive)
    history = read_history(args.reports / "history.csv")
    metrics = ({f"test_{name}": value for name, value in test.items()}
               | best_of_history(history)
               | {"best_epoch": best_epoch(history), "epochs_run": len(history),
                  "test_reviews": len(labels)})
    write_json(metrics, args.reports / "metrics.json")
    write_predictions(labels, np.stack([1 - positive, positive], axis=1),
                      args.reports / "predictions.csv", predicted=positive >= 0.5)
    outputs, reviews = _outputs(args, params, store, saved, history, labels, positive, test)

    with tracking.resume_run("sentiment", args.model_dir):
        tracking.log_summary(metrics)
        tracking.log_artifacts(outputs, artifact_path="evaluation")
        datasets.log_splits(args.embeddings.as_posix(), "imdb", _split_rows(args.embeddings, saved))
        if params.log_model:
            _publish(args, metrics, example=reviews[:2], results=(labels, positive >= 0.5))
    print(f"evaluate_sentiment: {len(labels)} test reviews, accuracy {test['accuracy']:.4f}, "
          f"F1 {test['f1']:.4f}, ROC-AUC {test['roc_auc']:.4f}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("embeddings", type=Path, help="data/embeddings/imdb")
    parser.add_argument("imdb", type=Path, help="data/raw/imdb (the example reviews' text)")
    parser.add_argument("bert", type=Path, help="data/raw/bert (travels with the logged model)")
    parser.add_argument("model_dir", type=Path, help="models/sentiment")
    parser.add_argument("reports", type=Path, help="reports/sentiment (holds history.csv)")
    return parser.parse_args()


def _outputs(args: argparse.Namespace, params: EvaluateSentimentParams, store: Embeddings,
             saved: dict, history: list[dict[str, float]], labels: np.ndarray,
             positive: np.ndarray, test: dict[str, float]) -> tuple[list[Path], list[str]]:
    """(the curves, figures and example reviews written to `args.reports`, and the text of each
    test review in `store`'s order)."""
    roc, pr = curves(labels, positive)
    texts, _ = read_reviews(args.imdb / "test.jsonl")
    reviews = [texts[row] for row in store.rows]
    examples = example_reviews(reviews, labels, positive, params.examples)
    cell = f"bi-{saved['model']['cell'].upper()}"
    outputs = [
        write_columns(roc, args.reports / "roc.csv"),
        write_columns(pr, args.reports / "pr.csv"),
        plots.loss_curves({cell: history}, args.reports / "loss_curves.png", title="IMDB"),
        plots.roc_pr_curves({cell: {**roc, **pr, **test}}, args.reports / "roc_pr.png",
                            title="IMDB test"),
        plots.confusion_figure(confusion_matrix(labels, (positive >= 0.5).astype(int), 2),
                               ["negative", "positive"], args.reports / "confusion.png",
                               title=f"IMDB test, accuracy {test['accuracy']:.3f}"),
    ]
    write_examples(examples, args.reports / "examples.csv", args.reports / "examples.md")
    return outputs + [args.reports / "examples.csv", args.reports / "examples.md",
                      args.reports / "metrics.json"], reviews


def _publish(args: argparse.Namespace, metrics: dict, example: list[str],
             results: tuple[np.ndarray, np.ndarray]) -> None:
    """Log the RNN with its BERT as a review-text model, register it once and promote it on a
    significant gain in its `results` (test labels, predicted classes)."""
    from dlprojects.core.serving.reviews import log_review_classifier
    uri = registry.publish(
        project("sentiment").model(args.model_dir).name, args.model_dir,
        lambda: log_review_classifier(args.model_dir, args.bert, example),
        metrics={k: v for k, v in metrics.items() if k.startswith("test_")},
        inputs=[args.embeddings.as_posix(), args.bert.as_posix()], results=results)
    print(f"evaluate_sentiment: {uri}", flush=True)


def _split_rows(embeddings: Path, saved: dict) -> dict[str, int]:
    """Reviews the RNN was trained, validated and tested on (the split's sizes depend on the
    class counts alone, not on the seed that draws it)."""
    train = load_split(embeddings, "train")
    fit, validation = split_validation(train.labels, saved["train"]["val_fraction"], seed=0)
    return {"train": len(fit), "validation": len(validation),
            "test": len(load_split(embeddings, "test"))}


if __name__ == "__main__":
    run_main(main)
