"""Stage train_vit: a Vision Transformer from scratch on train_vit.dataset, tracked in MLflow."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import dataclasses
from pathlib import Path

import torch
from torch import nn

from dlprojects.core import models, runtime, tracking
from dlprojects.core.augment import augmenter
from dlprojects.core.config import load_section
from dlprojects.core.errors import run_main
from dlprojects.core.history import history_writer
from dlprojects.core.resume import Checkpoint
from dlprojects.core.training import TensorBatches, decay_groups, fit, warmup_cosine
from dlprojects.core.weights import save_model
from dlprojects.vit.data import load_splits
from dlprojects.vit.model import NO_DECAY, ViT, classifier


def main() -> None:
    args = _parse_args()
    params = load_section("train_vit")
    loop, resolved = params.loop, dataclasses.asdict(params)

    run = runtime.start(loop)
    splits = load_splits(params.dataset, args.data, **dataclasses.asdict(params.data))
    train = TensorBatches.of_images(splits.train_images, splits.train_labels, params.dataset,
                                    run.device, loop.batch_size, shuffle=True,
                                    augment=augmenter(crop_padding=params.crop_padding,
                                                      flip=params.flip))
    val = TensorBatches.of_images(splits.val_images, splits.val_labels, params.dataset,
                                  run.device, loop.batch_size)  # test is left to evaluate_vit

    model = ViT(**params.model_kwargs()).to(run.device)
    if params.compile:
        model.compile()  # in place: the state_dict keeps its keys
    optimizer = torch.optim.AdamW(decay_groups(model, params.weight_decay, no_decay=NO_DECAY),
                                  lr=params.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        round(params.warmup_epochs * train.steps), loop.epochs * train.steps))

    checkpoint = Checkpoint.of("vit", resolved)
    with tracking.start_run("vit", resolved, inputs=[args.data.as_posix()], device=str(run.device),
                            checkpoint=checkpoint) as mlflow_run:
        tracking.log_summary({"parameters": sum(p.numel() for p in model.parameters())})
        result = fit(model, run, optimizer=optimizer, scheduler=scheduler,
                     loss_fn=nn.CrossEntropyLoss(label_smoothing=params.label_smoothing),
                     eval_loss_fn=nn.CrossEntropyLoss(), train=train, evals={"val": val},
                     checkpoint=checkpoint, on_epoch=tracking.log_epoch,
                     on_history=history_writer(args.history))
        if not run.world.main:
            return  # rank 0 writes
        save_model(model, args.model_dir / "model.safetensors", resolved)
        models.describe(args.model_dir, classifier, "images")
        tracking.log_training(result, args.model_dir, args.history)
        print(f"train_vit: best epoch {result.best_epoch} (val accuracy "
              f"{result.best['val_accuracy']:.4f}), {result.train_seconds:.0f} s training, "
              f"run {mlflow_run.info.run_id}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="data/raw/<train_vit.dataset>")
    parser.add_argument("model_dir", type=Path, help="models/vit")
    parser.add_argument("history", type=Path, help="reports/vit/history.csv")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main)
