"""Stage train_sentiment: the bidirectional RNN on stored BERT states, tracked in MLflow."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import dataclasses
from pathlib import Path

import torch
from torch import nn

from dlprojects.core import runtime, tracking
from dlprojects.core.config import load_section
from dlprojects.core.errors import run_main
from dlprojects.core.history import history_writer
from dlprojects.core.resume import Checkpoint
from dlprojects.core.training import fit
from dlprojects.sentiment.batches import ReviewBatches
from dlprojects.sentiment.model import SentimentRNN, save_rnn
from dlprojects.sentiment.params import TrainSentimentParams
from dlprojects.sentiment.reviews import split_validation
from dlprojects.sentiment.store import load_split, read_meta


def main() -> None:
    args = _parse_args()
    params = load_section("train_sentiment")
    loop = params.loop

    run = runtime.start(loop)
    embedding = read_meta(args.embeddings)
    store = load_split(args.embeddings, "train")
    # A data choice, like the review subset it is carved from: the same for every training seed
    data_seed = load_section("embed_imdb").seed
    train_index, val_index = split_validation(store.labels, params.val_fraction, data_seed)
    train = ReviewBatches(store, train_index, loop.batch_size, device=run.device, shuffle=True)
    val = ReviewBatches(store, val_index, loop.batch_size, device=run.device)

    model = SentimentRNN(input_size=embedding["bert"]["hidden_size"],
                         hidden_size=params.hidden_size, layers=params.layers, cell=params.cell,
                         dropout=params.dropout, projection=params.projection,
                         pooling=params.pooling).to(run.device)
    optimizer, scheduler = _optimizer(model, params, steps=loop.epochs * train.steps)
    resolved = {"train_sentiment": dataclasses.asdict(params), "embedding": embedding,
                "validation_seed": data_seed}

    checkpoint = Checkpoint.of("sentiment", resolved)
    with tracking.start_run("sentiment", params, inputs=[args.embeddings.as_posix()],
                            device=str(run.device), checkpoint=checkpoint) as mlflow_run:
        tracking.log_params({f"embed_imdb.{key}": value for key, value in embedding.items()
                             if key != "splits"} | {"embed_imdb.seed": data_seed})
        tracking.log_summary({"parameters": sum(p.numel() for p in model.parameters()),
                              "train_reviews": len(train_index), "val_reviews": len(val_index)})
        result = fit(model, run, optimizer=optimizer, scheduler=scheduler,
                     loss_fn=nn.CrossEntropyLoss(), train=train, evals={"val": val},
                     patience=params.patience, checkpoint=checkpoint,
                     on_epoch=tracking.log_epoch, on_history=history_writer(args.history))
        if not run.world.main:
            return  # rank 0 writes
        save_rnn(model, args.model_dir, embedding=embedding,
                 train_params=dataclasses.asdict(params))
        tracking.log_training(result, args.model_dir, args.history)
        print(f"train_sentiment: best epoch {result.best_epoch} of {len(result.history)}, "
              f"val_accuracy {result.best['val_accuracy']:.4f}, run {mlflow_run.info.run_id}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("embeddings", type=Path, help="data/embeddings/imdb")
    parser.add_argument("model_dir", type=Path, help="models/sentiment")
    parser.add_argument("history", type=Path, help="reports/sentiment/history.csv")
    return parser.parse_args()


def _optimizer(model: nn.Module, params: TrainSentimentParams, steps: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """AdamW, and a cosine decay over the `steps` of the whole run when `params.lr_schedule` asks
    for one."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr,
                                  weight_decay=params.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
                 if params.lr_schedule == "cosine" else None)
    return optimizer, scheduler


if __name__ == "__main__":
    run_main(main)
