"""A dense classifier for 28x28 images: Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden layer."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dlprojects.core.models import ImageNetwork, torch_image_network
from dlprojects.core.weights import load_params


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


def classifier(folder: Path) -> ImageNetwork:
    """The variant trained into `folder` (its model.safetensors records its params): uint8 28x28
    FashionMNIST images in (the builder its model.json names)."""
    params = load_params(Path(folder) / "model.safetensors")
    return torch_image_network(DenseClassifier(**params["variants"][params["variant"]]), folder,
                               "fashion_mnist")


def probe_steps() -> list:
    """The numerics probe's check of this model: three training steps from a fixed start."""
    import torch

    from dlprojects.numerics.probe import random_tensor, train_steps

    torch.manual_seed(0)
    model = DenseClassifier(hidden=[256, 128, 64], batch_norm=True, dropout=0.2)
    return train_steps(model, (random_tensor(256, 1, 28, 28, seed=13),), torch.arange(256) % 10)
