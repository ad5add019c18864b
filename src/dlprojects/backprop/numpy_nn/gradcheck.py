"""Check hand-written backward passes against central finite differences in float64."""

import numpy as np

from .layers import Layer


def numerical_gradient(f, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f() / d array by central differences, perturbing `array` in place one entry at a time.

    f takes no arguments and returns a scalar computed from `array` (and anything else it reads).
    Error per entry is O(eps^2) from truncation plus about 1e-16 * |f| / eps from rounding.
    """
    if array.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 arrays, got {array.dtype}")
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + eps
        f_plus = f()
        array[index] = original - eps
        f_minus = f()
        array[index] = original
        grad[index] = (f_plus - f_minus) / (2 * eps)
    return grad


def max_relative_error(analytic: np.ndarray, numeric: np.ndarray, *,
                       scale: float | None = None) -> float:
    """max |a - n| / max(|a| + |n|, 0.01 * scale) over entries; scale defaults to max |n|.

    The floor keeps entries that are almost zero, where a finite difference is all rounding
    error, from dominating. A gradient that is zero everywhere (a bias just before batch norm)
    needs the scale of the other gradients of the same check.
    """
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    if analytic.shape != numeric.shape:
        raise ValueError(f"gradient shapes differ: analytic {analytic.shape}, "
                         f"numeric {numeric.shape}")
    if scale is None:
        scale = float(np.abs(numeric).max(initial=0.0))
    floor = max(0.01 * scale, 1e-12)
    denominator = np.maximum(np.abs(analytic) + np.abs(numeric), floor)
    return float((np.abs(analytic - numeric) / denominator).max())


def check_layer(layer: Layer, x: np.ndarray, *, rng: np.random.Generator, eps: float = 1e-6,
                **forward_kwargs) -> dict[str, float]:
    """Max relative error of the layer's input gradient ("input") and of each parameter gradient.

    The layer and x must be float64 (`layer.astype(np.float64)` converts a float32 model). The
    scalar checked is sum(forward(x) * R) for a fixed random R, whose gradient with respect to
    the output is R: every output entry gets a different weight. "input" is left out when the
    layer returns no input gradient (a first layer built with input_grad=False).
    """
    output_weights = rng.standard_normal(layer.forward(x, **forward_kwargs).shape)

    def scalar():
        return float((layer.forward(x, **forward_kwargs) * output_weights).sum())

    arrays = {"input": x, **{name: p.data for name, p in layer.named_parameters().items()}}
    analytic = {"input": layer.backward(output_weights)}
    analytic.update({name: p.grad.copy() for name, p in layer.named_parameters().items()})
    if analytic["input"] is None:
        del arrays["input"], analytic["input"]
    numeric = {name: numerical_gradient(scalar, array, eps) for name, array in arrays.items()}
    scale = max(float(np.abs(gradient).max(initial=0.0)) for gradient in numeric.values())
    return {name: max_relative_error(analytic[name], numeric[name], scale=scale) for name in arrays}
