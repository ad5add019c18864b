"""The committed reference of the portable numerics: does this CPU give the committed bytes?

Runs each kind of op the stages use, and a few training steps of each torch model, on fixed
inputs at 2 threads (the stages' default), hashes the results, and compares them with
`reference.json`, recorded on the CPUs it names. `make test` runs it, so whichever CPU runs the
tests checks the promise.

    python -m dlprojects.numerics.probe           # exit 1 and name each op that differs
    python -m dlprojects.numerics.probe --json    # this CPU and every hash, to report a difference
    python -m dlprojects.numerics.probe --write   # record this CPU's hashes (same hashes: adds the CPU)
"""

from __future__ import annotations

import dlprojects  # noqa: F401  first: the portable settings before NumPy and torch load

import argparse
import hashlib
import importlib
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dlprojects import numerics

REFERENCE = Path(__file__).with_name("reference.json")
THREADS = 2
STEPS = 3  # training steps per model: enough for every op's backward and the optimiser


def random_tensor(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def matrix_products():
    a, b, c = random_tensor(300, 784, seed=1), random_tensor(784, 256, seed=2), random_tensor(256, seed=3)
    batched = random_tensor(64, 17, 16, seed=4)
    return [a @ b, torch.addmm(c, a, b), a[:37, :129] @ b[:129, :5], a.t() @ a,
            batched @ batched.transpose(1, 2), torch.baddbmm(batched[:, :, :1], batched,
                                                             batched.transpose(1, 2)[:, :, :1])]


def mkl_products():
    a, b = random_tensor(300, 784, seed=1), random_tensor(784, 256, seed=2)
    return [torch.mm(a, b, out=torch.empty(300, 256)), torch.mv(a, b[:, 0])]


def vector_math():
    x = random_tensor(100_000, seed=5) * 3
    return [x.exp(), x.abs().log(), x.tanh(), x.abs().sqrt(), torch.erf(x), torch.log1p(x.abs())]


def elementwise():
    x = random_tensor(1000, 100, seed=6)
    return [x.sigmoid(), nn.functional.gelu(x), x.softmax(-1), x.log_softmax(-1), x.relu()]


def norms():
    x = random_tensor(256, 784, seed=7).requires_grad_()
    layer = nn.functional.layer_norm(x, (784,))
    batch = nn.functional.batch_norm(x, None, None, training=True)
    (layer.square().sum() + batch.square().sum()).backward()
    return [layer, batch, x.grad]


def convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    images = random_tensor(32, 16, 28, 28, seed=8).requires_grad_()
    out = conv(images)
    out.square().sum().backward()
    return [out, images.grad, conv.weight.grad, conv.bias.grad]


def attention():
    q = random_tensor(8, 4, 17, 16, seed=9).requires_grad_()
    out = nn.functional.scaled_dot_product_attention(q, q, q)
    out.square().sum().backward()
    return [out, q.grad]


def recurrent():
    torch.manual_seed(0)
    gru = nn.GRU(64, 32, batch_first=True, bidirectional=True)
    out = gru(random_tensor(16, 50, 64, seed=10))[0]
    out.square().sum().backward()
    return [out, *(p.grad for p in gru.parameters())]


def optimiser():
    torch.manual_seed(0)
    parameter = nn.Parameter(random_tensor(10_000, seed=11))
    optimizer = torch.optim.AdamW([parameter], lr=1e-3, weight_decay=0.01)
    for step in range(STEPS):
        parameter.grad = random_tensor(10_000, seed=12 + step)
        optimizer.step()
    return [parameter]


def numpy_ops():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 784), dtype=np.float32)
    return [x @ x.T, np.exp(x), np.log(np.abs(x) + 1), np.tanh(x)]


