"""The sentiment test figures: binary metrics, ROC and precision-recall curves, example reviews."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlprojects.core.files import atomic_path, write_atomic
from dlprojects.sentiment.reviews import clean_review


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, F1, precision, recall (at 0.5), ROC-AUC, average precision and log loss of
    P(positive) against 0/1 labels."""
    from sklearn import metrics

    predictions = (probabilities >= 0.5).astype(np.int64)
    return {
        "accuracy": float(metrics.accuracy_score(labels, predictions)),
        "f1": float(metrics.f1_score(labels, predictions, zero_division=0)),
        "precision": float(metrics.precision_score(labels, predictions, zero_division=0)),
        "recall": float(metrics.recall_score(labels, predictions, zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(labels, probabilities)),
        "average_precision": float(metrics.average_precision_score(labels, probabilities)),
        "loss": float(metrics.log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7),
                                       labels=[0, 1])),
    }


def _thin(rows: dict[str, np.ndarray], points: int) -> dict[str, np.ndarray]:
    """At most `points` evenly spaced rows of a curve, its ends kept (plot files live in git)."""
    count = len(next(iter(rows.values())))
    keep = np.unique(np.linspace(0, count - 1, min(points, count)).round().astype(int))
    return {name: values[keep] for name, values in rows.items()}


def curves(labels: np.ndarray, probabilities: np.ndarray,
           points: int = 400) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(ROC: fpr, tpr, threshold; precision-recall: recall, precision, threshold), thinned."""
    from sklearn import metrics

    fpr, tpr, roc_thresholds = metrics.roc_curve(labels, probabilities)
    precision, recall, pr_thresholds = metrics.precision_recall_curve(labels, probabilities)
    roc = {"fpr": fpr, "tpr": tpr, "threshold": np.minimum(roc_thresholds, 1.0)}
    pr = {"recall": recall[:-1], "precision": precision[:-1], "threshold": pr_thresholds}
    return _thin(roc, points), _thin(pr, points)


def example_reviews(texts: Sequence[str], labels: np.ndarray, probabilities: np.ndarray,
                    count: int, excerpt: int = 300) -> list[dict[str, Any]]:
    """`count` test reviews to read, with P(positive): the most confident right ones of each
    class, the most confident wrong ones and the least sure (the last group fills any gap)."""
    predictions = (probabilities >= 0.5).astype(np.int64)
    confidence = np.abs(probabilities - 0.5)
    groups = [
        ("confident, right", np.flatnonzero((predictions == labels) & (labels == 1))),
        ("confident, right", np.flatnonzero((predictions == labels) & (labels == 0))),
        ("confident, wrong", np.flatnonzero(predictions != labels)),
        ("unsure", np.arange(len(labels))),
    ]
    chosen, seen, owed = [], set(), 0  # owed: what a short group leaves to the next one
    for number, (kind, members) in enumerate(groups):
        share = count // len(groups) + (number < count % len(groups)) + owed
        order = -confidence[members] if kind != "unsure" else confidence[members]
        taken = [i for i in members[np.argsort(order, kind="stable")] if i not in seen][:share]
        owed = share - len(taken)
        for index in taken:
            seen.add(index)
            text = clean_review(texts[index])
            chosen.append({"index": int(index), "kind": kind, "label": int(labels[index]),
                           "p_positive": round(float(probabilities[index]), 4),
                           "text": text if len(text) <= excerpt else text[:excerpt - 1] + "…"})
    return chosen


def write_examples(examples: list[dict[str, Any]], csv_path: Path, markdown_path: Path) -> None:
    """The examples as CSV (data) and as a Markdown table (for people)."""
    import csv

    with atomic_path(csv_path) as scratch, scratch.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["index", "kind", "label", "p_positive", "text"])
        writer.writeheader()
        writer.writerows(examples)
    names = {0: "negative", 1: "positive"}
    lines = ["| P(positive) | true label | kind | review (start) |", "|---:|---|---|---|"]
    for row in examples:
        text = row["text"].replace("|", "\\|")
        lines.append(f"| {row['p_positive']:.3f} | {names[row['label']]} | {row['kind']} "
                     f"| {text} |")
    write_atomic(markdown_path, "\n".join(lines) + "\n")


def write_columns(columns: dict[str, np.ndarray], path: Path) -> Path:
    """A CSV with one column per array (the ROC / PR plot files DVC renders)."""
    import csv

    with atomic_path(path) as scratch, scratch.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(columns))
        writer.writerows(zip(*[np.round(values, 6).tolist() for values in columns.values()]))
    return Path(path)
