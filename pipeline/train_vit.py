"""Stage train_vit: a Vision Transformer from scratch on train_vit.dataset, tracked in MLflow."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import dataclasses
import math
from pathlib import Path

import torch
from torch import nn

from dlprojects import tracking
from dlprojects.augment import augmenter
from dlprojects.config import load_section
from dlprojects.data.cifar import load_splits, normalised_tensor
from dlprojects.errors import run_main
from dlprojects.models.checkpoints import save_model
from dlprojects.models.vit import ViT
from dlprojects.training import (TensorBatches, fingerprint, fit, seed_everything, select_device,
                                 set_threads)

NO_DECAY = ("pos_embedding", "cls_token")  # besides every bias and norm weight (1-D tensors)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay the weight matrices and kernels only."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        plain = parameter.ndim < 2 or name.split(".")[-1] in NO_DECAY
        (no_decay if plain else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LambdaLR factor per step: linear from 1/warmup_steps up to 1, then cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="data/raw/<train_vit.dataset>")
    parser.add_argument("model_dir", type=Path, help="models/vit")
    parser.add_argument("history", type=Path, help="reports/vit/history.csv")
    args = parser.parse_args()
    params = load_section("train_vit")
    loop, resolved = params.loop, dataclasses.asdict(params)

    set_threads(loop.threads)
    device = select_device(loop.device)
    generator = seed_everything(loop.seed, deterministic=loop.deterministic)
    splits = load_splits(params.dataset, args.data, **dataclasses.asdict(params.data))

    def batches(images, labels, shuffle=False, augment=None):
        return TensorBatches(normalised_tensor(images, params.dataset, device),
                             torch.from_numpy(labels).to(device), loop.batch_size, shuffle=shuffle,
                             augment=augment)

    train = batches(splits.train_images, splits.train_labels, shuffle=True,
                    augment=augmenter(crop_padding=params.crop_padding, flip=params.flip))
    val = batches(splits.val_images, splits.val_labels)  # test is left to evaluate_vit

    model = ViT(**params.model_kwargs()).to(device)
    if params.compile:
        model.compile()  # in place: the state_dict keeps its keys
    optimizer = torch.optim.AdamW(parameter_groups(model, params.weight_decay), lr=params.lr)
    steps_per_epoch = math.ceil(len(train) / loop.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        round(params.warmup_epochs * steps_per_epoch), loop.epochs * steps_per_epoch))

    checkpoint, run_fingerprint = Path("checkpoints/vit.pt"), fingerprint(resolved)
    with tracking.start_run("vit", resolved, inputs=[args.data.as_posix()], device=str(device),
                            checkpoint=checkpoint, fingerprint=run_fingerprint) as run:
        tracking.log_summary({"parameters": sum(p.numel() for p in model.parameters())})
        result = fit(model, optimizer=optimizer, scheduler=scheduler,
                     loss_fn=nn.CrossEntropyLoss(label_smoothing=params.label_smoothing),
                     eval_loss_fn=nn.CrossEntropyLoss(), train=train, train_size=len(train),
                     evals={"val": val}, epochs=loop.epochs, device=device, generator=generator,
                     amp=loop.amp, history_file=args.history, checkpoint=checkpoint,
                     run_fingerprint=run_fingerprint, on_epoch=tracking.log_epoch)
        save_model(model, args.model_dir / "model.safetensors", resolved)
        tracking.tag_model(args.model_dir)
        train_seconds = sum(row["epoch_seconds"] for row in result.history)
        tracking.log_summary({"best_epoch": result.best_epoch, "train_seconds": train_seconds})
        tracking.log_artifacts([args.history])
        print(f"train_vit: best epoch {result.best_epoch} (val accuracy "
              f"{result.history[result.best_epoch - 1]['val_accuracy']:.4f}), "
              f"{train_seconds:.0f} s training, run {run.info.run_id}")


if __name__ == "__main__":
    run_main(main)
