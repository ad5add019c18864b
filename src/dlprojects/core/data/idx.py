"""IDX files (the MNIST format): a big-endian header, then the raw uint8 array."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np

_UINT8 = 0x08


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX: magic (0, 0, type, ndim), then each dimension as uint32."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _UINT8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + array.tobytes())


def read_idx(path: Path) -> np.ndarray:
    data = Path(path).read_bytes()
    if data[:3] != bytes([0, 0, _UINT8]):
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def gunzip(source: Path, target: Path) -> None:
    with gzip.open(source, "rb") as compressed, target.open("wb") as plain:
        shutil.copyfileobj(compressed, plain, length=1 << 20)
