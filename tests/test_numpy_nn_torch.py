"""dlprojects.backprop.numpy_nn against torch, in float64: ops and gradients against autograd, optimisers
against torch.optim. torch is imported only by tests, never by numpy_nn itself."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import dlprojects.backprop.numpy_nn as nn

torch = pytest.importorskip("torch")
F = torch.nn.functional
F64 = {"dtype": np.float64}


@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    # Two cores shared with other jobs: threaded BLAS only oversubscribes them.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(torch_threads)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- torch autograd as a reference, in float64 ---------------------------------------------------

def tensor(array):
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


def assert_close(numpy_value, torch_value):
    np.testing.assert_allclose(numpy_value, torch_value.detach().numpy(), rtol=1e-9, atol=1e-10)


def test_linear_matches_torch(rng):
    layer = nn.Linear(5, 3, rng=rng, **F64)
    layer.bias.data = rng.standard_normal(3)
    x, grad_output = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    x_t, w_t, b_t = tensor(x), tensor(layer.weight.data.T), tensor(layer.bias.data)
    out_t = F.linear(x_t, w_t, b_t)
    out_t.backward(torch.tensor(grad_output))
    assert_close(layer.forward(x), out_t)
    assert_close(layer.backward(grad_output), x_t.grad)
    assert_close(layer.weight.grad, w_t.grad.T)
    assert_close(layer.bias.grad, b_t.grad)


def test_batchnorm_matches_torch_in_train_and_eval_mode(rng):
    layer = nn.BatchNorm1d(4, momentum=0.2, **F64)
    layer.gamma.data, layer.beta.data = rng.standard_normal(4), rng.standard_normal(4)
    reference = torch.nn.BatchNorm1d(4, momentum=0.2, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(layer.gamma.data))
        reference.bias.copy_(torch.tensor(layer.beta.data))
    for _ in range(3):  # running statistics move with every training batch
        x, grad_output = rng.standard_normal((8, 4)) * 2 + 1, rng.standard_normal((8, 4))
        x_t = tensor(x)
        reference.zero_grad()
        out_t = reference(x_t)
        out_t.backward(torch.tensor(grad_output))
        assert_close(layer.forward(x), out_t)
        assert_close(layer.backward(grad_output), x_t.grad)
        assert_close(layer.gamma.grad, reference.weight.grad)
        assert_close(layer.beta.grad, reference.bias.grad)
    assert_close(layer.running_mean, reference.running_mean)
    assert_close(layer.running_var, reference.running_var)
    layer.eval(), reference.eval()
    x = rng.standard_normal((5, 4))
    assert_close(layer.forward(x), reference(torch.tensor(x)))


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 1, 2)])
def test_conv2d_matches_torch(kernel, stride, padding, rng):
    layer = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, rng=rng, **F64)
    layer.bias.data = rng.standard_normal(4)
    x = rng.standard_normal((2, 3, 9, 8))
    out = layer.forward(x)
    grad_output = rng.standard_normal(out.shape)
    x_t, w_t, b_t = tensor(x), tensor(layer.weight.data), tensor(layer.bias.data)
    out_t = F.conv2d(x_t, w_t, b_t, stride=stride, padding=padding)
    out_t.backward(torch.tensor(grad_output))
    assert_close(out, out_t)
    assert_close(layer.backward(grad_output), x_t.grad)
    assert_close(layer.weight.grad, w_t.grad)
    assert_close(layer.bias.grad, b_t.grad)


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (2, 1), (3, 3)])
def test_maxpool_matches_torch(kernel, stride, rng):
    layer = nn.MaxPool2d(kernel, stride=stride)
    x = rng.standard_normal((2, 3, 8, 7))
    x[0, 0, :4, :4] = 0.5  # ties: torch and numpy_nn both send the gradient to the first maximum
    out = layer.forward(x)
    grad_output = rng.standard_normal(out.shape)
    x_t = tensor(x)
    out_t = F.max_pool2d(x_t, kernel, stride=stride)
    out_t.backward(torch.tensor(grad_output))
    assert_close(out, out_t)
    assert_close(layer.backward(grad_output), x_t.grad)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_softmax_cross_entropy_matches_torch(label_smoothing, rng):
    logits, labels = rng.standard_normal((6, 5)) * 4, rng.integers(0, 5, 6)
    logits[0, 0] = 1000.0  # a huge logit: the fused form must stay finite
    loss = nn.SoftmaxCrossEntropy(label_smoothing)
    logits_t = tensor(logits)
    loss_t = F.cross_entropy(logits_t, torch.tensor(labels), label_smoothing=label_smoothing)
    loss_t.backward()
    assert loss.forward(logits, labels) == pytest.approx(loss_t.item(), rel=1e-12)
    assert_close(loss.backward(), logits_t.grad)


# --- optimisers and schedules --------------------------------------------------------------------

def run_both(make_numpy_optimizer, make_torch_optimizer, rng, learning_rates):
    """Apply the same gradients to a decayed weight and an undecayed bias in both libraries."""
    weight, bias = rng.standard_normal((4, 3)), rng.standard_normal(3)
    params = [nn.Parameter(weight.copy()), nn.Parameter(bias.copy(), decay=False)]
    params_t = [torch.tensor(weight, requires_grad=True), torch.tensor(bias, requires_grad=True)]
    optimizer, optimizer_t = make_numpy_optimizer(params), make_torch_optimizer(params_t)
    for lr in learning_rates:
        optimizer.lr = lr
        for group in optimizer_t.param_groups:
            group["lr"] = lr
        for p, p_t in zip(params, params_t):
            p.grad = rng.standard_normal(p.data.shape)
            p_t.grad = torch.tensor(p.grad)
        optimizer.step()
        optimizer_t.step()
    for p, p_t in zip(params, params_t):
        np.testing.assert_allclose(p.data, p_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    return params, weight


def torch_groups(params_t, weight_decay):
    return [{"params": [params_t[0]], "weight_decay": weight_decay},
            {"params": [params_t[1]], "weight_decay": 0.0}]


@pytest.mark.parametrize("momentum,nesterov,weight_decay",
                         [(0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.05)])
def test_sgd_matches_torch(momentum, nesterov, weight_decay, rng):
    params, initial_weight = run_both(
        lambda ps: nn.SGD(ps, lr=0.1, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay),
        lambda ps: torch.optim.SGD(torch_groups(ps, weight_decay), lr=0.1, momentum=momentum,
                                   nesterov=nesterov),
        rng, learning_rates=[0.1, 0.05, 0.2, 0.01, 0.1])
    assert not np.allclose(params[0].data, initial_weight)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_torch_adamw(weight_decay, rng):
    run_both(
        lambda ps: nn.Adam(ps, lr=1e-2, betas=(0.8, 0.99), weight_decay=weight_decay),
        lambda ps: torch.optim.AdamW(torch_groups(ps, weight_decay), lr=1e-2, betas=(0.8, 0.99)),
        rng, learning_rates=[1e-2, 3e-2, 1e-3, 1e-2, 5e-3, 2e-2])


def test_cosine_schedule_matches_torch_cosine_annealing():
    parameter = torch.zeros(1, requires_grad=True)
    optimizer_t = torch.optim.SGD([parameter], lr=0.5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer_t, T_max=20)
    for step in range(20):
        lr = nn.learning_rate("cosine", step=step, total_steps=20, base_lr=0.5)
        assert lr == pytest.approx(optimizer_t.param_groups[0]["lr"], rel=1e-12)
        optimizer_t.step()
        scheduler.step()
