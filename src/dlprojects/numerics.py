"""Pinned CPU numerics: the same bytes from every stage on any x86-64 CPU with AVX2.

The math libraries under NumPy and torch pick their kernels by the CPU they find (AVX-512 here,
AVX2 there), and kernels of different widths sum in different orders: the last bits differ, and
after enough training steps so does the chosen epoch. Each library reads a setting that caps or
fixes its choice, once, when it loads, so these are set by `import dlprojects`, which every stage
script does before it imports NumPy or torch:

| setting                   | library            | what it fixes                                   |
|---------------------------|--------------------|-------------------------------------------------|
| MKL_CBWR=AVX2,STRICT      | MKL (torch's BLAS) | GEMM code path, blocking and reduction order    |
| ATEN_CPU_CAPABILITY=avx2  | torch ATen kernels | elementwise ops, norms, softmax, reductions      |
| ONEDNN_MAX_CPU_ISA=AVX2   | oneDNN             | convolutions                                    |
| OPENBLAS_CORETYPE=Haswell | OpenBLAS (NumPy)   | GEMM kernel (AVX2)                              |
| NPY_ENABLE_CPU_FEATURES=X86_V3 | NumPy ufuncs  | AVX2 variants of exp, log, max, ...             |

Thread counts are params of each stage (`threads`), since they change sums too.
`DLPROJECTS_NUMERICS=native` leaves every library to its own choice: faster on some CPUs, and
the bytes then depend on the CPU.
"""

from __future__ import annotations

import os
import sys

MODE_VARIABLE = "DLPROJECTS_NUMERICS"

# Every x86-64 CPU of the last decade runs AVX2 (Intel since 2013, AMD since 2015).
PINNED = {
    "MKL_CBWR": "AVX2,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_ENABLE_CPU_FEATURES": "X86_V3",  # NumPy refuses to import if the CPU lacks what it names
}
LIBRARIES = ("numpy", "torch")  # each reads its settings when it loads


def pinned() -> bool:
    """Pinned unless DLPROJECTS_NUMERICS=native, or the CPU has no AVX2 (nothing to pin it to)."""
    return os.environ.get(MODE_VARIABLE, "pinned") != "native" and _has_avx2()


def _has_avx2() -> bool:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        return False  # not Linux on x86-64: these libraries' x86 settings do not apply
    return "avx2" in flags.split()


def pin() -> list[str]:
    """Set the pinned numerics in this process's environment (inherited by its children).

    Returns the libraries that were already loaded and so keep the kernels they chose."""
    if not pinned():
        for name, value in PINNED.items():  # inherited from a pinned parent process
            if os.environ.get(name) == value:
                del os.environ[name]
        return []
    os.environ.update(PINNED)
    return [name for name in LIBRARIES if name in sys.modules]
