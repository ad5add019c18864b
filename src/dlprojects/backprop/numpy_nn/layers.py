"""Layers with hand-written backward passes.

Each layer's `forward` caches exactly what its `backward` needs, and `backward(grad_output)`
(dL/d output) stores dL/d parameter in each `Parameter.grad` and returns dL/d input. A backward
overwrites the gradients of the last forward; nothing accumulates, so there is no zero_grad.
Arrays keep the dtype they come in: float32 for training, float64 for gradient checks.
"""

import numpy as np

from .init import initial_weights


class Parameter:
    """A trainable array and the gradient of the loss with respect to it."""

    def __init__(self, data: np.ndarray, *, decay: bool = True):
        self.data = data
        self.grad = np.zeros_like(data)
        # Weight decay shrinks weights; shrinking biases and normalisation gains only hurts.
        self.decay = decay


class Layer:
    """Base class: finds parameters, buffers and sub-layers among the attributes."""

    training = True
    # Names of non-trained arrays that belong in a state dict (BatchNorm running statistics).
    buffer_names: tuple[str, ...] = ()

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def children(self) -> dict[str, "Layer"]:
        return {name: value for name, value in vars(self).items() if isinstance(value, Layer)}

    def named_parameters(self) -> dict[str, Parameter]:
        """Parameters of this layer and its sub-layers, keyed "child.name"."""
        found = {name: value for name, value in vars(self).items() if isinstance(value, Parameter)}
        for child_name, child in self.children().items():
            for name, parameter in child.named_parameters().items():
                found[f"{child_name}.{name}"] = parameter
        return found

    def parameters(self) -> list[Parameter]:
        return list(self.named_parameters().values())

    def named_buffers(self) -> dict[str, np.ndarray]:
        found = {name: getattr(self, name) for name in self.buffer_names}
        for child_name, child in self.children().items():
            for name, buffer in child.named_buffers().items():
                found[f"{child_name}.{name}"] = buffer
        return found

    def train(self, mode: bool = True) -> "Layer":
        """Training mode: dropout drops, batch norm uses and updates batch statistics."""
        self.training = mode
        for child in self.children().values():
            child.train(mode)
        return self

    def eval(self) -> "Layer":
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, ready for `save_npz(path, state)`."""
        state = {name: p.data.copy() for name, p in self.named_parameters().items()}
        state.update({name: b.copy() for name, b in self.named_buffers().items()})
        return state

    def load_state_dict(self, state) -> None:
        """Copy arrays from `state` (a dict or an `np.load` result) into this layer, in place.

        Missing or unexpected names and shape mismatches raise, so a model is never half-loaded.
        """
        state = {name: np.asarray(state[name]) for name in state}  # reads an npz file once
        targets = {name: p.data for name, p in self.named_parameters().items()}
        targets.update(self.named_buffers())
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        if missing or unexpected:
            raise KeyError(f"state dict does not fit this model: missing {missing}, "
                           f"unexpected {unexpected}")
        for name, target in targets.items():
            if state[name].shape != target.shape:
                raise ValueError(f"{name}: saved shape {state[name].shape}, "
                                 f"model has {target.shape}")
        for name, target in targets.items():
            target[...] = state[name]

    def astype(self, dtype) -> "Layer":
        """Convert parameters, gradients and buffers to `dtype` (float64 for gradient checks)."""
        for parameter in self.parameters():
            parameter.data = parameter.data.astype(dtype)
            parameter.grad = parameter.grad.astype(dtype)
        self._buffers_astype(dtype)
        return self

    def _buffers_astype(self, dtype) -> None:
        for name in self.buffer_names:
            setattr(self, name, getattr(self, name).astype(dtype))
        for child in self.children().values():
            child._buffers_astype(dtype)


class Linear(Layer):
    """y = x @ W + b over the last axis; W is (in_features, out_features), x is (..., in).

    input_grad=False suits a first layer, whose input is data: backward then skips dL/dx (a
    third of its work) and returns None.
    """

    def __init__(self, in_features: int, out_features: int, *, rng: np.random.Generator,
                 init: str = "he", input_grad: bool = True, dtype=np.float32):
        self.input_grad = input_grad
        shape = (in_features, out_features)
        self.weight = Parameter(initial_weights(init, shape, fan_in=in_features,
                                                fan_out=out_features, rng=rng, dtype=dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype), decay=False)

    def forward(self, x):
        self.x = x
        return x @ self.weight.data + self.bias.data

    def backward(self, grad_output):
        in_features, out_features = self.weight.data.shape
        x_rows = self.x.reshape(-1, in_features)  # every leading axis acts as a batch axis
        grad_rows = grad_output.reshape(-1, out_features)
        self.weight.grad = x_rows.T @ grad_rows
        self.bias.grad = grad_rows.sum(axis=0)
        return grad_output @ self.weight.data.T if self.input_grad else None


class ReLU(Layer):
    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, grad_output):
        return grad_output * self.positive


class Sigmoid(Layer):
    def forward(self, x):
        # exp(-log(1 + e^-x)) never overflows, unlike 1 / (1 + e^-x) for very negative x.
        self.y = np.exp(-np.logaddexp(0, -x))
        return self.y

    def backward(self, grad_output):
        return grad_output * self.y * (1 - self.y)


class Tanh(Layer):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad_output):
        return grad_output * (1 - self.y * self.y)


class Dropout(Layer):
    """Inverted dropout: zero each unit with probability p in training and scale the survivors by
    1/(1-p), so evaluation is the identity and needs no rescaling."""

    def __init__(self, p: float, *, rng: np.random.Generator):
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng

    def forward(self, x):
        if not self.training or self.p == 0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.p
        self.mask = keep.astype(x.dtype) / (1 - self.p)
        return x * self.mask

    def backward(self, grad_output):
        return grad_output if self.mask is None else grad_output * self.mask


def _normalised_backward(grad_xhat, xhat, inv_std, axis):
    """dL/dx for xhat = (x - mean(x)) * inv_std, with mean and variance taken over `axis`.

    Derivation: with n values, dxhat_i/dx_j = inv_std * (delta_ij - 1/n - xhat_i xhat_j / n), so
    dL/dx = inv_std * (g - mean(g) - xhat * mean(g * xhat)) with g = dL/dxhat.
    """
    mean_grad = grad_xhat.mean(axis=axis, keepdims=True)
    mean_grad_xhat = (grad_xhat * xhat).mean(axis=axis, keepdims=True)
    return inv_std * (grad_xhat - mean_grad - xhat * mean_grad_xhat)


class BatchNorm1d(Layer):
    """Batch normalisation over the batch axis of (N, features) inputs (Ioffe & Szegedy 2015).

    Training normalises with the batch's mean and biased variance and moves the running averages
    by `momentum` (new = (1 - momentum) * old + momentum * batch, the running variance unbiased, as
    in torch); evaluation normalises with the running averages.
    """

    buffer_names = ("running_mean", "running_var")

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
                 dtype=np.float32):
        self.momentum = momentum
        self.eps = eps
        self.gamma = Parameter(np.ones(num_features, dtype=dtype), decay=False)
        self.beta = Parameter(np.zeros(num_features, dtype=dtype), decay=False)
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)

    def forward(self, x):
        if not self.training:
            inv_std = 1 / np.sqrt(self.running_var + self.eps)
            return (x - self.running_mean) * inv_std * self.gamma.data + self.beta.data
        n = x.shape[0]
        mean = x.mean(axis=0)
        var = x.var(axis=0)
        self.inv_std = 1 / np.sqrt(var + self.eps)
        self.xhat = (x - mean) * self.inv_std
        m, dtype = self.momentum, self.running_mean.dtype
        unbiased_var = var * n / max(n - 1, 1)
        self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(dtype)
        self.running_var = ((1 - m) * self.running_var + m * unbiased_var).astype(dtype)
        return self.xhat * self.gamma.data + self.beta.data

    def backward(self, grad_output):
        # Only training-mode forwards are differentiated: evaluation never calls backward.
        self.gamma.grad = (grad_output * self.xhat).sum(axis=0)
        self.beta.grad = grad_output.sum(axis=0)
        return _normalised_backward(grad_output * self.gamma.data, self.xhat, self.inv_std, axis=0)


class Flatten(Layer):
    """(N, ...) -> (N, product of the rest), e.g. conv features (N, C, H, W) -> (N, C*H*W)."""

    def forward(self, x):
        self.input_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_output):
        return grad_output.reshape(self.input_shape)
