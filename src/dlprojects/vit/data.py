"""The images the ViT trains on: MNIST, FashionMNIST or CIFAR-10 (`train_vit.dataset`), split
alike (`data.images.normalised_tensor` standardises either kind)."""

from __future__ import annotations

from pathlib import Path

from dlprojects.core.data.cifar import load_cifar10_splits
from dlprojects.core.data.images import ImageSplits, load_image_splits


def load_splits(dataset: str, root: Path, *, validation_size: int, seed: int,
                train_samples: int = 0, test_samples: int = 0) -> ImageSplits:
    """Train/validation/test images of `dataset` from `root` (data/raw/<dataset>)."""
    load = load_cifar10_splits if dataset == "cifar10" else (
        lambda root, **kwargs: load_image_splits(dataset, root, **kwargs))
    return load(root, validation_size=validation_size, seed=seed, train_samples=train_samples,
                test_samples=test_samples)
