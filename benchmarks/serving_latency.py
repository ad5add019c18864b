"""Cold start and latency of a served model: `mlflow models serve` on 127.0.0.1, real requests.

    python benchmarks/serving_latency.py models:/sentiment@champion --batches 1 32
    python benchmarks/serving_latency.py models:/vit@champion --batches 1 32

Starts the server as the README does (`--env-manager local`, one worker), times its cold start
(launch to the first answered /ping), then sends `--requests` requests of each batch size one after
another (the first of each is a warm-up, not counted) and prints the median latency per request
and per item, and requests per second. Reviews are test reviews of data/raw/imdb; images the
registered model's own input example, repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def items(uri: str, count: int) -> list:
    """`count` inputs for the model: test reviews, or its input example's images repeated."""
    import mlflow

    if "sentiment" in uri:
        from dlprojects.sentiment.reviews import read_reviews

        texts, _ = read_reviews(ROOT / "data/raw/imdb/test.jsonl")
        return texts[:count]
    folder = Path(mlflow.artifacts.download_artifacts(uri))
    example = json.loads((folder / "serving_input_example.json").read_text())["inputs"]
    return [example[i % len(example)] for i in range(count)]


def post(url: str, inputs: list) -> float:
    body = json.dumps({"inputs": inputs}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="e.g. models:/sentiment@champion")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=11)
    args = parser.parse_args()
    import mlflow

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", args.model,
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - started > 300:
                    raise SystemExit(f"error: {args.model} was not served")
                time.sleep(0.1)
        print(f"{args.model}: cold start {time.perf_counter() - started:.1f} s")
        for batch in args.batches:
            inputs = items(args.model, batch)
            seconds = [post(url, inputs) for _ in range(args.requests)][1:]
            median = statistics.median(seconds)
            print(f"batch {batch:>3}: {median * 1000:.0f} ms per request, "
                  f"{median * 1000 / batch:.1f} ms per item, {1 / median:.1f} requests/s "
                  f"(median of {len(seconds)})")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
