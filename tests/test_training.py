"""The shared torch loop: learning, history, checkpoint/resume, device choice, divergence."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from dlprojects.core.errors import TrainingDiverged, UserError
from dlprojects.core.history import history_writer
from dlprojects.core.resume import Checkpoint, fingerprint
from dlprojects.core.runtime import Runtime, seed_everything, select_device
from dlprojects.core.training import TensorBatches, fit, predict


class Interrupt(Exception):
    pass


def _problem(seed=0):
    """Two Gaussian blobs per class, 4 classes in 8 dimensions: learnable in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 8, generator=generator) * 3
    labels = torch.randint(0, 4, (512,), generator=generator)
    inputs = centres[labels] + torch.randn(512, 8, generator=generator)
    return inputs, labels


def _run(tmp_path, epochs, *, lr=0.05, stop_after=None, params="a", deterministic=False,
         amp=False):
    generator = seed_everything(0, deterministic=deterministic)
    inputs, labels = _problem()
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * 8)
    train = TensorBatches(inputs[:448], labels[:448], 64, shuffle=True)
    val = TensorBatches(inputs[448:], labels[448:], 64)

    def on_epoch(epoch, metrics):
        if epoch == stop_after:
            raise Interrupt

    runtime = Runtime(device=torch.device("cpu"), generator=generator, epochs=epochs, amp=amp)
    result = fit(model, runtime, optimizer=optimizer, scheduler=scheduler,
                 loss_fn=nn.CrossEntropyLoss(), train=train, evals={"val": val},
                 checkpoint=Checkpoint(tmp_path / "checkpoint.npz", fingerprint(params)),
                 on_epoch=on_epoch, on_history=history_writer(tmp_path / "history.csv"))
    return model, result


def test_fit_learns_and_writes_its_history(tmp_path):
    model, result = _run(tmp_path, epochs=6)
    assert result.history[-1]["val_accuracy"] > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4, 5, 6]
    assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(rows[0])
    assert not {"epoch_seconds", "samples_per_second"} & set(rows[0])  # in MLflow: they vary
    assert (tmp_path / "checkpoint.npz").exists()  # kept until the caller's results are safe
    _, again = _run(tmp_path, epochs=6)  # so a rerun after a failure past training is immediate
    assert again.history == result.history
    best = max(result.history, key=lambda m: m["val_accuracy"])
    assert result.best_epoch == best["epoch"]
    probabilities, targets = predict(model, TensorBatches(*_problem(), 128)(), torch.device("cpu"))
    assert probabilities.shape == (512, 4)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(512))


def test_an_interrupted_run_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path):
    straight_model, straight = _run(tmp_path / "straight", epochs=6)
    with pytest.raises(Interrupt):
        _run(tmp_path / "resumed", epochs=6, stop_after=3)
    assert (tmp_path / "resumed/checkpoint.npz").exists()
    resumed_model, resumed = _run(tmp_path / "resumed", epochs=6)
    assert resumed.history == [
        {**m, "epoch_seconds": r["epoch_seconds"], "samples_per_second": r["samples_per_second"]}
        for m, r in zip(straight.history, resumed.history)]
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)


def test_the_same_seed_gives_the_same_bytes_with_or_without_deterministic_mode(tmp_path):
    first_model, _ = _run(tmp_path / "first", epochs=3)
    second_model, _ = _run(tmp_path / "second", epochs=3, deterministic=True)
    torch.use_deterministic_algorithms(False)
    assert (tmp_path / "first/history.csv").read_bytes() == (tmp_path / "second/history.csv").read_bytes()
    for a, b in zip(first_model.state_dict().values(), second_model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_checkpoint_from_other_params_is_not_resumed(tmp_path, capsys):
    with pytest.raises(Interrupt):
        _run(tmp_path, epochs=4, stop_after=2, params="a")
    _, result = _run(tmp_path, epochs=4, params="b")
    assert [m["epoch"] for m in result.history] == [1, 2, 3, 4]
    assert "written with other params; starting afresh" in capsys.readouterr().err


def test_a_diverging_loss_stops_training(tmp_path):
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        _run(tmp_path, epochs=3, lr=1e6)


def test_device_choice():
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert select_device("auto").type == "cpu"
        with pytest.raises(UserError, match="no CUDA GPU is visible; set device: auto or cpu"):
            select_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_on_cuda_with_bf16(tmp_path):
    generator = seed_everything(0)
    inputs, labels = (t.cuda() for t in _problem())
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)).cuda()
    runtime = Runtime(device=torch.device("cuda"), generator=generator, epochs=5, amp=True)
    result = fit(model, runtime, optimizer=torch.optim.Adam(model.parameters(), 1e-2),
                 loss_fn=nn.CrossEntropyLoss(), train=TensorBatches(inputs, labels, 64, shuffle=True),
                 evals={"val": TensorBatches(inputs, labels, 64)},
                 checkpoint=Checkpoint(tmp_path / "c.npz", "x"))
    assert result.history[-1]["val_accuracy"] > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deterministic_mode_repeats_a_cuda_run_exactly(tmp_path):
    def train(folder):
        generator = seed_everything(0, deterministic=True)
        inputs, labels = (t.cuda() for t in _problem())
        model = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 4)).cuda()
        runtime = Runtime(device=torch.device("cuda"), generator=generator, epochs=3, amp=True)
        fit(model, runtime, optimizer=torch.optim.Adam(model.parameters(), 1e-2),
            loss_fn=nn.CrossEntropyLoss(), train=TensorBatches(inputs, labels, 64, shuffle=True),
            evals={"val": TensorBatches(inputs, labels, 64)},
            checkpoint=Checkpoint(folder / "c.npz", "x"),
            on_history=history_writer(folder / "h.csv"))
        return model

    try:
        first, second = train(tmp_path / "a"), train(tmp_path / "b")
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "a/h.csv").read_bytes() == (tmp_path / "b/h.csv").read_bytes()
