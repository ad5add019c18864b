"""Weight initialisation: He for ReLU networks, Xavier (Glorot) for tanh/sigmoid ones.

Both keep the variance of activations roughly constant from layer to layer, so deep stacks start
neither saturated nor vanishing. Every draw comes from an explicit `np.random.Generator`, so a seed
reproduces a model exactly.
"""

import numpy as np


def he_normal(shape, *, fan_in: int, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """N(0, 2/fan_in): ReLU zeroes half its inputs, the 2 makes up for it (He et al. 2015)."""
    std = float(np.sqrt(2.0 / fan_in))
    return (rng.standard_normal(shape) * std).astype(dtype)


def xavier_uniform(
    shape, *, fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), i.e. variance 2/(fan_in+fan_out)
    (Glorot & Bengio 2010)."""
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def initial_weights(
    scheme: str, shape, *, fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """Weights drawn by `scheme`, "he" or "xavier"."""
    if scheme == "he":
        return he_normal(shape, fan_in=fan_in, rng=rng, dtype=dtype)
    if scheme == "xavier":
        return xavier_uniform(shape, fan_in=fan_in, fan_out=fan_out, rng=rng, dtype=dtype)
    raise ValueError(f"unknown weight init {scheme!r}: use 'he' or 'xavier'")
