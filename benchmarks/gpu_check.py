"""`make gpu-check`: what this machine's GPUs do with the project, in one command. Writes
reports/gpu_check.md, headed by the GPU's name.

1. Smoke on CUDA: train_fashion@improved, train_vit, embed_imdb and train_sentiment on the smoke
   params (each project.yaml's `smoke`), as one process, in a scratch folder.
2. DDP: train_fashion@improved again as one process per visible GPU (`distributed.processes:
   auto`), its history beside the one-process run's.
3. Full size (experiments/full-size.yaml): each torch model for `--steps` optimiser steps (BERT:
   forward passes) on inputs of its real shape, bf16 autocast: samples/s, peak GPU memory, and
   MFU, the model FLOPs (torch's FlopCounterMode) per second against the GPU's dense bf16 peak.

    make gpu-check                     # needs data/raw: `make repro` or `dvc pull` first
    python benchmarks/gpu_check.py --device cpu --steps 2 --skip-stages   # the code, no GPU
"""

import dlprojects  # noqa: F401  first: pins the CPU numerics

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from dlprojects.core.projects import smoke_params
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dlprojects.core.config import load_section
from dlprojects.core.errors import UserError, run_main
from dlprojects.fashion.model import DenseClassifier
from dlprojects.core.history import read_history
from dlprojects.sentiment.model import SentimentRNN
from dlprojects.vit.model import ViT

ROOT = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125}
STAGES = [("train_fashion.py", "improved", "data/raw/fashion_mnist", "models/fashion/improved",
           "reports/fashion/improved/history.csv"),
          ("train_vit.py", "data/raw/fashion_mnist", "models/vit", "reports/vit/history.csv"),
          ("embed_imdb.py", "data/raw/imdb", "data/raw/bert", "data/embeddings/imdb"),
          ("train_sentiment.py", "data/embeddings/imdb", "models/sentiment",
           "reports/sentiment/history.csv")]


def merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and key in base else value
    return out


def run_stages(folder: Path, processes: str | int, stages: list[tuple[str, ...]]) -> list[str]:
    """The stage scripts in a scratch project on smoke params; a line per stage."""
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()),
                    smoke_params())
    params["distributed"]["processes"] = processes
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "data/raw").mkdir(parents=True)
    for name in ("fashion_mnist", "imdb", "bert"):
        (folder / "data/raw" / name).symlink_to(ROOT / "data/raw" / name)
    lines = []
    for script, *args in stages:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(ROOT / "pipeline" / script), *args],
                                cwd=folder, capture_output=True, text=True)
        if result.returncode:
            raise UserError(f"{script} failed on {processes} process(es): "
                            f"{result.stderr.strip().splitlines()[-1]}")
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        lines.append(f"| {script} | {processes} | {time.perf_counter() - started:.0f} s | {last} |")
    return lines


