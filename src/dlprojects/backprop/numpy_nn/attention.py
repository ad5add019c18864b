"""Multi-head scaled dot-product self-attention (Vaswani et al. 2017) with a derived backward.

Shapes: B batch, T tokens, D = heads * Dh model width, Dh width of one head.
"""

import numpy as np

from .layers import Layer, Linear
from .losses import softmax


class MultiHeadSelfAttention(Layer):
    """softmax(Q K^T / sqrt(Dh) + mask) V per head, heads concatenated and projected.

    `causal=True` lets token t attend to tokens <= t only. `forward(x, key_padding_mask=...)`
    takes a (B, T) bool array, True where a token is padding that no query may attend to (the
    convention of torch.nn.MultiheadAttention). A query whose every key is masked gets a uniform
    average instead of NaN.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, rng: np.random.Generator,
                 causal: bool = False, dtype=np.float32):
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.causal = causal
        self.qkv = Linear(embed_dim, 3 * embed_dim, rng=rng, init="xavier", dtype=dtype)
        self.out = Linear(embed_dim, embed_dim, rng=rng, init="xavier", dtype=dtype)

    def _allowed(self, tokens: int, key_padding_mask):
        """Bool array broadcastable to the (B, H, T, T) scores, True where a query may attend."""
        allowed = np.ones((1, 1, tokens, tokens), dtype=bool)
        if self.causal:
            allowed = allowed & np.tril(allowed[0, 0])
        if key_padding_mask is not None:
            allowed = allowed & ~key_padding_mask[:, None, None, :]
        return allowed

    def forward(self, x, key_padding_mask=None):
        batch, tokens, width = x.shape
        heads, head_width = self.num_heads, width // self.num_heads
        qkv = self.qkv.forward(x).reshape(batch, tokens, 3, heads, head_width)
        self.q, self.k, self.v = qkv.transpose(2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        self.scale = 1.0 / float(np.sqrt(head_width))
        scores = (self.q @ self.k.swapaxes(-1, -2)) * self.scale  # (B, H, T, T)
        if self.causal or key_padding_mask is not None:
            # The most negative finite number, not -inf: a fully masked row stays finite.
            allowed = self._allowed(tokens, key_padding_mask)
            scores = np.where(allowed, scores, np.finfo(scores.dtype).min)
        self.attention = softmax(scores)
        heads_out = self.attention @ self.v  # (B, H, T, Dh)
        return self.out.forward(heads_out.transpose(0, 2, 1, 3).reshape(batch, tokens, width))

    def backward(self, grad_output):
        batch, tokens, width = grad_output.shape
        heads, head_width = self.num_heads, width // self.num_heads
        grad_heads_out = self.out.backward(grad_output).reshape(batch, tokens, heads, head_width)
        grad_heads_out = grad_heads_out.transpose(0, 2, 1, 3)  # (B, H, T, Dh)
        grad_v = self.attention.swapaxes(-1, -2) @ grad_heads_out
        grad_attention = grad_heads_out @ self.v.swapaxes(-1, -2)  # (B, H, T, T)
        # Softmax backward row by row: dS = A * (dA - sum_j dA_j A_j). Masked entries have A = 0,
        # so they get no gradient.
        grad_scores = self.attention * (
            grad_attention - (grad_attention * self.attention).sum(axis=-1, keepdims=True))
        grad_scores *= self.scale
        grad_q = grad_scores @ self.k
        grad_k = grad_scores.swapaxes(-1, -2) @ self.q
        grad_qkv = np.stack([grad_q, grad_k, grad_v])  # (3, B, H, T, Dh)
        grad_qkv = grad_qkv.transpose(1, 3, 0, 2, 4).reshape(batch, tokens, 3 * width)
        return self.qkv.backward(grad_qkv)
