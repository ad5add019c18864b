"""Where a torch stage's time goes: its own model at its params, a few training steps (or, for
embed_imdb, BERT forward passes over batches of reviews) under torch.profiler on the CPU, with the
stage's pinned numerics. Prints the ops by self CPU time and their share by kind (fused attention,
matrix products, convolutions, norms, elementwise, copies, optimiser, other).

    python benchmarks/stage_profile.py train_vit --threads 1
    python benchmarks/stage_profile.py train_fashion --threads 2
    python benchmarks/stage_profile.py embed_imdb --reviews 64
"""

import dlprojects  # noqa: F401  first: pins the CPU numerics, as the stages run them

import argparse
import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from dlprojects.core.config import load_section
from dlprojects.core.runtime import set_threads

KINDS = {  # op name fragments -> kind, first match wins
    "fused attention": ("scaled_dot_product", "attention"),
    "matrix products": ("mm", "addmm", "bmm", "linear", "matmul", "baddbmm"),
    "convolutions": ("convolution",),
    "norms": ("batch_norm", "layer_norm"),
    "copies": ("copy_", "contiguous", "cat", "clone", "to_copy"),
    "optimiser": ("Optimizer", "_foreach", "adam"),
    "elementwise": ("add", "mul", "div", "gelu", "relu", "threshold", "clamp", "softmax", "where",
                    "sub", "exp", "sqrt", "dropout", "bernoulli", "sum", "mean", "all", "tanh",
                    "sigmoid"),
}


def kind_of(name: str) -> str:
    return next((kind for kind, parts in KINDS.items() if any(p in name for p in parts)), "other")


def training_step(model: torch.nn.Module, inputs: torch.Tensor, steps: int) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.randint(0, 10, (len(inputs),), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        for _ in range(steps):
            loss = F.cross_entropy(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return step


def vit_work(args: argparse.Namespace) -> Callable[[], None]:
    from dlprojects.vit.model import ViT

    params = load_section("train_vit")
    kwargs = params.model_kwargs()
    images = torch.randn(params.loop.batch_size, kwargs["in_channels"], kwargs["image_size"],
                         kwargs["image_size"])
    return training_step(ViT(**kwargs), images, args.steps)


def fashion_work(args: argparse.Namespace) -> Callable[[], None]:
    from dlprojects.fashion.model import DenseClassifier

    params = load_section("train_fashion")
    model = DenseClassifier(**dataclasses.asdict(params.variant("improved")))
    return training_step(model, torch.randn(params.loop.batch_size, 1, 28, 28), args.steps)


def embed_work(args: argparse.Namespace) -> Callable[[], None]:
    from dlprojects.sentiment.bert import embed, encode, load_bert, trim_to_layers
    from dlprojects.sentiment.reviews import read_reviews

    params = load_section("embed_imdb")
    tokenizer, bert = load_bert(args.bert, device=torch.device("cpu"))
    layers = trim_to_layers(bert, params.bert_layers)
    texts, _ = read_reviews(args.imdb / "test.jsonl")
    chosen = np.random.default_rng(0).choice(len(texts), args.reviews, replace=False)
    token_ids = encode([texts[i] for i in chosen], tokenizer, max_length=params.max_length,
                       truncation=params.truncation, head_tokens=params.head_tokens)
    return lambda: [None for _ in embed(token_ids, bert, batch_size=params.batch_size,
                                        device=torch.device("cpu"), layers=layers,
                                        amp=params.amp, desc="")]


WORK = {"train_vit": vit_work, "train_fashion": fashion_work, "embed_imdb": embed_work}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=sorted(WORK))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="training steps profiled")
    parser.add_argument("--reviews", type=int, default=64, help="embed_imdb: reviews embedded")
    parser.add_argument("--imdb", type=Path, default=Path("data/raw/imdb"))
    parser.add_argument("--bert", type=Path, default=Path("data/raw/bert"))
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    set_threads(args.threads)
    work = WORK[args.stage](args)
    work()  # warm-up: first calls allocate and pick kernels
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        work()
    events = profiled.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    kinds = Counter()
    for event in events:
        if event.key.startswith("aten::") or event.key.startswith("Optimizer"):
            kinds[kind_of(event.key)] += event.self_cpu_time_total
    total = sum(kinds.values())
    print(f"{args.stage}, {args.threads} thread(s): share of self CPU time by kind")
    for kind, micros in kinds.most_common():
        print(f"  {kind:16s} {100 * micros / total:5.1f}%  ({micros / 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
