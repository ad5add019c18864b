"""Stage train_digits: softmax regression on MNIST, tracked in MLflow."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import dataclasses
from pathlib import Path

import torch
from torch import nn

from dlprojects.core import models, runtime, tracking
from dlprojects.core.config import load_section
from dlprojects.core.data.images import load_image_splits
from dlprojects.core.errors import run_main
from dlprojects.core.history import history_writer
from dlprojects.core.resume import Checkpoint
from dlprojects.core.training import TensorBatches, fit
from dlprojects.core.weights import save_model
from dlprojects.digits.model import classifier, network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="data/raw/mnist")
    parser.add_argument("model_dir", type=Path, help="models/digits")
    parser.add_argument("history", type=Path, help="reports/digits/history.csv")
    args = parser.parse_args()
    params = load_section("train_digits")
    loop, resolved = params.loop, dataclasses.asdict(params)

    run = runtime.start(loop)
    splits = load_image_splits("mnist", args.data, **dataclasses.asdict(params.data))
    train = TensorBatches.of_images(splits.train_images, splits.train_labels, "mnist", run.device,
                                    loop.batch_size, shuffle=True)
    val = TensorBatches.of_images(splits.val_images, splits.val_labels, "mnist", run.device,
                                  loop.batch_size)
    model = network().to(run.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr,
                                  weight_decay=params.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, loop.epochs * train.steps)

    checkpoint = Checkpoint.of("digits", resolved)
    with tracking.start_run("digits", resolved, inputs=[args.data.as_posix()],
                            device=str(run.device), checkpoint=checkpoint):
        result = fit(model, run, optimizer=optimizer, scheduler=scheduler,
                     loss_fn=nn.CrossEntropyLoss(), train=train, evals={"val": val},
                     checkpoint=checkpoint, on_epoch=tracking.log_epoch,
                     on_history=history_writer(args.history))
        if not run.world.main:
            return  # rank 0 writes
        save_model(model, args.model_dir / "model.safetensors", resolved)
        models.describe(args.model_dir, classifier, "images")
        tracking.log_training(result, args.model_dir, args.history)


if __name__ == "__main__":
    run_main(main)
