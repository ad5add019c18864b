"""Stage evaluate_vit: test figures of the trained ViT, its curves, confusion matrix, attention
rollout maps, one image cut into patches, and the test predictions."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
from pathlib import Path

import numpy as np
import torch

from dlprojects.core import plots
from dlprojects.core.config import load_section
from dlprojects.core.data.images import ImageSplits, normalised_tensor
from dlprojects.core.errors import run_main
from dlprojects.core.evaluation import classifier_metrics, write_json, write_predictions
from dlprojects.core.history import best_epoch, read_history
from dlprojects.core.image_evaluation import log_and_publish
from dlprojects.core.integrity import check_model
from dlprojects.core.runtime import autocast_on, select_device, set_threads
from dlprojects.core.training import TensorBatches, predict
from dlprojects.core.weights import load_weights
from dlprojects.vit.data import load_splits
from dlprojects.vit.model import ViT, attention_rollout
from dlprojects.vit.params import TrainVitParams

SAMPLES = 8  # test images under the attention maps: one per class, the first two classes again


def main() -> None:
    args = _parse_args()
    params = load_section("train_vit")
    check_model("vit", args.model_dir)  # before any work
    set_threads(params.loop.threads)
    device = select_device(params.loop.device)
    splits = load_splits(params.dataset, args.data, validation_size=params.data.validation_size,
                         seed=params.data.seed, test_samples=params.data.test_samples)
    test_images = normalised_tensor(splits.test_images, params.dataset, device)
    test = TensorBatches(test_images, torch.from_numpy(splits.test_labels).to(device), 500)

    model = load_weights(ViT(**params.model_kwargs()), args.model_dir / "model.safetensors")
    model.to(device).eval()
    amp = autocast_on(device, params.loop.amp)
    probabilities, labels = (t.numpy() for t in predict(model, test(), device, amp))
    test, matrix = classifier_metrics(probabilities, labels, splits.class_names)
    history = read_history(args.reports / "history.csv")
    metrics = {"dataset": params.dataset, **test, "best_epoch": best_epoch(history),
               "epochs": len(history), "parameters": sum(p.numel() for p in model.parameters())}
    figures = _figures(args.reports, params, model, test_images, splits, probabilities, labels,
                       matrix, history)
    write_json(metrics, args.reports / "metrics.json")
    write_predictions(labels, probabilities, args.reports / "predictions.csv")
    uri = log_and_publish("vit", args.model_dir, metrics, history,
                          [*figures, args.reports / "metrics.json"], splits, args.data,
                          predicted=probabilities.argmax(axis=1), leave_out=("epochs",))
    print(f"evaluate_vit: test accuracy {metrics['test_accuracy']:.4f} on {params.dataset}, {uri}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="data/raw/<train_vit.dataset>")
    parser.add_argument("model_dir", type=Path, help="models/vit")
    parser.add_argument("reports", type=Path, help="reports/vit (history in, figures out)")
    return parser.parse_args()


def _figures(reports: Path, params: TrainVitParams, model: ViT, test_images: torch.Tensor,
             splits: ImageSplits, probabilities: np.ndarray, labels: np.ndarray,
             matrix: np.ndarray, history: list[dict[str, float]]) -> list[Path]:
    """Curves, confusion matrix, attention rollout of `SAMPLES` test images and the first of them
    cut into patches, drawn into `reports`."""
    names = splits.class_names
    predictions = probabilities.argmax(axis=1)
    chosen = _one_per_class(labels, SAMPLES)
    with torch.inference_mode():
        _, attentions = model(test_images[chosen], return_attention=True)
    rollouts = attention_rollout(attentions).float().cpu().numpy()  # (SAMPLES, patches)
    captions = [names[labels[i]] if predictions[i] == labels[i]
                else f"{names[labels[i]]}\n(predicted {names[predictions[i]]})" for i in chosen]
    title = f"ViT on {params.dataset}"
    return [
        plots.loss_curves({"vit": history}, reports / "loss_curves.png",
                          splits=("train", "val"), title=title),
        plots.confusion_figure(matrix, names, reports / "confusion.png",
                               title=f"{title}: test confusion matrix"),
        plots.attention_maps(splits.test_images[chosen], rollouts, captions,
                             reports / "attention.png",
                             title="attention rollout from the class token over the patches"),
        plots.patch_grid(splits.test_images[chosen[0]], params.patch_size,
                         reports / "patches.png",
                         title=f"a test {names[labels[chosen[0]]]} as the ViT sees it"),
    ]


def _one_per_class(labels: np.ndarray, count: int) -> np.ndarray:
    """The first test images of each class in turn: a fixed choice, so figures compare across
    runs."""
    chosen: list[int] = []
    classes = np.unique(labels)
    while len(chosen) < min(count, len(labels)):
        for label in classes:
            left = np.flatnonzero((labels == label) & ~np.isin(np.arange(len(labels)), chosen))
            if len(left) and len(chosen) < count:
                chosen.append(int(left[0]))
    return np.array(chosen)


if __name__ == "__main__":
    run_main(main)
