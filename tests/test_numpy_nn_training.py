"""dlprojects.backprop.numpy_nn training: schedules, builders, learning, fit and state dicts."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import dlprojects.backprop.numpy_nn as nn
from dlprojects.core.resume import Checkpoint

@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    # Two cores shared with other jobs: threaded BLAS only oversubscribes them.
    with threadpool_limits(1):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(99)


def blobs(rng, samples: int, features: int = 12, classes: int = 3):
    """Gaussian clusters, float32 features and int64 labels: a problem an MLP learns in an epoch."""
    centres = rng.standard_normal((classes, features)) * 2
    labels = rng.integers(0, classes, samples)
    features = centres[labels] + rng.standard_normal((samples, features))
    return features.astype(np.float32), labels.astype(np.int64)


FIT_DEFAULTS = dict(epochs=3, batch_size=32, optimizer="adam", lr=1e-2, momentum=0.9,
                    weight_decay=0.0, schedule="cosine")


# --- schedules -----------------------------------------------------------------------------------

def test_warmup_then_schedules():
    lr = lambda schedule, step: nn.learning_rate(schedule, step=step, total_steps=110, base_lr=1.0,
                                                 warmup_steps=10)
    assert [lr("cosine", s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr("cosine", 10) == 1.0 and lr("cosine", 60) == pytest.approx(0.5)
    assert lr("cosine", 109) < 0.001
    steps = (10, 59, 60, 84, 85, 109)
    assert [lr("step", s) for s in steps] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr("constant", 109) == 1.0
    with pytest.raises(ValueError, match="'linear'"):
        nn.learning_rate("linear", step=0, total_steps=10, base_lr=1.0)


# --- builders ------------------------------------------------------------------------------------

def test_build_mlp_layers(rng):
    model = nn.build_mlp([784, 64, 32, 10], activation="tanh", dropout=0.3, batch_norm=True,
                         rng=rng)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Linear", "BatchNorm1d", "Tanh", "Dropout"] * 2 + ["Linear"]
    shapes = {name: p.data.shape for name, p in model.named_parameters().items()}
    assert shapes["0.weight"] == (784, 64) and shapes["1.gamma"] == (64,)
    assert shapes["4.weight"] == (64, 32) and shapes["8.weight"] == (32, 10)
    assert model.forward(np.zeros((5, 784), dtype=np.float32)).shape == (5, 10)
    with pytest.raises(ValueError, match="'swish'"):
        nn.build_mlp([4, 2], activation="swish", rng=rng)


def test_build_cnn_takes_mnist_images(rng):
    model = nn.build_cnn(channels=[4, 8], hidden=16, dropout=0.5, rng=rng)
    images = rng.random((3, 1, 28, 28), dtype=np.float32)
    logits = model.forward(images)
    assert logits.shape == (3, 10) and logits.dtype == np.float32
    assert model.layers[3].weight.data.shape == (8, 4, 3, 3)
    assert model.backward(np.ones_like(logits)) is None  # the first conv skips dL/d images


# --- learning ------------------------------------------------------------------------------------

def overfit(model, inputs, labels, steps: int, lr: float) -> tuple[float, float]:
    loss_fn, optimizer = nn.SoftmaxCrossEntropy(), nn.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = loss_fn.forward(model.forward(inputs), labels)
        model.backward(loss_fn.backward())
        optimizer.step()
    return loss, float((model.forward(inputs).argmax(axis=1) == labels).mean())


def test_mlp_overfits_a_tiny_batch_of_random_labels(rng):
    inputs, labels = rng.random((32, 20), dtype=np.float32), rng.integers(0, 5, 32)
    model = nn.build_mlp([20, 64, 5], batch_norm=True, rng=rng)
    loss, accuracy = overfit(model, inputs, labels, steps=150, lr=1e-2)
    assert loss < 0.05 and accuracy == 1.0


def test_cnn_overfits_a_tiny_batch(rng):
    inputs, labels = rng.random((16, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 16)
    model = nn.build_cnn(channels=[4], hidden=32, dropout=0.0, rng=rng)
    loss, accuracy = overfit(model, inputs, labels, steps=60, lr=3e-3)
    assert loss < 0.05 and accuracy == 1.0


def test_evaluate(rng):
    images, labels = blobs(rng, 70)
    model = nn.build_mlp([12, 8, 3], dropout=0.5, rng=rng)
    loss, accuracy, predictions, probabilities = nn.evaluate(model, images, labels, batch_size=32)
    assert model.training  # the mode is restored
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(predictions, probabilities.argmax(axis=1))
    assert accuracy == pytest.approx((predictions == labels).mean())
    assert loss == pytest.approx(-np.log(probabilities[np.arange(70), labels]).mean(), rel=1e-5)
    model.eval()
    eval_loss = nn.SoftmaxCrossEntropy().forward(model.forward(images), labels)
    assert loss == pytest.approx(eval_loss, rel=1e-5)


def test_fit_keeps_the_best_validation_epoch(rng):
    train_images, train_labels = blobs(rng, 600)
    val_images, val_labels = train_images[:200], train_labels[:200]
    model = nn.build_mlp([12, 16, 3], batch_norm=True, rng=rng)
    seen = []

    def on_epoch(epoch, metrics):
        seen.append((epoch, metrics))
        if epoch >= 2:  # wreck the model after epoch 2: later epochs cannot beat it
            for parameter in model.parameters():
                parameter.data[...] = 0

    result = nn.fit(model, train_images=train_images, train_labels=train_labels,
                    val_images=val_images, val_labels=val_labels, rng=rng, on_epoch=on_epoch,
                    **{**FIT_DEFAULTS, "epochs": 4})
    assert [epoch for epoch, _ in seen] == [1, 2, 3, 4]
    assert set(seen[0][1]) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                               "epoch_seconds", "samples_per_second"}
    history = result.history
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[1]["val_accuracy"] > 0.9 > history[3]["val_accuracy"]
    assert result.best_epoch in (1, 2)
    best = history[result.best_epoch - 1]
    _, accuracy, _, _ = nn.evaluate(model, val_images, val_labels, batch_size=64)
    assert accuracy == best["val_accuracy"]  # the best epoch's weights are back


def test_fit_raises_training_diverged_on_a_huge_learning_rate(rng):
    images, labels = blobs(rng, 256)
    model = nn.build_mlp([12, 16, 3], rng=rng)
    arguments = {**FIT_DEFAULTS, "optimizer": "sgd", "lr": 1e5, "weight_decay": 5e-4,
                 "schedule": "constant"}
    with pytest.raises(nn.TrainingDiverged, match=r"epoch 1.*lower the learning rate"):
        nn.fit(model, train_images=images, train_labels=labels, val_images=images,
               val_labels=labels, rng=rng, **arguments)


def test_fit_warms_up_over_whole_epochs(rng):
    images, labels = blobs(rng, 64)
    result = nn.fit(nn.build_mlp([12, 8, 3], rng=rng), train_images=images, train_labels=labels,
                    val_images=images, val_labels=labels, rng=rng, warmup_epochs=2,
                    **{**FIT_DEFAULTS, "lr": 0.01, "schedule": "constant"})
    assert [row["lr"] for row in result.history] == pytest.approx([0.005, 0.01, 0.01])


@pytest.mark.parametrize("name,value", [("optimizer", "rmsprop"), ("schedule", "exponential")])
def test_fit_rejects_unknown_names(name, value, rng):
    images, labels = blobs(rng, 40)
    with pytest.raises(ValueError, match=value):
        nn.fit(nn.build_mlp([12, 3], rng=rng), train_images=images, train_labels=labels,
               val_images=images, val_labels=labels, rng=rng, **{**FIT_DEFAULTS, name: value})


# --- state dicts ---------------------------------------------------------------------------------

def test_state_dict_round_trip_through_npz(tmp_path, rng):
    images, labels = blobs(rng, 200)
    model = nn.build_mlp([12, 16, 3], dropout=0.2, batch_norm=True, rng=rng)
    nn.fit(model, train_images=images, train_labels=labels, val_images=images, val_labels=labels,
           rng=rng, **{**FIT_DEFAULTS, "epochs": 1})
    state = model.state_dict()
    assert {"1.running_mean", "1.running_var", "0.weight", "4.bias"} <= set(state)
    assert not np.allclose(state["1.running_mean"], 0)  # trained, so a round trip is not trivial
    np.savez(tmp_path / "model.npz", **state)

    restored = nn.build_mlp([12, 16, 3], dropout=0.2, batch_norm=True, rng=np.random.default_rng(5))
    with np.load(tmp_path / "model.npz") as saved:
        restored.load_state_dict(saved)
    for name, array in restored.state_dict().items():
        np.testing.assert_array_equal(array, state[name])
    model.eval(), restored.eval()
    np.testing.assert_array_equal(restored.forward(images), model.forward(images))


def test_load_state_dict_rejects_a_state_of_another_model(rng):
    model = nn.build_mlp([12, 16, 3], rng=rng)
    state = model.state_dict()
    with pytest.raises(KeyError, match="missing.*0.bias"):
        model.load_state_dict({name: array for name, array in state.items() if name != "0.bias"})
    with pytest.raises(ValueError, match="0.weight"):
        model.load_state_dict({**state, "0.weight": np.zeros((12, 17), dtype=np.float32)})
    with pytest.raises(KeyError, match="unexpected.*extra"):
        model.load_state_dict({**state, "extra": np.zeros(1)})


# --- checkpoint and resume -----------------------------------------------------------------------

class Interrupt(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_interrupted_fit_resumes_and_ends_with_the_same_bytes(tmp_path, optimizer):
    histories = []  # what on_history was last given, per call of train

    def train(folder, stop_after=None, fingerprint="a"):
        rng = np.random.default_rng(0)
        images, labels = blobs(np.random.default_rng(1), 300)
        model = nn.build_mlp([12, 16, 3], dropout=0.2, batch_norm=True, rng=rng)

        def on_epoch(epoch, metrics):
            if epoch == stop_after:
                raise Interrupt

        histories.append(None)
        result = nn.fit(model, train_images=images, train_labels=labels, val_images=images,
                        val_labels=labels, rng=rng, on_epoch=on_epoch,
                        on_history=lambda history: histories.__setitem__(-1, list(history)),
                        checkpoint=Checkpoint(folder / "state.npz", fingerprint),
                        **{**FIT_DEFAULTS, "epochs": 4, "optimizer": optimizer})
        return model, result

    straight, straight_result = train(tmp_path / "straight")
    with pytest.raises(Interrupt):
        train(tmp_path / "resumed", stop_after=3)  # epochs 1-2 saved; killed in epoch 3
    resumed, resumed_result = train(tmp_path / "resumed")
    for name, array in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], array)
    def untimed(history):
        return [{k: v for k, v in row.items() if k not in ("epoch_seconds", "samples_per_second")}
                for row in history]

    assert untimed(resumed_result.history) == untimed(straight_result.history)
    # the history handed on after the resumed run holds every epoch, the resumed ones too
    assert [row["epoch"] for row in histories[-1]] == [1, 2, 3, 4] == [
        row["epoch"] for row in histories[0]]
    with np.load(tmp_path / "resumed/state.npz", allow_pickle=False):
        pass  # no pickle inside

    _, other = train(tmp_path / "resumed", fingerprint="b")  # other params: starts afresh
    assert [row["epoch"] for row in other.history] == [1, 2, 3, 4]
