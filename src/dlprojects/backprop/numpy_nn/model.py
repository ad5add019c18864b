"""Sequential: layers applied in order, gradients passed back in reverse order; `save_npz`."""

import io
import zipfile

import numpy as np

from dlprojects.core.files import atomic_path

from .layers import Layer


class Sequential(Layer):
    """Parameters and state-dict entries are named "<index>.<name>", e.g. "0.weight"."""

    def __init__(self, *layers: Layer):
        self.layers = list(layers)

    def children(self) -> dict[str, Layer]:
        return {str(index): layer for index, layer in enumerate(self.layers)}

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_output):
        """Backpropagate dL/d output; fills every Parameter.grad and returns dL/d input (None when
        the first layer was built with input_grad=False)."""
        for layer in reversed(self.layers):
            grad_output = layer.backward(grad_output)
        return grad_output

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]


def save_npz(path, state: dict[str, np.ndarray]) -> None:
    """`np.savez` with fixed zip timestamps and member order, so identical weights give an
    identical file (np.savez stamps each member with the current time). Loads with `np.load`."""
    with atomic_path(path) as scratch, zipfile.ZipFile(scratch, "w",
                                                        compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(state):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(state[name]),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, buffer.getvalue())
