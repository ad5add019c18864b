"""Stage train_fashion@<variant>: the dense FashionMNIST classifier, tracked in MLflow."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import dataclasses
from pathlib import Path

import torch
from torch import nn

from dlprojects.core import models, runtime, tracking
from dlprojects.core.augment import augmenter
from dlprojects.core.config import load_section
from dlprojects.core.data.images import load_image_splits
from dlprojects.core.errors import run_main
from dlprojects.core.history import history_writer
from dlprojects.core.resume import Checkpoint
from dlprojects.core.training import TensorBatches, fit
from dlprojects.core.weights import save_model
from dlprojects.fashion.model import DenseClassifier, classifier


def main() -> None:
    args = _parse_args()
    params = load_section("train_fashion")
    variant, resolved = params.variant(args.variant), params.resolved(args.variant)
    loop = params.loop

    run = runtime.start(loop)
    splits = load_image_splits("fashion_mnist", args.data, **dataclasses.asdict(params.data))
    train = TensorBatches.of_images(splits.train_images, splits.train_labels, "fashion_mnist",
                                    run.device, loop.batch_size, shuffle=True,
                                    augment=augmenter(crop_padding=params.crop_padding,
                                                      flip=params.flip))
    val = TensorBatches.of_images(splits.val_images, splits.val_labels, "fashion_mnist",
                                  run.device, loop.batch_size)
    test = TensorBatches.of_images(splits.test_images, splits.test_labels, "fashion_mnist",
                                   run.device, loop.batch_size)  # per-epoch curve; never selects

    model = DenseClassifier(**dataclasses.asdict(variant)).to(run.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr,
                                  weight_decay=params.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                           T_max=loop.epochs * train.steps)

    checkpoint = Checkpoint.of(f"fashion-{args.variant}", resolved)
    with tracking.start_run("fashion", resolved, inputs=[args.data.as_posix()],
                            device=str(run.device), checkpoint=checkpoint) as mlflow_run:
        tracking.log_summary({"parameters": sum(p.numel() for p in model.parameters())})
        result = fit(model, run, optimizer=optimizer, scheduler=scheduler,
                     loss_fn=nn.CrossEntropyLoss(label_smoothing=params.label_smoothing),
                     eval_loss_fn=nn.CrossEntropyLoss(), train=train,
                     evals={"val": val, "test": test}, checkpoint=checkpoint,
                     on_epoch=tracking.log_epoch, on_history=history_writer(args.history))
        if not run.world.main:
            return  # rank 0 writes
        save_model(model, args.model_dir / "model.safetensors", resolved)
        models.describe(args.model_dir, classifier, "images")
        tracking.log_training(result, args.model_dir, args.history)
        print(f"train_fashion@{args.variant}: best epoch {result.best_epoch}, "
              f"run {mlflow_run.info.run_id}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variant")
    parser.add_argument("data", type=Path, help="data/raw/fashion_mnist")
    parser.add_argument("model_dir", type=Path, help="models/fashion/<variant>")
    parser.add_argument("history", type=Path, help="reports/fashion/<variant>/history.csv")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main)
