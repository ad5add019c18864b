"""MNIST-format image sets from data/raw, and the validation split carved from their training set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlprojects.core.data.idx import read_idx
from dlprojects.core.errors import UserError

FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
}


@dataclass(frozen=True)
class ImageSplits:
    """uint8 images (N, 28, 28) and int64 labels (N,) for train, validation and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]


def load_image_splits(dataset: str, root: Path, *, validation_size: int, seed: int,
                      train_samples: int = 0, test_samples: int = 0) -> ImageSplits:
    """The canonical IDX files under `root` (data/raw/<dataset>), split with a seeded permutation.

    `train_samples` / `test_samples` > 0 keep that many (seeded) for quick runs; 0 keeps all.
    """
    raw = Path(root) / FOLDERS[dataset] / "raw"
    if not raw.is_dir():
        raise UserError(f"{raw} not found; run `dvc repro download@{dataset}` first")
    images = read_idx(raw / "train-images-idx3-ubyte")
    labels = read_idx(raw / "train-labels-idx1-ubyte").astype(np.int64)
    test_images = read_idx(raw / "t10k-images-idx3-ubyte")
    test_labels = read_idx(raw / "t10k-labels-idx1-ubyte").astype(np.int64)
    return split_arrays(images, labels, test_images, test_labels, CLASS_NAMES[dataset],
                        validation_size=validation_size, seed=seed,
                        train_samples=train_samples, test_samples=test_samples)


def split_arrays(images: np.ndarray, labels: np.ndarray, test_images: np.ndarray,
                 test_labels: np.ndarray, class_names: list[str], *, validation_size: int,
                 seed: int, train_samples: int = 0, test_samples: int = 0) -> ImageSplits:
    """Train/validation from the training images by a seeded permutation; the test images kept
    whole, or a seeded `test_samples` of them."""
    if validation_size >= len(labels):
        raise UserError(f"validation_size {validation_size} leaves no training images "
                        f"(the set has {len(labels)})")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    val_index, train_index = order[:validation_size], order[validation_size:]
    if train_samples:
        train_index = train_index[:train_samples]
    test_index = np.arange(len(test_labels))
    if test_samples:
        test_index = np.sort(rng.permutation(len(test_labels))[:test_samples])
    return ImageSplits(images[train_index], labels[train_index], images[val_index],
                       labels[val_index], test_images[test_index], test_labels[test_index],
                       class_names)


# Training-set pixel statistics of images scaled to [0, 1]: (mean, std); per channel (R, G, B)
# for CIFAR-10's 50,000 training images.
PIXEL_STATS = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530),
               "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}


def to_tensor(images: np.ndarray, device, *, mean: float, std: float):
    """uint8 (N, H, W) -> normalised float32 (N, 1, H, W) on `device`."""
    import torch

    pixels = torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=torch.float32)
    return ((pixels / 255.0 - mean) / std).unsqueeze(1)


def normalised_tensor(images: np.ndarray, dataset: str, device):
    """uint8 (N, H, W) or (N, H, W, 3) -> float32 (N, C, H, W) on `device`, standardised with the
    training set's statistics (per channel for colour)."""
    import torch

    if images.ndim == 3:
        mean, std = PIXEL_STATS[dataset]
        return to_tensor(images, device, mean=mean, std=std)
    mean, std = (torch.tensor(stats, device=device).view(1, 3, 1, 1)
                 for stats in PIXEL_STATS[dataset])
    pixels = torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=torch.float32)
    return ((pixels.permute(0, 3, 1, 2) / 255.0 - mean) / std).contiguous()


def class_names(dataset: str) -> list[str]:
    """The class names of an image data set, in label order."""
    if dataset == "cifar10":
        from dlprojects.core.data.cifar import CIFAR10_CLASS_NAMES

        return list(CIFAR10_CLASS_NAMES)
    return list(CLASS_NAMES[dataset])


def image_shape(dataset: str) -> tuple[int, ...]:
    """The shape of one image as the data set stores it: (28, 28) grey or (32, 32, 3) colour."""
    return (32, 32, 3) if dataset == "cifar10" else (28, 28)
