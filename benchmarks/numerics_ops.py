"""What each numerics candidate costs per op: torch's matrix products, MKL's vector math and the
convolution, each in a fresh process under one candidate's settings, on this CPU.

Candidates (the settings each library reads when it loads):
  native       every library on its own choice (DLPROJECTS_NUMERICS=native)
  MKL AVX2     MKL_CBWR=AVX2,STRICT: MKL's AVX2 branch, which MKL honours on Intel CPUs only
  MKL COMPAT   MKL_CBWR=COMPATIBLE: the branch MKL honours on Intel and AMD alike
  portable     the project's default: MKL COMPATIBLE, products through OpenBLAS's Haswell kernel
               (`dlprojects.numerics`)
Matrix products in GFLOP/s (higher is better), the rest in microseconds per call (lower is
better); the median of 5 timings of at least 0.2 s each.

    python benchmarks/numerics_ops.py [--threads 1 2]
"""

import argparse
import json
import os
import subprocess
import sys

CANDIDATES = {
    "native": {"DLPROJECTS_NUMERICS": "native"},
    "MKL AVX2": {"DLPROJECTS_NUMERICS": "native", "MKL_CBWR": "AVX2,STRICT",
                 "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "MKL COMPAT": {"DLPROJECTS_NUMERICS": "native", "MKL_CBWR": "COMPATIBLE",
                   "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "portable": {},
}
MEASURE = r'''
import json, os, statistics, sys, time
if os.environ.get("DLPROJECTS_NUMERICS") != "native":
    import dlprojects  # the portable settings (native: the candidate's own, left as they are)
import torch
from torch import nn
from threadpoolctl import threadpool_limits
torch.set_num_threads(int(sys.argv[1]))
threadpool_limits(1, user_api="blas")  # OpenBLAS: one thread a call (the portable products)
def seconds(call):
    call()
    timings = []
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.2:
            call(); count += 1
        timings.append((time.perf_counter() - start) / count)
    return statistics.median(timings)
g = torch.Generator().manual_seed(0)
results = {}
for name, (m, k, n) in {"fashion 256x784x256": (256, 784, 256), "ViT 2176x64x192": (2176, 64, 192),
                        "GRU 128x128x384": (128, 128, 384), "BERT 7168x384x1536": (7168, 384, 1536)}.items():
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    results[f"matmul {name} (GFLOP/s)"] = round(2 * m * k * n / seconds(lambda: a @ b) / 1e9, 1)
values = torch.randn(1_000_000, generator=g)
for op in ("exp", "tanh", "sqrt"):
    f, x = getattr(torch, op), values.abs() if op == "sqrt" else values
    results[f"{op} 1M (us)"] = round(seconds(lambda: f(x)) * 1e6)
conv, images = nn.Conv2d(16, 16, 3, padding=1), torch.randn(128, 16, 28, 28, generator=g)
def conv_step():
    conv.zero_grad(); conv(images.requires_grad_()).sum().backward()
results["conv 3x3 16->16, 128x28x28, fwd+bwd (us)"] = round(seconds(conv_step) * 1e6)
print(json.dumps(results))
'''


def measure(env: dict[str, str], threads: int) -> dict[str, float]:
    from dlprojects import numerics

    base = {name: value for name, value in os.environ.items()
            if name not in (*numerics.PORTABLE, numerics.MODE_VARIABLE)}
    result = subprocess.run([sys.executable, "-c", MEASURE, str(threads)], env={**base, **env},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from dlprojects import numerics

    machine = numerics.cpu()
    print(f"{machine['vendor']} {machine['model']} ({machine['isa']})")
    for threads in args.threads:
        table = {name: measure(env, threads) for name, env in CANDIDATES.items()}
        print(f"\n| {threads} thread{'s' * (threads > 1)} | " + " | ".join(table) + " |")
        print("|---|" + "---:|" * len(table))
        for op in table["native"]:
            print(f"| {op} | " + " | ".join(str(table[name][op]) for name in table) + " |")


if __name__ == "__main__":
    main()
