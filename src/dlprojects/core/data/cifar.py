"""CIFAR-10's python batches from data/raw/cifar10: `load_cifar10_splits` returns `ImageSplits`
(uint8 images (N, 32, 32, 3)) with the same seeded validation split as `images.load_image_splits`.
The batches are pickles, so `BatchUnpickler` builds nothing but numpy arrays and plain containers:
a file swapped for a hostile pickle is refused, not run.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct

from dlprojects.core.data.images import ImageSplits, split_arrays
from dlprojects.core.errors import UserError

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck"]


# The only globals a batch names: numpy arrays and their dtype, under numpy 1's or numpy 2's module
# name for `_reconstruct` (the real batches were pickled by Python 2 with numpy 1).
BATCH_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
                 ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
                 ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside BATCH_GLOBALS; nothing it asked for was called."""


class BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays, and refuses every other global,
    so a batch replaced by a hostile pickle cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in BATCH_GLOBALS:
            raise RefusedGlobal(f"{module}.{name}")
        return BATCH_GLOBALS[module, name]


def read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """uint8 rows (N, 3072) and the N labels of one pickled batch; a bad file is a UserError."""
    redownload = f"delete {path.parent} and download CIFAR-10 again"
    try:
        with path.open("rb") as f:
            batch = BatchUnpickler(f, encoding="latin1").load()  # Python 2 str -> str
    except RefusedGlobal as error:
        raise UserError(f"{path} is not a CIFAR-10 batch: its pickle names {error}, and only "
                        f"numpy arrays may be unpickled; {redownload}") from None
    except Exception as error:  # a damaged pickle can raise almost any type
        raise UserError(f"{path} is not a readable CIFAR-10 batch ({type(error).__name__}: "
                        f"{error}); {redownload}") from None
    batch = batch if isinstance(batch, dict) else {}
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32 and isinstance(labels, list)
            and len(labels) == len(data)):
        raise UserError(f"{path} does not hold uint8 'data' (N, 3072) and N 'labels'; {redownload}")
    return data, labels


def read_cifar10_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 32, 32, 3) and int64 labels (N,) of the named pickled batches."""
    images, labels = [], []
    for name in names:
        data, batch_labels = read_batch(folder / name)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return np.concatenate(images).transpose(0, 2, 3, 1), np.concatenate(labels)  # CHW -> HWC


def load_cifar10_splits(root: Path, *, validation_size: int, seed: int, train_samples: int = 0,
                        test_samples: int = 0) -> ImageSplits:
    """The 50,000 training images split like `load_image_splits`, and the 10,000 test images."""
    folder = Path(root) / CIFAR10_FOLDER
    if not folder.is_dir():
        raise UserError(f"{folder} not found; CIFAR-10 has no offline mirror: where the internet "
                        f"is reachable, extract {CIFAR10_URL} into {root}")
    images, labels = read_cifar10_batches(folder, [f"data_batch_{i}" for i in range(1, 6)])
    test_images, test_labels = read_cifar10_batches(folder, ["test_batch"])
    return split_arrays(images, labels, test_images, test_labels, CIFAR10_CLASS_NAMES,
                        validation_size=validation_size, seed=seed,
                        train_samples=train_samples, test_samples=test_samples)
