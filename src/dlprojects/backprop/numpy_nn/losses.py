"""Softmax and cross-entropy, fused so that both the loss and its gradient stay finite."""

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis; subtracting the row maximum keeps exp() from overflowing."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


class SoftmaxCrossEntropy:
    """Mean cross-entropy between softmax(logits) and integer class labels.

    With label smoothing eps the target is (1 - eps) * one_hot + eps / classes, as in
    torch.nn.CrossEntropyLoss(label_smoothing=eps). Fusing softmax with the loss turns the
    gradient into (probabilities - target) / N, with no division by a tiny probability.
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def __call__(self, logits, labels):
        return self.forward(logits, labels)

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        """logits (N, classes), labels (N,) integer class indices -> mean loss."""
        n, classes = logits.shape
        log_probabilities = log_softmax(logits)
        target = np.full_like(logits, self.label_smoothing / classes)
        target[np.arange(n), labels] += 1 - self.label_smoothing
        self.probabilities = np.exp(log_probabilities)
        self.target = target
        return float(-(target * log_probabilities).sum() / n)

    def backward(self) -> np.ndarray:
        """dL/dlogits of the last forward, (N, classes)."""
        return (self.probabilities - self.target) / self.target.shape[0]