def throughput(name: str, model: nn.Module, make_batch, device: torch.device, steps: int,
               train: bool = True) -> str:
    """A row: samples/s over `steps` steps after 3 warm-up steps, peak memory, MFU."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None

    def step():
        inputs, targets = make_batch()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outputs = model(*inputs)
        if train:
            nn.functional.cross_entropy(outputs.float(), targets).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return len(targets)

    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    samples = sum(step() for _ in range(steps))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    flops = counter.get_total_flops() * steps / seconds  # per second
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else ""
    peak = next((tflops for key, tflops in PEAK_TFLOPS.items() if key in gpu), None)
    mfu = f"{100 * flops / (peak * 1e12):.1f}%" if peak and flops else "n/a"
    return (f"| {name} | {samples / seconds:,.0f} | {memory:.2f} GiB | {flops / 1e12:.2f} | "
            f"{mfu} |")


def full_size_rows(device: torch.device, steps: int) -> list[str]:
    """Each torch model at its full-size params (experiments/full-size.yaml)."""
    full = yaml.safe_load((ROOT / "experiments/full-size.yaml").read_text())
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), full)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "params.yaml").write_text(yaml.safe_dump(params))
        fashion = load_section("train_fashion", Path(folder) / "params.yaml")
        vit = load_section("train_vit", Path(folder) / "params.yaml")
        sentiment = load_section("train_sentiment", Path(folder) / "params.yaml")
        embed = load_section("embed_imdb", Path(folder) / "params.yaml")

    def images(batch: int, shape: tuple[int, ...]):
        return lambda: ((torch.randn(batch, *shape, device=device),),
                        torch.randint(0, 10, (batch,), device=device))

    rows = []
    dense = DenseClassifier(**vars(fashion.variant("improved"))).to(device)
    rows.append(throughput("fashion dense (improved)", dense,
                           images(fashion.loop.batch_size, (1, 28, 28)), device, steps))
    transformer = ViT(**vit.model_kwargs()).to(device)
    if vit.compile and device.type == "cuda":
        transformer.compile()
    rows.append(throughput(f"ViT ({sum(p.numel() for p in transformer.parameters()) / 1e6:.1f} M)",
                           transformer, images(vit.loop.batch_size, (1, 28, 28)), device, steps))
    rnn = SentimentRNN(input_size=384, hidden_size=sentiment.hidden_size, layers=sentiment.layers,
                       cell=sentiment.cell, dropout=sentiment.dropout,
                       projection=sentiment.projection, pooling=sentiment.pooling).to(device)
    batch, length = sentiment.loop.batch_size, embed.max_length

    def reviews():
        lengths = torch.randint(length // 4, length + 1, (batch,))
        return ((torch.randn(batch, length, 384, device=device), lengths),
                torch.randint(0, 2, (batch,), device=device))

    rows.append(throughput("sentiment RNN", rnn, reviews, device, steps))
    bert_folder = ROOT / "data/raw/bert"
    if (bert_folder / "config.json").exists():
        from dlprojects.sentiment.bert import load_bert

        _, bert = load_bert(bert_folder, device=device)
        tokens = lambda: ((torch.randint(1000, 20000, (embed.batch_size, length), device=device),),
                          torch.zeros(embed.batch_size))  # noqa: E731
        rows.append(throughput("BERT embedding (forward)", lambda ids: bert(input_ids=ids)
                               .last_hidden_state, tokens, device, steps, train=False))
    return rows


def ddp_line(scratch: Path) -> str:
    """How the all-GPU run of train_fashion@improved compares with the one-process run."""
    one, every = (read_history(scratch / part / STAGES[0][4]) for part in ("one", "all"))
    gap = max(abs(a[k] - b[k]) for a, b in zip(one, every) for k in a if k.endswith("loss"))
    same = all(a[k] == b[k] for a, b in zip(one, every) for k in a if k.endswith("accuracy"))
    return (f"DDP over all GPUs against one process (train_fashion@improved): largest loss "
            f"difference {gap:.1e}; accuracies {'equal' if same else 'differ'} in every epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--skip-stages", action="store_true", help="full-size throughput only")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/gpu_check.md")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA GPU is visible: gpu-check is for a GPU machine (--device cpu "
                        "runs its code on the CPU)")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    report = [f"# GPU check: {torch.cuda.device_count() if device.type == 'cuda' else 0} x {name}",
              "", f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", ""]
    if not args.skip_stages:
        with tempfile.TemporaryDirectory() as scratch:
            report += ["| stage | processes | seconds | result |", "|---|---:|---:|---|"]
            report += run_stages(Path(scratch) / "one", 1, STAGES)
            report += run_stages(Path(scratch) / "all", "auto", STAGES[:1])
            report += ["", ddp_line(Path(scratch)), ""]
    report += [f"Full size, {args.steps} steps after 3 warm-up steps, bf16 autocast:", "",
               "| model | samples/s | peak memory | TFLOP/s | MFU |", "|---|---:|---:|---:|---:|"]
    report += full_size_rows(device, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    run_main(main)
