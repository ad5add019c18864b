"""Model builders, the minibatch training loop and evaluation for MNIST-sized classifiers.

Images are float32 in [0, 1]: (N, 784) for an MLP, (N, 1, 28, 28) for a CNN; labels are int64.
NumPy's BLAS is fastest single-threaded on small machines: set OPENBLAS_NUM_THREADS=1 (or use
threadpoolctl) in the caller, which this NumPy-only package leaves alone.
"""

import functools
import json
import math
import time
from pathlib import Path

import numpy as np

from .conv import Conv2d, MaxPool2d
from .layers import BatchNorm1d, Dropout, Flatten, Linear, ReLU, Sigmoid, Tanh
from .losses import SoftmaxCrossEntropy, log_softmax
from .model import Sequential, save_npz
from .optim import SGD, Adam, learning_rate

ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model is unusable and is not returned."""


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
        warmup_epochs: float = 0.0, eval_batch_size: int = 500, checkpoint: Path | None = None,
        fingerprint: str = "") -> dict:
    """Train on shuffled minibatches; keep the weights of the best validation-accuracy epoch.

    After each epoch, `on_history(history)` gets every epoch so far (resumed ones included), then
    `on_epoch(epoch, metrics)` (from 1) train_loss and train_accuracy (over the epoch's minibatches,
    in training mode), val_loss, val_accuracy, lr (at the last step), epoch_seconds and
    samples_per_second. Returns {"history": [{"epoch": ..., **metrics}, ...], "best_epoch": ...};
    raises TrainingDiverged as soon as a loss is NaN or infinite.

    `checkpoint`: an `.npz` written after every epoch (weights, optimiser buffers, random states,
    history), resumed from when its `fingerprint` matches: a killed run ends with the same weights
    as one never interrupted. It stays when training completes; the caller removes it.
    """
    opt = _make_optimizer(optimizer, model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = SoftmaxCrossEntropy()
    steps_per_epoch = math.ceil(len(train_images) / batch_size)
    total_steps = epochs * steps_per_epoch
    lr_at = functools.partial(learning_rate, schedule, total_steps=total_steps, base_lr=lr,
                              warmup_steps=round(warmup_epochs * steps_per_epoch))
    lr_at(step=0)  # reject a bad schedule name now
    history, best_accuracy, best_epoch, best_state, step = [], -1.0, 0, None, 0
    generators = [rng] + [layer.rng for layer in _layers(model) if isinstance(layer, Dropout)]
    resumed = _load_checkpoint(checkpoint, fingerprint, model, opt, generators)
    if resumed is not None:
        history, best_accuracy, best_epoch, best_state, step = resumed
        print(f"resuming from {checkpoint} after epoch {len(history)}", flush=True)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # TrainingDiverged tells
        for epoch in range(len(history) + 1, epochs + 1):
            started = time.perf_counter()
            order = rng.permutation(len(train_images))
            loss_sum, correct, step = _train_epoch(
                model, opt, loss_fn, train_images, train_labels, order, batch_size, epoch,
                step=step, lr_at=lr_at, total_steps=total_steps)
            train_seconds = time.perf_counter() - started
            val_loss, val_accuracy, _, _ = evaluate(model, val_images, val_labels, eval_batch_size)
            if not math.isfinite(val_loss):
                raise TrainingDiverged(f"validation loss became {val_loss} after epoch {epoch}; "
                                       "lower the learning rate")
            metrics = {"train_loss": loss_sum / len(order), "train_accuracy": correct / len(order),
                       "val_loss": val_loss, "val_accuracy": val_accuracy, "lr": opt.lr,
                       "epoch_seconds": time.perf_counter() - started,
                       "samples_per_second": len(order) / train_seconds}
            history.append({"epoch": epoch, **metrics})
            if val_accuracy > best_accuracy:
                best_accuracy, best_epoch, best_state = val_accuracy, epoch, model.state_dict()
            if on_history is not None:
                on_history(history)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            _save_checkpoint(checkpoint, fingerprint, model, opt, generators, history,
                             best_accuracy, best_epoch, best_state, step)
    if on_history is not None:  # also when a completed checkpoint was all there was
        on_history(history)
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"history": history, "best_epoch": best_epoch}


def _train_epoch(model, opt, loss_fn, images, labels, order, batch_size, epoch, *, step, lr_at,
                 total_steps):
    """One pass over the training images in `order`: (summed loss, correct count, next step)."""
    model.train()
    loss_sum, correct = 0.0, 0
    for batch_start in range(0, len(order), batch_size):
        batch = order[batch_start:batch_start + batch_size]
        batch_labels = labels[batch]
        opt.lr = lr_at(step=step)
        logits = model.forward(images[batch])
        loss = loss_fn.forward(logits, batch_labels)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training loss became {loss} at epoch {epoch}, step {step + 1} of "
                f"{total_steps} (lr {opt.lr:.3g}); lower the learning rate")
        model.backward(loss_fn.backward())
        opt.step()
        loss_sum += loss * len(batch)
        correct += int((logits.argmax(axis=1) == batch_labels).sum())
        step += 1
    return loss_sum, correct, step


# ------------------------------------------------------------------------------------ checkpoint


def _layers(layer):
    yield layer
    for child in layer.children().values():
        yield from _layers(child)


def _optimizer_buffers(opt) -> list[np.ndarray]:
    return opt.velocity if isinstance(opt, SGD) else opt.first_moment + opt.second_moment


def _save_checkpoint(path, fingerprint, model, opt, generators, history, best_accuracy,
                     best_epoch, best_state, step) -> None:
    """Arrays and a JSON record in one `.npz` (no pickle), written then renamed; none without a
    path."""
    if path is None:
        return
    meta = {"fingerprint": fingerprint, "history": history, "best_accuracy": best_accuracy,
            "best_epoch": best_epoch, "step": step, "adam_steps": getattr(opt, "steps", 0),
            "generators": [g.bit_generator.state for g in generators]}
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays |= {f"best/{k}": v for k, v in (best_state or {}).items()}
    arrays |= {f"optimizer/{i}": v for i, v in enumerate(_optimizer_buffers(opt))}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, arrays)


def _load_checkpoint(path, fingerprint, model, opt, generators):
    """(history, best_accuracy, best_epoch, best_state, step), or None to start afresh."""
    if path is None or not Path(path).exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    if meta["fingerprint"] != fingerprint:
        print(f"ignoring {path}: it was written with other params; starting afresh", flush=True)
        return None
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
    for i, buffer in enumerate(_optimizer_buffers(opt)):
        buffer[...] = arrays[f"optimizer/{i}"]
    if isinstance(opt, Adam):
        opt.steps = meta["adam_steps"]
    for generator, state in zip(generators, meta["generators"]):
        generator.bit_generator.state = state
    best = {k[5:]: v for k, v in arrays.items() if k.startswith("best/")} or None
    return meta["history"], meta["best_accuracy"], meta["best_epoch"], best, meta["step"]
