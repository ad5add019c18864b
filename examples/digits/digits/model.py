"""Softmax regression: one linear map from the 784 pixels to the 10 classes."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dlprojects.core.models import ImageNetwork, torch_image_network


def network() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))


def classifier(folder: Path) -> ImageNetwork:
    """The trained network in `folder`: uint8 28x28 digits in (the builder its model.json names)."""
    return torch_image_network(network(), folder, "mnist")
