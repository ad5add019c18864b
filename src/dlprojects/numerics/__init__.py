"""Portable CPU numerics: the same bytes from every stage on any x86-64 CPU with AVX2, Intel or AMD.

The math libraries under NumPy and torch pick their kernels by the CPU they find (its vendor,
its widest instructions, its cache sizes), and kernels that sum in another order differ in the
last bits; after enough training steps, so do the chosen epoch and the test figures. Portable
numerics fix every choice that decides bytes, in two steps:

1. Before NumPy and torch load (`import dlprojects`, first in every stage script), settings that
   each library reads once:

| setting                        | library           | what it fixes                                  |
|--------------------------------|-------------------|------------------------------------------------|
| MKL_CBWR=COMPATIBLE            | MKL (torch's BLAS) | one code path on Intel and AMD (MKL honours its AVX2 branch on Intel CPUs only) |
| ATEN_CPU_CAPABILITY=avx2       | torch's own kernels | elementwise ops, norms, softmax, reductions |
| ONEDNN_MAX_CPU_ISA=AVX2        | oneDNN            | convolutions (jit:avx2, blocked by shape)      |
| OPENBLAS_CORETYPE=Haswell      | OpenBLAS (NumPy's BLAS) | GEMM kernel and its fixed blocking        |
| NPY_ENABLE_CPU_FEATURES=X86_V3 | NumPy's own loops | AVX2 variants of exp, log, max, ...            |
| GOMP_SPINCOUNT=1000            | torch's OpenMP    | no bytes: how long an idle worker spins (below) |

2. When torch loads, its float matrix products (`mm`, `addmm`, `bmm`, `baddbmm`) leave MKL,
   whose portable branch is 2.5 to 3.5 times slower, for OpenBLAS's Haswell kernel, whose
   blocking is fixed per kernel, not measured from the CPU (`dlprojects.numerics.gemm`); NNPACK
   is off. scaled_dot_product_attention keeps PyTorch's fused CPU kernel (it picks its kernel
   without the dispatcher), whose products run in MKL's COMPATIBLE branch: the probe checks it.
   Its vector math (exp, log, sqrt, tanh, erf, ...) leaves MKL's VML, which picks its code by the
   CPU's vendor whatever MKL_CBWR says, for NumPy's AVX2 loops (`dlprojects.numerics.vector_math`).

The routed products run their second piece on a thread of their own, beside torch's OpenMP
workers, which by default spin 300,000 rounds after each parallel op before they sleep: on two
cores the spinning worker took the core that piece needed (a ViT training step at 2 threads took
87 ms with the default, 65 with 1,000 rounds, on an AMD EPYC). Threads never decide bytes here.

`python -m dlprojects.numerics.probe` checks the promise on the CPU at hand against committed
hashes (`reference.json`); `make test` runs it. Thread counts are each stage's `threads` param.
`DLPROJECTS_NUMERICS=native` leaves every library to its own choice: faster, and the bytes then
depend on the CPU. A CPU without AVX2 (or not x86-64) runs natively: nothing to pin it to.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import platform
import sys

MODE_VARIABLE = "DLPROJECTS_NUMERICS"

# Every x86-64 CPU of the last decade runs AVX2 (Intel since 2013, AMD since 2015).
PORTABLE = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_ENABLE_CPU_FEATURES": "X86_V3",  # NumPy refuses to import if the CPU lacks what it names
    "GOMP_SPINCOUNT": "1000",  # speed only: idle OpenMP workers leave the gemm thread its core
}
LIBRARIES = ("numpy", "torch")  # each reads its settings when it loads


def mode() -> str:
    """"portable" (the default), "native" (DLPROJECTS_NUMERICS=native), or "unsupported" (no AVX2:
    the CPU runs natively, and its bytes are its own)."""
    if os.environ.get(MODE_VARIABLE, "portable") == "native":
        return "native"
    return "portable" if "avx2" in _cpu_flags() else "unsupported"


def portable() -> bool:
    return mode() == "portable"


def cpu() -> dict[str, str]:
    """This machine's CPU: vendor, model name and widest vector extension, from /proc/cpuinfo."""
    info = _cpuinfo()
    flags = info.get("flags", "").split()
    widest = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))
                   if flag in flags), "none")
    return {"vendor": info.get("vendor_id", platform.machine() or "unknown"),
            "model": info.get("model name", platform.processor() or "unknown"), "isa": widest}


def describe() -> dict[str, str]:
    """What produced this process's bytes, as MLflow tags."""
    machine = cpu()
    return {"numerics": mode(), "cpu.vendor": machine["vendor"], "cpu.model": machine["model"],
            "cpu.isa": machine["isa"]}


def summary() -> str:
    """One sentence for the report: which bytes these results are."""
    if portable():
        return ("Numerics: portable, the same bytes on every x86-64 CPU with AVX2, Intel or AMD "
                "(`python -m dlprojects.numerics.probe` checks a CPU against the committed hashes).")
    machine = cpu()
    why = "DLPROJECTS_NUMERICS=native" if mode() == "native" else "a CPU without AVX2"
    return (f"Numerics: {mode()} ({why}) on {machine['vendor']} {machine['model']}: these results "
            f"are this CPU's own bytes, not the committed portable ones.")


def pin() -> list[str]:
    """Set the portable settings in this process's environment (inherited by its children), and
    route torch's matrix products and vector math when it loads (`gemm`, `vector_math`).

    Returns the libraries that were already loaded and so keep the kernels they chose."""
    if not portable():
        for name, value in PORTABLE.items():  # inherited from a portable parent process
            if os.environ.get(name) == value:
                del os.environ[name]
        return []
    os.environ.update(PORTABLE)
    loaded = [name for name in LIBRARIES if name in sys.modules]
    if "torch" in sys.modules:
        _route()
    elif not any(isinstance(finder, _RouteWhenTorchLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RouteWhenTorchLoads())
    return loaded


class _RouteWhenTorchLoads(importlib.abc.MetaPathFinder):
    """Routes torch's kernels right after `import torch` finishes, wherever torch is imported."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _route()

        spec.loader.exec_module = exec_module
        return spec


def _route() -> None:
    """torch's matrix products to OpenBLAS (`gemm`), its vector math to NumPy (`vector_math`)."""
    from dlprojects.numerics import gemm, vector_math

    gemm.route()
    vector_math.route()


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        with open("/proc/cpuinfo") as lines:
            fields = {}
            for line in lines:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
            return fields
    except OSError:
        return {}


def _cpu_flags() -> list[str]:
    return _cpuinfo().get("flags", "").split()  # none off Linux x86-64: nothing to pin
