"""Training throughput (images/s) of our ViT against lucidrains' `vit_pytorch.ViT`, on the CPU.

Both at the same configuration (the train_vit params' patch, width, depth, heads and MLP width; our
conv stem off, since vit-pytorch has none; vit-pytorch's dim_head = dim / heads like ours), batch
size, thread count and AdamW step, in one run. Steps of the two models alternate in rounds so that
load from other processes hits both alike; prints the median images/s of each and the ratio.

    python benchmarks/vit_throughput.py --threads 1 --batch-size 128 --rounds 7
"""

import dlprojects  # noqa: F401  first: pins the CPU numerics, as the stages run them

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dlprojects.core.config import load_section
from dlprojects.vit.model import ViT


def train_step(model, optimizer, images, labels) -> float:
    """Seconds of one forward, backward and AdamW step."""
    started = time.perf_counter()
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of timed steps")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per model first")
    parser.add_argument("--patch-size", type=int, help="default: train_vit.patch_size")
    args = parser.parse_args()
    from vit_pytorch import ViT as LucidrainsViT  # a test extra: pip install vit-pytorch

    params = load_section("train_vit")
    kwargs = params.model_kwargs() | {"stem_channels": 0, "dropout": 0.0}
    if args.patch_size:
        kwargs["patch_size"] = args.patch_size
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {
        "ours": ViT(**kwargs),
        "vit-pytorch": LucidrainsViT(
            image_size=kwargs["image_size"], patch_size=kwargs["patch_size"],
            num_classes=kwargs["num_classes"], dim=kwargs["dim"], depth=kwargs["depth"],
            heads=kwargs["heads"], mlp_dim=kwargs["mlp_dim"], channels=kwargs["in_channels"],
            dim_head=kwargs["dim"] // kwargs["heads"]),
    }
    side = kwargs["image_size"]
    images = torch.randn(args.batch_size, kwargs["in_channels"], side, side)
    labels = torch.randint(0, kwargs["num_classes"], (args.batch_size,))
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-3)
                  for name, model in models.items()}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for name, model in models.items():
        model.train()
        for _ in range(args.warmup):
            train_step(model, optimizers[name], images, labels)
    for _ in range(args.rounds):
        for name, model in models.items():
            seconds[name] += [train_step(model, optimizers[name], images, labels)
                              for _ in range(args.steps)]

    config = ", ".join(f"{k} {kwargs[k]}" for k in ("image_size", "patch_size", "dim", "depth",
                                                    "heads", "mlp_dim"))
    print(f"ViT training throughput on the CPU: {config}; batch {args.batch_size}, "
          f"{args.threads} thread(s), median of {args.rounds * args.steps} steps per model")
    rates = {}
    for name, model in models.items():
        rates[name] = args.batch_size / statistics.median(seconds[name])
        parameters = sum(p.numel() for p in model.parameters())
        print(f"  {name:12s} {rates[name]:8.0f} images/s  ({parameters:,} parameters)")
    print(f"  ratio ours / vit-pytorch: {rates['ours'] / rates['vit-pytorch']:.2f}")


if __name__ == "__main__":
    main()
