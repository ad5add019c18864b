"""A dense classifier for 28x28 images: Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden layer."""

from __future__ import annotations

from torch import nn


class DenseClassifier(nn.Sequential):
    """784 -> hidden... -> classes. The baseline is the same network without batch norm/dropout."""

    def __init__(self, *, hidden: list[int], batch_norm: bool, dropout: float,
                 in_features: int = 28 * 28, classes: int = 10):
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            # No bias before batch norm: its shift makes the bias redundant.
            layers.append(nn.Linear(width, size, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, classes))
        super().__init__(*layers)