def train_steps(model: nn.Module, inputs: tuple, labels: torch.Tensor) -> list:
    """The parameters of `model` after STEPS AdamW steps on one batch (a project's probe)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(STEPS):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(*inputs), labels).backward()
        optimizer.step()
    return list(model.parameters())


def bert_model():
    """The frozen BERT's forward pass, on a small encoder of the same code with random weights
    (the probe needs no download)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=96, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=192, max_position_embeddings=128)
    model = BertModel(config).eval()
    ids = torch.randint(0, 1000, (8, 100), generator=torch.Generator().manual_seed(16))
    mask = (torch.arange(100) < torch.arange(8).unsqueeze(1) * 10 + 30).long()
    with torch.inference_mode():
        return [model(input_ids=ids, attention_mask=mask).last_hidden_state]


CHECKS: dict[str, Callable[[], Iterable]] = {
    "torch matrix products (mm, addmm, bmm, baddbmm)": matrix_products,
    "MKL matrix products (mm with out=, mv)": mkl_products,
    "vector math (exp, log, tanh, sqrt, erf, log1p)": vector_math,
    "torch elementwise (sigmoid, GELU, softmax, log_softmax, ReLU)": elementwise,
    "layer norm and batch norm, forward and backward": norms,
    "convolution, forward and backward": convolution,
    "attention (scaled_dot_product_attention), forward and backward": attention,
    "bidirectional GRU, forward and backward": recurrent,
    "AdamW steps": optimiser,
    "NumPy matmul, exp, log, tanh": numpy_ops,
    "BERT encoder: forward": bert_model,
}


def checks() -> dict[str, Callable[[], Iterable]]:
    """CHECKS and each declared project's model, trained STEPS steps (its declaration's
    `probe`: a label and the builder of those steps)."""
    from dlprojects.core.projects import declared

    found = dict(CHECKS)
    for project in declared():
        for label, target in project.probe.items():
            module, _, name = target.partition(":")
            found[f"{label}: {STEPS} training steps"] = getattr(importlib.import_module(module), name)
    return found


def digest(values: Iterable) -> str:
    hasher = hashlib.sha256()
    for value in values:
        if isinstance(value, torch.Tensor):
            value = value.detach().contiguous().numpy()
        hasher.update(np.ascontiguousarray(value).tobytes())
    return hasher.hexdigest()[:16]


def run() -> dict[str, str]:
    """Each check's hash on this CPU, at THREADS threads."""
    from dlprojects.core.runtime import set_threads

    set_threads(THREADS)
    return {name: digest(check()) for name, check in checks().items()}


def differences(found: dict[str, str], reference: dict) -> list[str]:
    expected = reference["hashes"]
    return [name for name in expected if found.get(name) != expected[name]] + \
        [name for name in found if name not in expected]


def cpu_name(machine: dict[str, str]) -> str:
    return f"{machine['vendor']} {machine['model']} ({machine['isa']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print this CPU and every hash")
    parser.add_argument("--write", action="store_true", help="record the hashes in reference.json")
    args = parser.parse_args(argv)
    machine = numerics.cpu()
    if not numerics.portable():
        print(numerics.summary())
        return 0
    found = run()
    if args.json:
        print(json.dumps({"cpu": machine, "torch": torch.__version__, "numpy": np.__version__,
                          "hashes": found}, indent=2))
        return 0
    reference = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else None
    if args.write:
        same = reference is not None and not differences(found, reference)
        cpus = reference["cpus"] if same else []
        reference = {"threads": THREADS, "cpus": sorted(set(cpus) | {cpu_name(machine)}),
                     "hashes": found}
        REFERENCE.write_text(json.dumps(reference, indent=2) + "\n")
        print(f"{REFERENCE}: {len(found)} hashes, recorded on {'; '.join(reference['cpus'])}")
        return 0
    if reference is None:
        print(f"error: {REFERENCE} is missing; run with --write on a CPU whose bytes are the "
              f"reference", file=sys.stderr)
        return 2
    differ = differences(found, reference)
    for name in differ:
        print(f"numerics probe: {name}: differs on {cpu_name(machine)}", file=sys.stderr)
    if differ:
        print(f"This CPU does not give the bytes committed from {'; '.join(reference['cpus'])}, "
              f"so its results are its own. Please report it in an issue with the output of "
              f"`python -m dlprojects.numerics.probe --json`.", file=sys.stderr)
        return 1
    print(f"numerics probe: {len(found)} checks give the committed bytes on {cpu_name(machine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
