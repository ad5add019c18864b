"""torch's matrix products on the CPU through OpenBLAS's Haswell kernel: portable and fast.

MKL runs other code on AMD CPUs than on Intel ones unless it is held to its COMPATIBLE branch,
whose SGEMM is 2.5 to 3.5 times slower (DESIGN: 9.4 against 32.6 GFLOP/s on an AMD EPYC). NumPy's
OpenBLAS, held to its Haswell kernel (`OPENBLAS_CORETYPE`), runs the same code on both, and that
kernel's blocking is a constant of the kernel, not measured from the CPU's caches. So `route()`
replaces torch's CPU kernels for `mm`, `addmm`, `bmm` and `baddbmm` with calls to it.

Threads: a product is cut into up to `torch.get_num_threads()` pieces (the matrices of a batch,
else rows, as evenly as whole panels allow), each computed by single-threaded OpenBLAS beside the
others.
OpenBLAS's kernel computes rows in panels of 12 (`PANEL`), and a row's last bits depend on its
place in its panel, so cuts fall on panel boundaries: the pieces give the very bytes of one
uncut call, and the thread count changes no byte of a product. (The distributed loop cuts its
batches between processes on panel boundaries too: `distributed.bounds`.) OpenBLAS's own
threads stay off: its pool and torch's OpenMP pool would fight over the cores (a ViT step took
10 times as long).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

PANEL = 12             # rows that OpenBLAS's Haswell SGEMM kernel computes together
MIN_SPLIT_FLOPS = 1 << 25  # below ~30 MFLOP a second thread costs more than it saves here
NUMPY_TYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128, torch.int64,
               torch.int32, torch.int16, torch.int8, torch.uint8)

_library: torch.library.Library | None = None
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def route() -> None:
    """Install the kernels (once per process); see the module's docstring."""
    global _library
    if _library is not None:
        return
    from threadpoolctl import threadpool_limits

    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Overriding a previously registered kernel")
        library.impl("mm", mm, "CPU")
        library.impl("addmm", addmm, "CPU")
        library.impl("bmm", bmm, "CPU")
        library.impl("baddbmm", baddbmm, "CPU")
    torch.backends.nnpack.set_flags(False)  # its own kernels, blocked by the cache it finds
    threadpool_limits(1, user_api="blas")
    _library = library


def routed() -> bool:
    return _library is not None


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _check(a, b, dims=2, name="mm")
    return product(a, b)


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _check(a, b, dims=3, name="bmm")
    if a.shape[0] != b.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {a.shape[0]} and {b.shape[0]}")
    return product(a, b)


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta=1, alpha=1):
    _check(a, b, dims=2, name="addmm")
    return _scale_and_add(product(a, b), bias, beta, alpha)


def baddbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta=1, alpha=1):
    _check(a, b, dims=3, name="baddbmm")
    return _scale_and_add(product(a, b), bias, beta, alpha)


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for (m, k) @ (k, n) or (batch, m, k) @ (batch, k, n) CPU tensors."""
    if a.dtype in (torch.bfloat16, torch.float16):  # NumPy has no bfloat16: compute in fp32
        return product(a.float(), b.float()).to(a.dtype)
    if a.dtype not in NUMPY_TYPES:
        raise RuntimeError(f"matrix product not implemented for {a.dtype} on the CPU")
    x, y = _array(a), _array(b)
    out = np.empty(x.shape[:-1] + y.shape[-1:], dtype=x.dtype)
    pieces = _pieces(x, y, torch.get_num_threads())
    if len(pieces) == 1:
        np.matmul(x, y, out=out)
    else:
        pool = _workers(len(pieces) - 1)
        futures = [pool.submit(np.matmul, x[i], y[j], out=out[o]) for i, j, o in pieces[1:]]
        i, j, o = pieces[0]
        np.matmul(x[i], y[j], out=out[o])
        for future in futures:
            future.result()
    return torch.from_numpy(out)


def _pieces(x: np.ndarray, y: np.ndarray, threads: int) -> list[tuple]:
    """Index triples (into x, y, out) that cut x @ y into up to `threads` independent parts:
    matrices of a batch, or rows of a matrix at whole panels (never columns: a column's bytes
    depend on the others around it)."""
    m, k, n = x.shape[-2], x.shape[-1], y.shape[-1]
    batch = x.shape[0] if x.ndim == 3 else 1
    if threads < 2 or 2 * batch * m * k * n < MIN_SPLIT_FLOPS:
        return [(..., ..., ...)]
    if batch >= threads:
        bounds = np.linspace(0, batch, threads + 1).round().astype(int)
        return [(slice(s, e),) * 3 for s, e in zip(bounds[:-1], bounds[1:])]
    if x.ndim == 3:
        return [(..., ..., ...)]
    bounds = row_bounds(m, threads)
    if len(bounds) < 3:
        return [(..., ..., ...)]
    every = slice(None)
    return [(slice(start, end), every, slice(start, end))
            for start, end in zip(bounds[:-1], bounds[1:])]


def row_bounds(m: int, pieces: int) -> list[int]:
    """Cuts of m rows into up to `pieces` nearly equal parts at whole panels, none smaller than a
    panel (a lone row would take OpenBLAS's matrix-vector path, whose bytes differ). Long
    products are cut at multiples of 4 panels (ran faster), short ones (a weight gradient's 64
    rows) at single panels, so that 64 rows make 36 and 28, not 48 and 16."""
    unit = 4 * PANEL if m >= 8 * PANEL * pieces else PANEL
    units = -(-m // unit)
    bounds = sorted({min(m, round(units * index / pieces) * unit) for index in range(pieces + 1)})
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < PANEL:
        del bounds[-2]
    return bounds


def _workers(count: int) -> ThreadPoolExecutor:
    """A pool of `count` threads for this process (a forked child makes its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] != count:
        _pool = (os.getpid(), count, ThreadPoolExecutor(count, thread_name_prefix="gemm"))
    return _pool[2]


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy view that BLAS takes as it is: row- or column-major matrices (else a copy)."""
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if not (tensor.is_contiguous() or tensor.transpose(-2, -1).is_contiguous()):
        tensor = tensor.contiguous()
    return tensor.numpy()


def _check(a: torch.Tensor, b: torch.Tensor, *, dims: int, name: str) -> None:
    if a.dim() != dims or b.dim() != dims:
        raise RuntimeError(f"{name}: expected {dims}-D tensors, got {a.dim()}-D and {b.dim()}-D")
    if a.shape[-1] != b.shape[-2]:
        raise RuntimeError(f"{name}: shapes cannot be multiplied "
                           f"({'x'.join(map(str, a.shape))} and {'x'.join(map(str, b.shape))})")
    if a.dtype != b.dtype:
        raise RuntimeError(f"{name}: expected both operands to have the same dtype, "
                           f"got {a.dtype} and {b.dtype}")


def _scale_and_add(out: torch.Tensor, bias: torch.Tensor, beta, alpha) -> torch.Tensor:
    """alpha * out + beta * bias, as addmm defines it (bias ignored when beta is 0)."""
    if alpha != 1:
        out.mul_(alpha)
    if beta != 0:
        out.add_(bias.to(out.dtype) if beta == 1 else bias.to(out.dtype) * beta)
    return out
