"""Embedding throughput of the embed_imdb stage against a naive loop, in one run.

    python benchmarks/embedding_throughput.py --reviews 256

Both embed the same reviews with the same frozen BERT, settings from params.yaml (embed_imdb):
- pipeline: batches of similar length, each padded to its own longest review;
- naive: reviews in file order, every batch padded to max_length.
Tokens/s counts real tokens only (the work that is wanted). The two methods alternate `--repeats`
times and the median time of each is reported.
"""

from __future__ import annotations

import dlprojects  # noqa: F401  first: pins the CPU numerics, as the stages run them

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dlprojects.core.config import load_section
from dlprojects.core.errors import run_main
from dlprojects.core.runtime import select_device, set_threads
from dlprojects.sentiment.bert import embed, encode, load_bert, read_bert_config, trim_to_layers
from dlprojects.sentiment.reviews import balanced_subset, read_reviews


def seconds_to_embed(token_ids, bert, **options) -> float:
    started = time.perf_counter()
    for _ in embed(token_ids, bert, **options):
        pass
    if options["device"].type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    params = load_section("embed_imdb")
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imdb", type=Path, default=Path("data/raw/imdb"))
    parser.add_argument("--bert", type=Path, default=Path("data/raw/bert"))
    parser.add_argument("--reviews", type=int, default=256, help="a balanced random test subset")
    parser.add_argument("--max-length", type=int, default=params.max_length)
    parser.add_argument("--batch-size", type=int, default=params.batch_size)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=params.device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=params.threads)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    read_bert_config(args.bert, args.max_length, "--max-length", params.bert_layers,
                     "embed_imdb.bert_layers")
    set_threads(args.threads)
    device = select_device(args.device)
    tokenizer, bert = load_bert(args.bert, device=device)
    layers = trim_to_layers(bert, params.bert_layers)  # as the stage does
    texts, labels = read_reviews(args.imdb / "test.jsonl")
    rows = balanced_subset(labels, args.reviews, seed=params.seed)
    rows = np.random.default_rng(params.seed).permutation(rows)  # file order is sorted by label
    token_ids = encode([texts[row] for row in rows], tokenizer, max_length=args.max_length,
                       truncation=params.truncation, head_tokens=params.head_tokens)
    tokens = sum(len(ids) for ids in token_ids)
    common = dict(batch_size=args.batch_size, device=device, layers=layers,
                  amp=params.amp, desc="")
    methods = {"pipeline": dict(sort_by_length=True),
               "naive": dict(sort_by_length=False, pad_to=args.max_length)}
    seconds_to_embed(token_ids[:args.batch_size], bert, **common, **methods["naive"])  # warm-up

    times = {name: [] for name in methods}
    for _ in range(args.repeats):  # alternating, so a busy spell hits both methods
        for name, options in methods.items():
            times[name].append(seconds_to_embed(token_ids, bert, **common, **options))
    median = {name: statistics.median(seconds) for name, seconds in times.items()}

    figures = {"device": str(device), "threads": args.threads, "reviews": len(token_ids),
               "real_tokens": tokens, "max_length": args.max_length,
               "batch_size": args.batch_size}
    print(f"{len(token_ids)} reviews, {tokens} real tokens (mean {tokens / len(token_ids):.0f}, "
          f"max_length {args.max_length}), batch {args.batch_size}, {device}, "
          f"{args.threads} threads")
    print(f"{'method':<10} {'seconds':>8} {'reviews/s':>10} {'tokens/s':>10}")
    for name, seconds in median.items():
        figures[name] = {"seconds": round(seconds, 2),
                         "reviews_per_second": round(len(token_ids) / seconds, 2),
                         "tokens_per_second": round(tokens / seconds, 1)}
        print(f"{name:<10} {seconds:>8.1f} {len(token_ids) / seconds:>10.1f} "
              f"{tokens / seconds:>10.0f}")
    figures["speedup"] = round(median["naive"] / median["pipeline"], 2)
    print(f"speed-up of the pipeline over the naive loop: {figures['speedup']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
