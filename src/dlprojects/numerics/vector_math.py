"""torch's vector math on the CPU without MKL's VML: the same bytes on Intel and AMD.

ATen hands exp, log, sqrt, tanh, erf and a few more of float tensors to MKL's vector math (VML,
high-accuracy mode), which picks its code by the CPU's vendor and ignores MKL_CBWR: on an AMD
EPYC its float32 sqrt is not even correctly rounded (17% of 100,000 values off by one ulp), and
exp, log, tanh and erf there differ from an Intel Xeon's. So AdamW's `sqrt` alone made every
torch stage's bytes depend on the vendor. `route()` gives these ops to NumPy's loops, held to
their AVX2 code on every CPU by NPY_ENABLE_CPU_FEATURES (sqrt is IEEE's, exact everywhere), and
the error function family, which NumPy lacks, to SciPy's.

Results keep torch's semantics: integers and bools give the default float type, float16 and
bfloat16 are computed in float32 and rounded (as ATen does), `out=` and in-place forms included,
and autograd is untouched (only the CPU kernels change). A contiguous copy of the input is what
NumPy sees, so a value's bytes never depend on the tensor's layout.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

# aten op: the NumPy ufunc (or "special.<name>" from SciPy)
OPS = {
    "exp": np.exp, "log": np.log, "log2": np.log2, "log10": np.log10, "sqrt": np.sqrt,
    "tanh": np.tanh, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin,
    "acos": np.arccos, "atan": np.arctan, "erf": "special.erf", "erfc": "special.erfc",
    "erfinv": "special.erfinv",
}
COMPUTED = (torch.float32, torch.float64, torch.complex64, torch.complex128)  # NumPy's types
HALVES = (torch.float16, torch.bfloat16)  # computed in float32 and rounded, as ATen does

_library: torch.library.Library | None = None


def route() -> None:
    """Install the kernels (once per process); see the module's docstring."""
    global _library
    if _library is not None:
        return
    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Overriding a previously registered kernel")
        for op, ufunc in OPS.items():
            functional, inplace, into = kernels(op, ufunc)
            library.impl(op, functional, "CPU")
            library.impl(f"{op}_", inplace, "CPU")
            library.impl(f"{op}.out", into, "CPU")
    _library = library


def routed() -> bool:
    return _library is not None


def kernels(op: str, ufunc):
    """The functional, in-place and out= kernels of `op`, computed by `ufunc`."""

    def functional(tensor: torch.Tensor) -> torch.Tensor:
        return apply(op, ufunc, tensor, result_type(tensor))

    def inplace(tensor: torch.Tensor) -> torch.Tensor:
        if result_type(tensor) != tensor.dtype:
            raise RuntimeError(f"{op}_: result type {result_type(tensor)} can't be cast to the "
                               f"desired output type {tensor.dtype}")
        return tensor.copy_(functional(tensor))

    def into(tensor: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
        result = functional(tensor)
        if out.shape != result.shape:
            out.resize_(result.shape)
        return out.copy_(result)

    return functional, inplace, into


def result_type(tensor: torch.Tensor) -> torch.dtype:
    if tensor.is_floating_point() or tensor.is_complex():
        return tensor.dtype
    return torch.get_default_dtype()  # integers and bools, as ATen's unary float ops


def apply(op: str, ufunc, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ufunc(tensor) as a new contiguous tensor of `dtype`."""
    compute = torch.float32 if dtype in HALVES else dtype
    if compute not in COMPUTED:
        raise RuntimeError(f"{op}: not implemented for {dtype} on the CPU with portable numerics")
    source = tensor.detach().resolve_conj().resolve_neg().to(compute).contiguous()
    out = torch.empty(source.shape, dtype=compute)
    if isinstance(ufunc, str):
        from scipy import special

        ufunc = getattr(special, ufunc.removeprefix("special."))
    if source.numel():
        ufunc(source.numpy(), out=out.numpy())
    return out if compute == dtype else out.to(dtype)
