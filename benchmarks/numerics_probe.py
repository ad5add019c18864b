"""Which pinned setting is needed: each one left out in turn, this CPU against what an AVX2 CPU
would run, on a probe of the ops the four models use (hashes of their results).

For every setting of `dlprojects.numerics.PINNED`, two processes run the probe with all the other
pins: one where that library may use this CPU's best instructions, one where it is capped at AVX2
(which is what another CPU looks like to it). The ops whose bytes differ are the ones that
setting protects. With every pin (last line), the MKL ceiling alone is varied. Needs a CPU whose
best is wider than AVX2 (AVX-512) to show anything.

    python benchmarks/numerics_probe.py
"""

import json
import os
import subprocess
import sys

PROBE = r'''
import hashlib, json
import numpy as np
import torch
from torch import nn
torch.set_num_threads(2)
def digest(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().contiguous().numpy()
    return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:12]
g = torch.Generator().manual_seed(0)
x, y = torch.randn(512, 784, generator=g), torch.randint(0, 10, (512,), generator=g)
torch.manual_seed(0)
mlp = nn.Sequential(nn.Linear(784, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 10))
optimizer = torch.optim.AdamW(mlp.parameters(), 1e-3)
for _ in range(5):
    optimizer.zero_grad(); nn.functional.cross_entropy(mlp(x), y).backward(); optimizer.step()
images, queries = torch.randn(64, 16, 28, 28, generator=g), torch.randn(64, 4, 17, 16, generator=g)
sequences, values = torch.randn(16, 50, 128, generator=g), torch.randn(100000, generator=g)
with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
    attention = nn.functional.scaled_dot_product_attention(queries, queries, queries)
array = np.random.default_rng(0).standard_normal((512, 784)).astype(np.float32)
print(json.dumps({
    "torch MLP + batch norm + AdamW": digest(torch.cat([p.flatten() for p in mlp.parameters()])),
    "torch convolution": digest(nn.Conv2d(16, 16, 3, padding=1)(images)),
    "torch attention": digest(attention),
    "torch bi-GRU": digest(nn.GRU(128, 64, batch_first=True, bidirectional=True)(sequences)[0]),
    "torch exp, GELU, tanh, sigmoid": digest(torch.stack([values.exp(), nn.functional.gelu(values),
                                                         values.tanh(), values.sigmoid()])),
    "torch layer norm, softmax": digest(torch.cat([nn.functional.layer_norm(x, (784,)).flatten(),
                                                  x.softmax(-1).flatten()])),
    "NumPy matmul": digest(array @ array.T),
    "NumPy exp, log, tanh": digest(np.stack([np.exp(array), np.log(np.abs(array) + 1),
                                             np.tanh(array)])),
}))
'''
# setting -> (its pinned value, the ceiling that makes this CPU look like an AVX2 one to it)
CEILINGS = {
    "MKL_CBWR": ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
    "ATEN_CPU_CAPABILITY": ("ATEN_CPU_CAPABILITY", "avx2"),
    "ONEDNN_MAX_CPU_ISA": ("ONEDNN_MAX_CPU_ISA", "AVX2"),
    "OPENBLAS_CORETYPE": ("OPENBLAS_CORETYPE", "Haswell"),
    "NPY_ENABLE_CPU_FEATURES": ("NPY_ENABLE_CPU_FEATURES", "X86_V3"),
}


def probe(env: dict[str, str]) -> dict[str, str]:
    base = {name: value for name, value in os.environ.items()
            if name not in PINNED and name != "MKL_ENABLE_INSTRUCTIONS"}
    result = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    for left_out, (ceiling, capped) in CEILINGS.items():
        others = {name: value for name, value in PINNED.items() if name != left_out}
        best, avx2 = probe(others), probe({**others, ceiling: capped})
        differ = [op for op in best if best[op] != avx2[op]]
        print(f"without {left_out:24s} differ: {', '.join(differ) or 'nothing'}")
    best, avx2 = probe(dict(PINNED)), probe({**PINNED, "MKL_ENABLE_INSTRUCTIONS": "AVX2"})
    differ = [op for op in best if best[op] != avx2[op]]
    print(f"{'with every pin':32s} differ: {', '.join(differ) or 'nothing'}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from dlprojects.numerics import PINNED  # noqa: E402  (probe() gives children only what it names)

    main()
