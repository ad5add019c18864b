"""Optimisers that update Parameter.data in place from Parameter.grad, and learning-rate schedules.

Weight decay: SGD adds L2 decay to the gradient (coupled, as torch.optim.SGD); Adam decays the
weights directly, outside the adaptive step (decoupled, as torch.optim.AdamW), because L2 decay
inside Adam's step is divided by sqrt(v) and so shrinks rarely-updated weights most. Either way
only parameters with `decay=True` (weights, not biases or normalisation gains) are decayed.
"""

import math

import numpy as np

from .layers import Parameter

SCHEDULES = ("constant", "cosine", "step")


class SGD:
    """p -= lr * buf, buf = momentum * buf + (grad + weight_decay * p); `nesterov` looks ahead."""

    def __init__(self, parameters: list[Parameter], *, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        self.parameters = list(parameters)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.velocity = [np.zeros_like(p.data) for p in self.parameters]

    def step(self) -> None:
        for p, velocity in zip(self.parameters, self.velocity):
            grad = p.grad + self.weight_decay * p.data if p.decay and self.weight_decay else p.grad
            if self.momentum:
                velocity *= self.momentum
                velocity += grad
                grad = grad + self.momentum * velocity if self.nesterov else velocity
            p.data -= self.lr * grad


class Adam:
    """Adam (Kingma & Ba 2015) with decoupled weight decay (AdamW, Loshchilov & Hutter 2019)."""

    def __init__(self, parameters: list[Parameter], *, lr: float, betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.parameters = list(parameters)
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.steps = 0
        self.first_moment = [np.zeros_like(p.data) for p in self.parameters]
        self.second_moment = [np.zeros_like(p.data) for p in self.parameters]

    def step(self) -> None:
        self.steps += 1
        # Bias corrections undo the zero start of both moving averages.
        step_size = self.lr / (1 - self.beta1 ** self.steps)
        second_correction = math.sqrt(1 - self.beta2 ** self.steps)
        for p, m, v in zip(self.parameters, self.first_moment, self.second_moment):
            if p.decay and self.weight_decay:
                p.data *= 1 - self.lr * self.weight_decay
            m *= self.beta1
            m += (1 - self.beta1) * p.grad
            v *= self.beta2
            v += (1 - self.beta2) * p.grad * p.grad
            p.data -= step_size * m / (np.sqrt(v) / second_correction + self.eps)


def learning_rate(schedule: str, *, step: int, total_steps: int, base_lr: float,
                  warmup_steps: int = 0) -> float:
    """Learning rate for optimiser step `step` (0-based) of `total_steps`.

    A linear warm-up from base_lr / warmup_steps to base_lr comes first, whatever the schedule.
    Then "constant" keeps base_lr, "cosine" decays it to 0 along half a cosine, and "step" divides
    it by 10 at 50% and again at 75% of the remaining steps.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}: use one of {SCHEDULES}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)  # in [0, 1)
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return base_lr * 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return base_lr
