"""Stage train_sentiment: the bidirectional RNN on stored BERT states, tracked in MLflow."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import dataclasses
from pathlib import Path

import torch
from torch import nn

from dlprojects import tracking
from dlprojects.config import load_section
from dlprojects.data.imdb import load_split, read_meta, split_validation
from dlprojects.errors import run_main
from dlprojects.models.sentiment import ReviewBatches, SentimentRNN, save_rnn
from dlprojects.training import fingerprint, fit, seed_everything, select_device, set_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("embeddings", type=Path, help="data/embeddings/imdb")
    parser.add_argument("model_dir", type=Path, help="models/sentiment")
    parser.add_argument("history", type=Path, help="reports/sentiment/history.csv")
    args = parser.parse_args()
    params = load_section("train_sentiment")
    loop = params.loop

    set_threads(loop.threads)
    device = select_device(loop.device)
    generator = seed_everything(loop.seed, deterministic=loop.deterministic)
    embedding = read_meta(args.embeddings)
    store = load_split(args.embeddings, "train")
    train_index, val_index = split_validation(store.labels, params.val_fraction, loop.seed)
    train = ReviewBatches(store, train_index, loop.batch_size, device=device, shuffle=True)
    val = ReviewBatches(store, val_index, loop.batch_size, device=device)

    model = SentimentRNN(input_size=embedding["bert"]["hidden_size"],
                         hidden_size=params.hidden_size, layers=params.layers, cell=params.cell,
                         dropout=params.dropout, projection=params.projection,
                         pooling=params.pooling).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr,
                                  weight_decay=params.weight_decay)
    steps = loop.epochs * -(-len(train) // loop.batch_size)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
                 if params.lr_schedule == "cosine" else None)
    resolved = {"train_sentiment": dataclasses.asdict(params), "embedding": embedding}

    checkpoint, run_fingerprint = Path("checkpoints/sentiment.pt"), fingerprint(resolved)
    with tracking.start_run("sentiment", params, inputs=[args.embeddings.as_posix()],
                            device=str(device), checkpoint=checkpoint,
                            fingerprint=run_fingerprint) as run:
        import mlflow

        mlflow.log_params({f"embed_imdb.{key}": value for key, value in embedding.items()
                           if key != "splits"})
        tracking.log_summary({"parameters": sum(p.numel() for p in model.parameters()),
                              "train_reviews": len(train_index), "val_reviews": len(val_index)})
        result = fit(model, optimizer=optimizer, scheduler=scheduler,
                     loss_fn=nn.CrossEntropyLoss(), train=train,
                     train_size=len(train), evals={"val": val}, epochs=loop.epochs, device=device,
                     generator=generator, amp=loop.amp, patience=params.patience,
                     select="val_accuracy", history_file=args.history,
                     checkpoint=checkpoint, run_fingerprint=run_fingerprint,
                     on_epoch=tracking.log_epoch)
        save_rnn(model, args.model_dir, embedding=embedding,
                 train_params=dataclasses.asdict(params))
        tracking.tag_model(args.model_dir)
        tracking.log_summary({"best_epoch": result.best_epoch,
                              "train_seconds": sum(r["epoch_seconds"] for r in result.history)})
        tracking.log_artifacts([args.history])
        best = result.history[result.best_epoch - 1]
        print(f"train_sentiment: best epoch {result.best_epoch} of {len(result.history)}, "
              f"val_accuracy {best['val_accuracy']:.4f}, run {run.info.run_id}")


if __name__ == "__main__":
    run_main(main)
