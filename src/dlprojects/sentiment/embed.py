"""Stage embed_imdb: frozen-BERT hidden states of IMDB reviews, stored compactly for the RNN."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import time
from pathlib import Path

from dlprojects.core.config import load_section
from dlprojects.core.errors import run_main
from dlprojects.core.runtime import start_processes
from dlprojects.sentiment.store import build_store, store_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("imdb", type=Path, help="data/raw/imdb")
    parser.add_argument("bert", type=Path, help="data/raw/bert")
    parser.add_argument("out", type=Path, help="data/embeddings/imdb")
    args = parser.parse_args()
    params = load_section("embed_imdb")

    world, device = start_processes(params.threads, params.device)
    started = time.perf_counter()
    meta = build_store(args.imdb, args.bert, args.out, params, device, world)
    seconds = time.perf_counter() - started
    if not world.main:
        return
    reviews = sum(split["reviews"] for split in meta["splits"].values())
    tokens = sum(split["tokens"] for split in meta["splits"].values())
    print(f"embed_imdb: {reviews} reviews, {tokens} tokens in {seconds:.0f} s "
          f"({reviews / seconds:.1f} reviews/s, {tokens / seconds:.0f} tokens/s on {world.size} x "
          f"{device.type}); "
          f"{args.out} holds {store_bytes(args.out) / 1e6:.0f} MB (fp16, real tokens only)")


if __name__ == "__main__":
    run_main(main)
