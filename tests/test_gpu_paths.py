"""The branches a GPU takes, run on their CPU equivalents, so they are not first executed on a
lent GPU: bf16 autocast (CPU autocast), `torch.compile` of the ViT (inductor on the CPU), a loop
that never waits for the device inside its batch loop. The packed-sequence RNN path is
test_sentiment's (packed against padded, outputs and gradients); deterministic mode is
test_training's; DDP is test_distributed's (gloo)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from dlprojects.core.resume import Checkpoint
from dlprojects.core.runtime import Runtime, seed_everything
from dlprojects.core.training import TensorBatches, evaluate, fit, predict
from dlprojects.vit.model import ViT

from conftest import ROOT
from test_training import _problem

sys.path.insert(0, str(ROOT / "benchmarks"))
from host_syncs import HostSyncs  # noqa: E402  the counter the benchmark reports with


def train(tmp_path, *, amp: bool, batch_size: int = 64, epochs: int = 4):
    generator = seed_everything(0)
    inputs, labels = _problem()
    model = nn.Sequential(nn.Linear(8, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(64, 4))
    runtime = Runtime(device=torch.device("cpu"), generator=generator, epochs=epochs, amp=amp)
    result = fit(model, runtime, optimizer=torch.optim.AdamW(model.parameters(), 1e-2),
                 loss_fn=nn.CrossEntropyLoss(),
                 train=TensorBatches(inputs[:448], labels[:448], batch_size, shuffle=True),
                 evals={"val": lambda: TensorBatches(inputs[448:], labels[448:], 64)()},
                 checkpoint=Checkpoint(tmp_path / f"{amp}-{batch_size}.npz", "x"))
    return model, result


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    model, result = train(tmp_path, amp=True)
    dtypes = []
    model[0].register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    inputs, labels = _problem()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.eval()(inputs)
    assert dtypes == [torch.bfloat16]  # the path CUDA takes: matmuls in bf16
    assert result.history[-1]["val_accuracy"] > 0.85
    fp32_model, fp32 = train(tmp_path, amp=False)
    assert result.history[-1]["train_loss"] != fp32.history[-1]["train_loss"]  # autocast was on
    batches = TensorBatches(inputs, labels, 128)
    probabilities, _ = predict(model, batches(), torch.device("cpu"), amp=True)
    assert probabilities.dtype == torch.float32
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(inputs)), atol=1e-5)
    figures = evaluate(model, batches(), nn.CrossEntropyLoss(), torch.device("cpu"), amp=True)
    assert figures["accuracy"] > 0.85


def test_the_batch_loop_never_waits_for_the_device(tmp_path):
    """As many synchronising calls per epoch at 7 steps as at 28: none inside the batch loop."""
    counts = []
    for batch_size in (64, 16):
        with HostSyncs() as syncs:
            train(tmp_path, amp=False, batch_size=batch_size, epochs=2)
        counts.append(syncs.total)
    assert counts[0] == counts[1], counts


def test_the_sync_counter_sees_what_a_loop_reads_back():
    losses = torch.rand(10)
    with HostSyncs() as syncs:
        total = sum(loss.item() for loss in losses) + float(losses.sum())
        if losses.max() > 0.5:
            losses.tolist()
    assert total > 0 and syncs.counts == {"item": 10, "__float__": 1, "__bool__": 1, "tolist": 1}


@pytest.mark.slow
def test_the_compiled_vit_computes_what_the_eager_one_does():
    """torch.compile (inductor, C++ on the CPU; Triton on CUDA) of the ViT the stage compiles
    when `train_vit.compile`: same logits and gradients, in place, with the same state_dict keys."""
    torch.manual_seed(0)
    kwargs = dict(image_size=28, in_channels=1, num_classes=10, patch_size=7, dim=16, depth=1,
                  heads=2, mlp_dim=32, dropout=0.0, stem_channels=4)
    eager, compiled = ViT(**kwargs), ViT(**kwargs)
    compiled.load_state_dict(eager.state_dict())
    keys = list(compiled.state_dict())
    compiled.compile()
    assert list(compiled.state_dict()) == keys
    images = torch.randn(8, 1, 28, 28)
    expected, logits = eager(images), compiled(images)
    assert torch.allclose(logits, expected, atol=1e-4)
    expected.square().mean().backward()
    logits.square().mean().backward()
    for a, b in zip(eager.parameters(), compiled.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)
