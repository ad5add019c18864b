"""Model builders, the minibatch training loop and evaluation for MNIST-sized classifiers.

Images are float32 in [0, 1]: (N, 784) for an MLP, (N, 1, 28, 28) for a CNN; labels are int64.
NumPy's BLAS is fastest single-threaded on small machines: set OPENBLAS_NUM_THREADS=1 (or use
threadpoolctl) in the caller, which this NumPy-only package leaves alone.
"""

import functools
import math
import time

import numpy as np

from dlprojects.core.history import FitResult
from dlprojects.core.progress import Progress, check_finite
from dlprojects.core.resume import Checkpoint

from .conv import Conv2d, MaxPool2d
from .layers import BatchNorm1d, Dropout, Flatten, Linear, ReLU, Sigmoid, Tanh
from .losses import SoftmaxCrossEntropy, log_softmax
from .model import Sequential
from .optim import SGD, Adam, learning_rate

ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


def build_mlp(sizes: list[int], *, activation: str = "relu", dropout: float = 0.0,
              batch_norm: bool = False, rng: np.random.Generator) -> Sequential:
    """sizes [784, 256, 128, 10] -> Linear, [BatchNorm1d], activation, [Dropout] per hidden layer,
    then a Linear to the logits."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: use one of {sorted(ACTIVATIONS)}")
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
    init = "he" if activation == "relu" else "xavier"
    layers = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(Linear(fan_in, fan_out, rng=rng, init=init, input_grad=bool(layers)))
        if batch_norm:
            layers.append(BatchNorm1d(fan_out))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(Dropout(dropout, rng=rng.spawn(1)[0]))
    layers.append(Linear(sizes[-2], sizes[-1], rng=rng, init="xavier", input_grad=bool(layers)))
    return Sequential(*layers)


def build_cnn(*, channels: list[int], hidden: int, dropout: float, rng: np.random.Generator,
              classes: int = 10, image_size: int = 28) -> Sequential:
    """For (B, 1, image_size, image_size) inputs: per entry of `channels` a 3x3 Conv2d (padding 1),
    ReLU and 2x2 MaxPool2d, halving the image; then Flatten, Linear to `hidden`, ReLU, Dropout,
    Linear to the logits."""
    layers, in_channels, size = [], 1, image_size
    for out_channels in channels:
        conv = Conv2d(in_channels, out_channels, 3, padding=1, rng=rng, input_grad=bool(layers))
        layers += [conv, ReLU(), MaxPool2d(2)]
        in_channels, size = out_channels, size // 2
    if size < 1:
        raise ValueError(f"{len(channels)} conv blocks pool a {image_size}-pixel image away")
    layers += [Flatten(), Linear(in_channels * size * size, hidden, rng=rng), ReLU()]
    if dropout:
        layers.append(Dropout(dropout, rng=rng.spawn(1)[0]))
    layers.append(Linear(hidden, classes, rng=rng, init="xavier"))
    return Sequential(*layers)


def evaluate(model: Sequential, images: np.ndarray, labels: np.ndarray, batch_size: int):
    """(mean cross-entropy, accuracy, predicted classes (N,), class probabilities (N, classes)),
    computed in evaluation mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    log_probabilities = np.concatenate([
        log_softmax(model.forward(images[start:start + batch_size]))
        for start in range(0, len(images), batch_size)])
    model.train(was_training)
    loss = float(-log_probabilities[np.arange(len(labels)), labels].mean())
    predictions = log_probabilities.argmax(axis=1)
    accuracy = float((predictions == labels).mean())
    return loss, accuracy, predictions, np.exp(log_probabilities)


def _make_optimizer(name: str, model, *, lr, momentum, weight_decay):
    if name == "sgd":
        return SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":  # momentum does not apply: Adam's beta1 stays 0.9
        return Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: use 'sgd' or 'adam'")


