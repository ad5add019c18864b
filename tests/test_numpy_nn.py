"""dlprojects.backprop.numpy_nn ops against float64 finite differences; the package imports NumPy only.

test_numpy_nn_torch.py compares the same ops with torch autograd.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import dlprojects.backprop.numpy_nn as nn

PACKAGE_DIR = Path(nn.__file__).parent
TOLERANCE = 1e-6  # max relative error of a hand-written gradient against finite differences


@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    # Two cores shared with other jobs: threaded BLAS only oversubscribes them.
    with threadpool_limits(1):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- finite differences --------------------------------------------------------------------------

F64 = {"dtype": np.float64}
LAYERS = {
    "linear": (lambda r: nn.Linear(5, 4, rng=r, **F64), (3, 5), {}),
    "linear_3d_input": (lambda r: nn.Linear(5, 4, rng=r, init="xavier", **F64), (2, 3, 5), {}),
    "relu": (lambda r: nn.ReLU(), (4, 6), {}),
    "sigmoid": (lambda r: nn.Sigmoid(), (4, 6), {}),
    "tanh": (lambda r: nn.Tanh(), (4, 6), {}),
    "flatten": (lambda r: nn.Flatten(), (2, 3, 2, 2), {}),
    "batchnorm_train": (lambda r: nn.BatchNorm1d(5, **F64), (6, 5), {}),
    "conv_3x3_pad1": (lambda r: nn.Conv2d(2, 3, 3, padding=1, rng=r, **F64), (2, 2, 5, 5), {}),
    "conv_stride2_pad1": (
        lambda r: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=r, **F64), (2, 3, 7, 6), {}),
    "conv_2x2_stride3_pad2": (
        lambda r: nn.Conv2d(2, 2, 2, stride=3, padding=2, rng=r, **F64), (1, 2, 7, 8), {}),
    "maxpool_2x2": (lambda r: nn.MaxPool2d(2), (2, 3, 6, 6), {}),
    "maxpool_3x3_stride2_overlapping": (lambda r: nn.MaxPool2d(3, stride=2), (2, 2, 7, 7), {}),
}


@pytest.mark.parametrize("name", LAYERS)
def test_layer_gradients_match_finite_differences(name, rng):
    make_layer, input_shape, forward_kwargs = LAYERS[name]
    layer = make_layer(rng)
    errors = nn.check_layer(layer, rng.standard_normal(input_shape), rng=rng, **forward_kwargs)
    assert set(errors) == {"input", *layer.named_parameters()}
    assert max(errors.values()) < TOLERANCE, errors


def test_dropout_gradient_with_a_fixed_mask(rng):
    dropout = nn.Dropout(0.5, rng=rng)
    x = rng.standard_normal((4, 6))
    output_weights = rng.standard_normal(x.shape)

    def scalar():
        dropout.rng = np.random.default_rng(7)  # the same mask on every forward
        return float((dropout.forward(x) * output_weights).sum())

    scalar()
    assert 0 < (dropout.mask == 0).sum() < x.size  # the mask does drop some units, not all
    analytic = dropout.backward(output_weights)
    assert nn.max_relative_error(analytic, nn.numerical_gradient(scalar, x)) < TOLERANCE


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_gradient(label_smoothing, rng):
    loss = nn.SoftmaxCrossEntropy(label_smoothing)
    logits, labels = rng.standard_normal((5, 4)) * 3, rng.integers(0, 4, 5)
    loss.forward(logits, labels)
    analytic = loss.backward()
    numeric = nn.numerical_gradient(lambda: loss.forward(logits, labels), logits)
    assert nn.max_relative_error(analytic, numeric) < TOLERANCE


def test_whole_model_gradients_through_every_layer_kind(rng):
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, rng=rng, **F64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(2 * 3 * 3, 6, rng=rng, **F64), nn.BatchNorm1d(6, **F64), nn.Tanh(),
        nn.Linear(6, 3, rng=rng, **F64))
    errors = nn.check_layer(model, rng.standard_normal((4, 1, 6, 6)), rng=rng)
    assert len(errors) == 1 + 8  # input + 4 layers with (weight or gamma, bias or beta)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_built_mlp_converted_to_float64_passes_the_gradient_check(activation, rng):
    model = nn.build_mlp([6, 5, 4, 3], activation=activation, batch_norm=True, rng=rng)
    model.astype(np.float64)
    assert model.state_dict()["1.running_var"].dtype == np.float64
    errors = nn.check_layer(model, rng.standard_normal((5, 6)), rng=rng)
    assert "input" not in errors  # the first layer skips dL/d input: its input is data
    assert len(errors) == 10 and max(errors.values()) < TOLERANCE, errors


def test_gradient_check_catches_a_wrong_backward(rng):
    class HalfGradientReLU(nn.ReLU):
        def backward(self, grad_output):
            return 0.5 * super().backward(grad_output)

    errors = nn.check_layer(HalfGradientReLU(), rng.standard_normal((3, 4)), rng=rng)
    assert errors["input"] > 0.1


# --- float32 stays float32 -----------------------------------------------------------------------

def test_float32_in_float32_out_forward_and_backward(rng):
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(18, 8, rng=rng), nn.BatchNorm1d(8), nn.Sigmoid(), nn.Dropout(0.3, rng=rng),
        nn.Linear(8, 3, rng=rng))
    x = rng.random((4, 1, 6, 6), dtype=np.float32)
    out = model.forward(x)
    loss = nn.SoftmaxCrossEntropy(0.1)
    loss.forward(out, np.array([0, 1, 2, 0]))
    grad_input = model.backward(loss.backward())
    assert out.dtype == grad_input.dtype == np.float32
    assert {p.grad.dtype for p in model.parameters()} == {np.dtype(np.float32)}


# --- the package imports NumPy only --------------------------------------------------------------

def test_imports_no_deep_learning_framework():
    code = ("import sys, dlprojects.backprop.numpy_nn\n"
            "frameworks = {'torch', 'tensorflow', 'jax'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in frameworks))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parents[1])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def imported(path: Path) -> list[str]:
    """The absolute imports of a module."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module)
    return names


def test_source_imports_only_numpy_stdlib_and_itself():
    """And, for its checkpoints, divergence error and history contract, the few shared modules
    that are themselves NumPy and stdlib only."""
    allowed = {"numpy", "math", "time", "functools", "__future__", "io", "os", "zipfile", "pathlib",
               "json"}
    shared = {f"dlprojects.core.{name}" for name in ("errors", "files", "history", "progress",
                                                      "resume")}
    core = PACKAGE_DIR.parents[1] / "core"
    for module in shared:
        names = {name.split(".")[0] for name in imported(core / f"{module.split('.')[-1]}.py")
                 if name not in shared}
        assert names <= sys.stdlib_module_names | {"numpy", "dlprojects"}, (module, names)
    for path in PACKAGE_DIR.glob("*.py"):
        names = [name for name in imported(path) if name not in shared]
        assert {name.split(".")[0] for name in names} <= allowed, f"{path.name} imports {names}"