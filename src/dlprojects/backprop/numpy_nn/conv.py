"""2-D convolution (im2col and one matrix product) and max pooling, with their backward passes.

Shapes follow torch: images are (B, C, H, W), conv weights (out_channels, in_channels, k, k).
Internally both layers work channels-last: their outputs are (B, C, H, W) views of (B, H, W, C)
memory, so the next layer's window copy reads channels contiguously.
"""

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .layers import Layer, Parameter
from .init import initial_weights


def _windows(x_channels_last, k: int, stride: int):
    """(B, H, W, C) -> view (B, Ho, Wo, C, k, k) of every k x k window `stride` apart."""
    return sliding_window_view(x_channels_last, (k, k), axis=(1, 2))[:, ::stride, ::stride]


def _window_offset(i: int, j: int, stride: int, out_height: int, out_width: int):
    """Index into (B, H, W, C) picking every window's pixel at offset (i, j): (B, Ho, Wo, C)."""
    return (slice(None), slice(i, i + stride * out_height, stride),
            slice(j, j + stride * out_width, stride))


class Conv2d(Layer):
    """Cross-correlation with a square kernel, zero padding and stride, like torch.nn.Conv2d.

    input_grad=False (for a first layer, whose input is data) makes backward skip dL/dx and
    return None.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 stride: int = 1, padding: int = 0, rng: np.random.Generator,
                 init: str = "he", input_grad: bool = True, dtype=np.float32):
        self.input_grad = input_grad
        self.stride = stride
        self.padding = padding
        k = kernel_size
        fan_in, fan_out = in_channels * k * k, out_channels * k * k
        weight = initial_weights(init, (out_channels, in_channels, k, k), fan_in=fan_in,
                                 fan_out=fan_out, rng=rng, dtype=dtype)
        self.weight = Parameter(weight)
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype), decay=False)

    def forward(self, x):
        batch, channels, height, width = x.shape
        out_channels, _, k, _ = self.weight.data.shape
        p, s = self.padding, self.stride
        padded = np.zeros((batch, height + 2 * p, width + 2 * p, channels), dtype=x.dtype)
        padded[:, p:p + height, p:p + width, :] = x.transpose(0, 2, 3, 1)
        windows = _windows(padded, k, s)  # (B, Ho, Wo, C, k, k)
        out_height, out_width = windows.shape[1:3]
        # im2col: one row per output pixel, columns ordered (ki, kj, c) so c is contiguous.
        self.cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(batch * out_height * out_width, -1)
        self.padded_shape = padded.shape
        weight_rows = self.weight.data.transpose(0, 2, 3, 1).reshape(out_channels, -1)  # (O, k*k*C)
        out = self.cols @ weight_rows.T  # (B*Ho*Wo, O)
        out += self.bias.data
        return out.reshape(batch, out_height, out_width, out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad_output):
        batch, out_channels, out_height, out_width = grad_output.shape
        _, in_channels, k, _ = self.weight.data.shape
        p, s = self.padding, self.stride
        grad_rows = grad_output.transpose(0, 2, 3, 1).reshape(-1, out_channels)  # (B*Ho*Wo, O)
        grad_weight = (grad_rows.T @ self.cols).reshape(out_channels, k, k, in_channels)
        self.weight.grad = np.ascontiguousarray(grad_weight.transpose(0, 3, 1, 2))
        # A matrix-vector product: ten times faster than .sum(axis=0) on this tall, narrow array.
        self.bias.grad = np.ones(len(grad_rows), dtype=grad_rows.dtype) @ grad_rows
        if not self.input_grad:
            return None
        # col2im fused with the product grad_rows @ weight_rows: the kernel tap at offset (i, j)
        # sends grad_rows @ W[:, :, i, j] back onto the pixels it read. k*k products of shape
        # (B*Ho*Wo, C) need less memory, and here ran twice as fast, as one (B*Ho*Wo, k*k*C)
        # product scattered afterwards.
        grad_padded = np.zeros(self.padded_shape, dtype=grad_rows.dtype)  # (B, Hp, Wp, C)
        for i in range(k):
            for j in range(k):
                grad_pixels = grad_rows @ self.weight.data[:, :, i, j]  # (B*Ho*Wo, C)
                grad_padded[_window_offset(i, j, s, out_height, out_width)] += grad_pixels.reshape(
                    batch, out_height, out_width, in_channels)
        _, padded_height, padded_width, _ = self.padded_shape
        return grad_padded[:, p:padded_height - p, p:padded_width - p, :].transpose(0, 3, 1, 2)


class MaxPool2d(Layer):
    """Maximum over k x k windows `stride` apart (default stride = k), no padding.

    The gradient goes only to the first maximum of each window (in row-major order), as in torch:
    a window of tied values (a blank patch of the image) passes its gradient on once, not once per
    tie.
    """

    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        if kernel_size > 16:
            raise ValueError(f"kernel_size {kernel_size} > 16: window indices are stored as uint8")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride

    def forward(self, x):
        k, s = self.kernel_size, self.stride
        x = x.transpose(0, 2, 3, 1)  # (B, H, W, C)
        out_height, out_width = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
        # One strided view per offset in the window, each (B, Ho, Wo, C): k*k cheap passes
        # instead of copying every window out.
        views = [x[_window_offset(i, j, s, out_height, out_width)]
                 for i in range(k) for j in range(k)]
        out = functools.reduce(np.maximum, views)
        # Offset of each window's first maximum; going backwards lets earlier offsets win.
        argmax = np.full(out.shape, len(views) - 1, dtype=np.uint8)
        for index in range(len(views) - 2, -1, -1):
            argmax = np.where(views[index] == out, np.uint8(index), argmax)
        self.argmax = argmax
        self.input_shape = x.shape  # channels last
        return out.transpose(0, 3, 1, 2)

    def backward(self, grad_output):
        k, s = self.kernel_size, self.stride
        grad_output = grad_output.transpose(0, 2, 3, 1)  # (B, Ho, Wo, C)
        out_height, out_width = grad_output.shape[1:3]
        grad_input = np.zeros(self.input_shape, dtype=grad_output.dtype)
        for index in range(k * k):
            # += because overlapping windows (stride < k) can share a maximum.
            grad_input[_window_offset(*divmod(index, k), s, out_height, out_width)] += (
                grad_output * (self.argmax == index))
        return grad_input.transpose(0, 3, 1, 2)
