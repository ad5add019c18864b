"""Multi-head self-attention on the CPU from one packed q/k/v projection, without copies.

A transformer's q/k/v projection gives (B, N, 3 * H * d) rows. Attention wants (B, H, N, d)
matrices: torch reaches them by permuting and copying q, k, v and the output, and in the backward
pass by stacking the three gradients into one more copy. Here every product reads and writes the
packed layout in place (NumPy hands BLAS the strided matrices as they are), so neither pass copies
anything but the products' own results; the softmax and its gradient stay torch's kernels. The
products are the very BLAS calls the routed torch ones make (`dlprojects.numerics.gemm`), on one
thread: 512 products of 17 x 16 matrices gained nothing from a second one here.

`queries=q` attends from the first q tokens only (a class token reading the sequence): the last
block of a classifier that reads its class token needs no other row.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dlprojects.numerics import gemm

__all__ = ["packed_attention", "supported"]


def supported(qkv: Tensor) -> bool:
    """Whether `packed_attention` runs this tensor (else use scaled_dot_product_attention)."""
    return (qkv.device.type == "cpu" and qkv.dtype in (torch.float32, torch.float64)
            and gemm.routed())


def packed_attention(qkv: Tensor, heads: int, queries: int | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d)) v per head: (B, N, 3 * heads * d) -> (B, queries or N, heads * d),
    heads side by side as `transpose(1, 2).reshape` of (B, H, N, d) would give them."""
    b, n, width = qkv.shape
    if width % (3 * heads):
        raise ValueError(f"packed q/k/v width {width} is not 3 x {heads} heads")
    return _PackedAttention.apply(qkv.contiguous(), heads, n if queries is None else queries)


def _split(array: np.ndarray, heads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, N, 3 * H * d) -> q, k, v views (B, H, N, d) into it."""
    b, n, width = array.shape
    packed = array.reshape(b, n, 3, heads, width // 3 // heads)
    return tuple(packed[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


def _heads(array: np.ndarray, heads: int) -> np.ndarray:
    """(B, N, H * d) -> a (B, H, N, d) view."""
    b, n, width = array.shape
    return array.reshape(b, n, heads, width // heads).transpose(0, 2, 1, 3)


class _PackedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: Tensor, heads: int, queries: int) -> Tensor:
        b, n, width = qkv.shape
        q, k, v = _split(qkv.detach().numpy(), heads)
        scale = q.shape[-1] ** -0.5
        scores = torch.from_numpy(np.matmul(q[:, :, :queries], k.swapaxes(-2, -1)))  # (B,H,Q,N)
        weights = scores.mul_(scale).softmax(dim=-1)
        out = np.empty((b, queries, width // 3), dtype=q.dtype)
        np.matmul(weights.numpy(), v, out=_heads(out, heads))
        ctx.save_for_backward(qkv, weights)
        ctx.heads = heads
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        qkv, weights = ctx.saved_tensors
        q, k, v = _split(qkv.numpy(), ctx.heads)
        queries = weights.shape[2]
        scale = q.shape[-1] ** -0.5
        grad_heads = _heads(grad_out.contiguous().numpy(), ctx.heads)     # (B, H, Q, d)
        grad = (np.empty if queries == qkv.shape[1] else np.zeros)(qkv.shape, dtype=q.dtype)
        grad_q, grad_k, grad_v = _split(grad, ctx.heads)
        probabilities = weights.numpy()
        np.matmul(probabilities.swapaxes(-2, -1), grad_heads, out=grad_v)
        grad_weights = torch.from_numpy(np.matmul(grad_heads, v.swapaxes(-2, -1)))
        grad_scores = torch._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
        grad_scores = grad_scores.mul_(scale).numpy()                     # (B, H, Q, N)
        np.matmul(grad_scores, k, out=grad_q[:, :, :queries])
        np.matmul(grad_scores.swapaxes(-2, -1), q[:, :, :queries], out=grad_k)
        return torch.from_numpy(grad), None, None
