"""Sequential: layers applied in order, gradients passed back in reverse order."""

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