def fit(model: Sequential, *, train_images, train_labels, val_images, val_labels, epochs: int,
        batch_size: int, optimizer: str, lr: float, momentum: float, weight_decay: float,
        schedule: str, rng: np.random.Generator, on_epoch=None, on_history=None,
        warmup_epochs: float = 0.0, eval_batch_size: int = 500,
        checkpoint: Checkpoint | None = None) -> FitResult:
    """Train on shuffled minibatches; keep the weights of the best validation-accuracy epoch.

    After each epoch, `on_history(history)` gets every epoch so far (resumed ones included), then
    `on_epoch(epoch, metrics)` (from 1) train_loss and train_accuracy (over the epoch's minibatches,
    in training mode), val_loss, val_accuracy, lr (at the last step), epoch_seconds and
    samples_per_second. Raises TrainingDiverged as soon as a loss is NaN or infinite.

    `checkpoint`: written after every epoch (weights, optimiser buffers, random states, history)
    and resumed from when it holds this run's: a killed run ends with the same weights as one
    never interrupted. It stays when training completes; the caller removes it.
    """
    opt = _make_optimizer(optimizer, model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_images) / batch_size)
    lr_at = functools.partial(learning_rate, schedule, total_steps=epochs * steps_per_epoch,
                              base_lr=lr, warmup_steps=round(warmup_epochs * steps_per_epoch))
    lr_at(step=0)  # reject a bad schedule name now
    generators = [rng] + [layer.rng for layer in _layers(model) if isinstance(layer, Dropout)]
    progress, step = _resume(checkpoint, model, opt, generators)
    epoch_of = functools.partial(_epoch, model, opt, SoftmaxCrossEntropy(), train_images,
                                 train_labels, val_images, val_labels, batch_size,
                                 eval_batch_size, rng, lr_at)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # TrainingDiverged tells
        while progress.next_epoch <= epochs:
            row, step = epoch_of(progress.next_epoch, step)
            progress.add(row, model.state_dict)
            if on_history is not None:
                on_history(progress.history)
            if on_epoch is not None:
                on_epoch(int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"})
            _save(checkpoint, model, opt, generators, progress, step)
    if on_history is not None:  # also when a completed checkpoint was all there was
        on_history(progress.history)
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    return progress.result()


def _epoch(model, opt, loss_fn, images, labels, val_images, val_labels, batch_size,
           eval_batch_size, rng, lr_at, epoch, step):
    """Train one epoch, then evaluate on the validation images: (the epoch's row, next step)."""
    started = time.perf_counter()
    order = rng.permutation(len(images))
    model.train()
    loss_sum, correct = 0.0, 0
    for batch_start in range(0, len(order), batch_size):
        batch = order[batch_start:batch_start + batch_size]
        batch_labels = labels[batch]
        opt.lr = lr_at(step=step)
        logits = model.forward(images[batch])
        loss = loss_fn.forward(logits, batch_labels)
        check_finite(loss, f"at epoch {epoch}, step {step + 1} (lr {opt.lr:.3g})")
        model.backward(loss_fn.backward())
        opt.step()
        loss_sum += loss * len(batch)
        correct += int((logits.argmax(axis=1) == batch_labels).sum())
        step += 1
    train_seconds = time.perf_counter() - started
    val_loss, val_accuracy, _, _ = evaluate(model, val_images, val_labels, eval_batch_size)
    check_finite(val_loss, f"on the validation images after epoch {epoch}")
    return {"epoch": epoch, "train_loss": loss_sum / len(order),
            "train_accuracy": correct / len(order), "val_loss": val_loss,
            "val_accuracy": val_accuracy, "lr": opt.lr,
            "epoch_seconds": time.perf_counter() - started,
            "samples_per_second": len(order) / train_seconds}, step


# ------------------------------------------------------------------------------------ checkpoint


def _layers(layer):
    yield layer
    for child in layer.children().values():
        yield from _layers(child)


def _optimizer_buffers(opt) -> list[np.ndarray]:
    return opt.velocity if isinstance(opt, SGD) else opt.first_moment + opt.second_moment


def _save(checkpoint, model, opt, generators, progress: Progress, step: int) -> None:
    """Weights, best weights and optimiser buffers as arrays; progress, step and random states
    in the record (`dlprojects.core.resume`); nothing without a checkpoint."""
    if checkpoint is None:
        return
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays |= {f"best/{k}": v for k, v in (progress.best_state or {}).items()}
    arrays |= {f"optimizer/{i}": v for i, v in enumerate(_optimizer_buffers(opt))}
    checkpoint.save(arrays, {"progress": progress.record(), "step": step,
                             "adam_steps": getattr(opt, "steps", 0),
                             "generators": [g.bit_generator.state for g in generators]})


def _resume(checkpoint, model, opt, generators) -> tuple[Progress, int]:
    """(progress, step) saved in `checkpoint`, its state put back; afresh when there is none."""
    found = checkpoint.load() if checkpoint is not None else None
    if found is None:
        return Progress(), 0
    arrays, record = found
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
    for i, buffer in enumerate(_optimizer_buffers(opt)):
        buffer[...] = arrays[f"optimizer/{i}"]
    if isinstance(opt, Adam):
        opt.steps = record["adam_steps"]
    for generator, state in zip(generators, record["generators"]):
        generator.bit_generator.state = state
    best = {k[5:]: v for k, v in arrays.items() if k.startswith("best/")} or None
    progress = Progress.restored(record["progress"], best)
    print(f"resuming from {checkpoint.path} after epoch {len(progress.history)}", flush=True)
    return progress, record["step"]
