"""What the portable CPU numerics (dlprojects.numerics) cost: each training stage run natively
(`DLPROJECTS_NUMERICS=native`, every library on this CPU's best kernels) and portable, side by
side on the same machine, on shortened params (a few epochs, a small embedding subset).

Runs the stage modules themselves (`python -m dlprojects.<project>.<stage>`) in a scratch copy
of the project (data/raw and the embedding store linked, never written), alternating the two
modes round by round so that load from other processes hits both alike. Prints the median
seconds per stage and mode, and portable/native.

    python benchmarks/numerics_cost.py --rounds 1
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# stage -> (params overrides as dotted keys, the script's arguments)
STAGES = {
    "train_backprop@mlp": ({"train_backprop.mlp.training.epochs": 2},
                           ["dlprojects.backprop.train", "mlp", "data/raw/mnist", "models/mlp",
                            "out/mlp.csv"]),
    "train_backprop@cnn": ({"train_backprop.cnn.training.epochs": 1},
                           ["dlprojects.backprop.train", "cnn", "data/raw/mnist", "models/cnn",
                            "out/cnn.csv"]),
    "train_fashion@improved": ({"train_fashion.loop.epochs": 5},
                               ["dlprojects.fashion.train", "improved", "data/raw/fashion_mnist",
                                "models/fashion", "out/fashion.csv"]),
    "embed_imdb": ({"embed_imdb.train_samples": 300, "embed_imdb.test_samples": 100},
                   ["dlprojects.sentiment.embed", "data/raw/imdb", "data/raw/bert",
                    "out/embeddings"]),
    "train_sentiment": ({"train_sentiment.loop.epochs": 1},
                        ["dlprojects.sentiment.train", "data/embeddings/imdb",
                         "models/sentiment", "out/sentiment.csv"]),
    "train_vit": ({"train_vit.loop.epochs": 1},
                  ["dlprojects.vit.train", "data/raw/fashion_mnist", "models/vit", "out/vit.csv"]),
}


def scratch_project(folder: Path) -> None:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in filter(None, names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, folder / name)
    (folder / "data").mkdir()
    for linked in ("raw", "embeddings"):
        (folder / "data" / linked).symlink_to(ROOT / "data" / linked)
    (folder / "out").mkdir()


def set_params(folder: Path, overrides: dict) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        section = params
        for parent in parents:
            section = section[parent]
        section[key] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(folder: Path, arguments: list[str], mode: str) -> float:
    env = {**os.environ, "DLPROJECTS_NUMERICS": mode}
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    shutil.rmtree(folder / "out" / "embeddings", ignore_errors=True)
    started = time.perf_counter()
    # the stage module of the scratch copy, as `dvc repro` runs it there
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder / "src"),
                                                      env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", *arguments], cwd=folder, env=env,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{arguments[0]} ({mode}) failed:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        scratch_project(folder)
        print(f"{'stage':24s} {'native s':>9s} {'portable s':>9s} {'portable/native':>14s}")
        for stage in args.stages:
            overrides, arguments = STAGES[stage]
            set_params(folder, overrides)
            seconds: dict[str, list[float]] = {"native": [], "portable": []}
            for round_number in range(args.rounds):
                order = ("native", "portable") if round_number % 2 == 0 else ("portable", "native")
                for mode in order:
                    seconds[mode].append(run_stage(folder, arguments, mode))
            native, portable = (statistics.median(seconds[m]) for m in ("native", "portable"))
            print(f"{stage:24s} {native:9.1f} {portable:9.1f} {portable / native:14.2f}", flush=True)


if __name__ == "__main__":
    main()
