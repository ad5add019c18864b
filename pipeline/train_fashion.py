"""Stage train_fashion@<variant>: the dense FashionMNIST classifier, tracked in MLflow."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import dataclasses
from pathlib import Path

import torch
from torch import nn

from dlprojects import tracking
from dlprojects.augment import augmenter
from dlprojects.config import ConfigError, load_section
from dlprojects.data.images import PIXEL_STATS, load_image_splits, to_tensor
from dlprojects.errors import run_main
from dlprojects.models.checkpoints import save_model
from dlprojects.models.fashion_mlp import DenseClassifier
from dlprojects.training import (TensorBatches, fingerprint, fit, seed_everything, select_device,
                                 set_threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variant")
    parser.add_argument("data", type=Path, help="data/raw/fashion_mnist")
    parser.add_argument("model_dir", type=Path, help="models/fashion/<variant>")
    parser.add_argument("history", type=Path, help="reports/fashion/<variant>/history.csv")
    args = parser.parse_args()
    params = load_section("train_fashion")
    if args.variant not in params.variants:
        raise ConfigError(f"train_fashion.variants: no variant '{args.variant}' "
                          f"(known: {', '.join(params.variants)})")
    variant, loop = params.variants[args.variant], params.loop
    resolved = {**dataclasses.asdict(params), "variant": args.variant,
                "variants": {args.variant: dataclasses.asdict(variant)}}

    set_threads(loop.threads)
    device = select_device(loop.device)
    generator = seed_everything(loop.seed, deterministic=loop.deterministic)
    splits = load_image_splits("fashion_mnist", args.data, **dataclasses.asdict(params.data))
    mean, std = PIXEL_STATS["fashion_mnist"]

    def batches(images, labels, shuffle=False, augment=None):
        return TensorBatches(to_tensor(images, device, mean=mean, std=std),
                             torch.from_numpy(labels).to(device), loop.batch_size, shuffle=shuffle,
                             augment=augment)

    train = batches(splits.train_images, splits.train_labels, shuffle=True,
                    augment=augmenter(crop_padding=params.crop_padding, flip=False))
    val = batches(splits.val_images, splits.val_labels)
    test = batches(splits.test_images, splits.test_labels)  # per-epoch curve only; never selects

    model = DenseClassifier(hidden=variant.hidden, batch_norm=variant.batch_norm,
                            dropout=variant.dropout).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    steps = loop.epochs * -(-len(train) // loop.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    checkpoint = Path("checkpoints") / f"fashion-{args.variant}.pt"
    run_fingerprint = fingerprint(resolved)
    with tracking.start_run("fashion", resolved, inputs=[args.data.as_posix()], device=str(device),
                            checkpoint=checkpoint, fingerprint=run_fingerprint) as run:
        tracking.log_summary({"parameters": sum(p.numel() for p in model.parameters())})
        result = fit(model, optimizer=optimizer, scheduler=scheduler,
                     loss_fn=nn.CrossEntropyLoss(label_smoothing=params.label_smoothing),
                     eval_loss_fn=nn.CrossEntropyLoss(), train=train, train_size=len(train),
                     evals={"val": val, "test": test}, epochs=loop.epochs, device=device,
                     generator=generator, amp=loop.amp, history_file=args.history,
                     checkpoint=checkpoint, run_fingerprint=run_fingerprint,
                     on_epoch=tracking.log_epoch)
        save_model(model, args.model_dir / "model.safetensors", resolved)
        tracking.tag_model(args.model_dir)
        tracking.log_summary({"best_epoch": result.best_epoch,
                              "train_seconds": sum(r["epoch_seconds"] for r in result.history)})
        tracking.log_artifacts([args.history])
        print(f"train_fashion@{args.variant}: best epoch {result.best_epoch}, run {run.info.run_id}")


if __name__ == "__main__":
    run_main(main)
