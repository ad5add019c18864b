"""Portable CPU numerics: every stage loads NumPy and torch on the portable settings, torch's
matrix products go through OpenBLAS, and the probe gives the committed bytes on this CPU."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tool_env
from dlprojects import numerics
from dlprojects.numerics import gemm, probe as numerics_probe, vector_math

# What runs numerics of its own: the pipeline's scripts, every stage's module and each benchmark
# that loads NumPy or torch itself (the others time the commands they start)
def _loads_numerics(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    names = [alias.name for node in body if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module for node in body if isinstance(node, ast.ImportFrom) and node.module]
    return any(name.split(".")[0] in {"numpy", "torch"} for name in names)


STAGE_MODULES = {ROOT / "src" / (module.replace(".", "/") + ".py") for module in re.findall(
    r"^\s*cmd: python -m ([\w.]+)", (ROOT / "dvc.yaml").read_text(), re.M)}
SCRIPTS = sorted([*(ROOT / "pipeline").glob("*.py"), *STAGE_MODULES,
                  *filter(_loads_numerics, (ROOT / "benchmarks").glob("*.py"))])
PROBE = """
import dlprojects, json, os, numpy, torch
from numpy._core._multiarray_umath import __cpu_features__
from threadpoolctl import threadpool_info
from dlprojects.numerics import gemm, vector_math
print(json.dumps({
    "aten": torch.backends.cpu.get_cpu_capability(),
    "openblas": [i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"],
    "numpy_avx512": bool(__cpu_features__.get("X86_V4")),
    "env": {name: os.environ.get(name) for name in dlprojects.numerics.PORTABLE},
    "routed": gemm.routed() and vector_math.routed(),
}))
"""
portable_only = pytest.mark.skipif(not numerics.portable(), reason=numerics.summary())


def probe(**env: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], env={**tool_env(), **env},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_stage_script_imports_dlprojects_before_anything_else(script):
    imports = [node for node in ast.parse(script.read_text()).body
               if isinstance(node, (ast.Import, ast.ImportFrom)) and
               not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    first = imports[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "dlprojects", (
        f"{script.name}: the first import must be `import dlprojects` (it pins the numerics "
        f"before NumPy and torch load)")


def test_the_test_process_pinned_before_numpy_and_torch_loaded():
    # stages run in this process in many tests; a pytest plugin that imports NumPy first would
    # leave it on its own kernels and make every stage print a warning
    import dlprojects

    assert dlprojects.LOADED_BEFORE_PIN == []
    assert gemm.routed() == vector_math.routed() == numerics.portable()


@portable_only
def test_a_stage_process_runs_the_portable_kernels():
    found = probe()
    assert found["aten"] == "AVX2"
    assert found["openblas"] == ["Haswell"]
    assert found["numpy_avx512"] is False
    assert found["env"] == numerics.PORTABLE
    assert found["routed"] is True


@portable_only
def test_pins_override_what_the_machine_sets_and_native_opts_out():
    # Some machines set OPENBLAS_CORETYPE themselves: the project's own value wins.
    assert probe(OPENBLAS_CORETYPE="Prescott")["openblas"] == ["Haswell"]
    native = probe(DLPROJECTS_NUMERICS="native", ATEN_CPU_CAPABILITY="default")
    assert native["aten"] == "DEFAULT"  # left alone: whatever the environment says
    assert native["routed"] is False


@portable_only
def test_mkl_runs_its_compatible_branch():
    """MKL honours COMPATIBLE on Intel and AMD CPUs alike (its AVX2 branch on Intel CPUs only)."""
    code = "import dlprojects, torch; torch.mm(torch.ones(64, 64), torch.ones(64, 64), out=torch.empty(64, 64))"
    result = subprocess.run([sys.executable, "-c", code], env={**tool_env(), "MKL_VERBOSE": "1"},
                            capture_output=True, text=True, check=True)
    calls = [line for line in result.stdout.splitlines() if "SGEMM" in line]
    assert calls and all("CNR:COMPATIBLE" in line for line in calls), result.stdout[-1000:]


# ------------------------------------------------------------------------- the committed probe


@portable_only
def test_the_probe_gives_the_committed_bytes_on_this_cpu():
    result = subprocess.run([sys.executable, "-m", "dlprojects.numerics.probe"],
                            env=tool_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{len(numerics_probe.checks())} checks give the committed bytes" in result.stdout


@portable_only
def test_the_probe_names_the_op_that_differs_and_how_to_report_it():
    """Another MKL branch and another OpenBLAS kernel, as another CPU would run without the
    portable settings: the probe fails and names those ops and this CPU."""
    code = ("import dlprojects, os, sys; os.environ.update(MKL_CBWR='AUTO', "
            "OPENBLAS_CORETYPE='Prescott'); from dlprojects.numerics import probe; "
            "sys.exit(probe.main())")
    result = subprocess.run([sys.executable, "-c", code], env=tool_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1
    named = [line for line in result.stderr.splitlines() if line.startswith("numerics probe:")]
    assert any("NumPy matmul" in line for line in named), result.stderr
    assert any("torch matrix products" in line for line in named), result.stderr
    assert any("MKL matrix products" in line for line in named), result.stderr
    assert all(numerics.cpu()["vendor"] in line for line in named)
    assert "python -m dlprojects.numerics.probe --json" in result.stderr


def test_the_reference_names_the_cpus_it_was_recorded_on():
    reference = json.loads(numerics_probe.REFERENCE.read_text())
    assert reference["threads"] == numerics_probe.THREADS
    assert set(reference["hashes"]) == set(numerics_probe.checks())
    assert reference["cpus"] and all("(" in cpu for cpu in reference["cpus"])


# ------------------------------------------------------------------- the routed matrix products


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.skipif(not gemm.routed(), reason="matrix products are routed in portable mode only")
def test_routed_products_match_float64_and_give_the_same_bytes_at_any_thread_count(threads):
    g = torch.Generator().manual_seed(0)
    a, b, bias = (torch.randn(*shape, generator=g) for shape in ((1000, 700), (700, 130), (130,)))
    batch, other = torch.randn(5, 17, 16, generator=g), torch.randn(5, 16, 9, generator=g)
    tokens, grads = torch.randn(2176, 64, generator=g), torch.randn(2176, 192, generator=g)
    cases = {
        "mm": (lambda: a @ b, a.double() @ b.double()),
        "mm, transposed and sliced": (lambda: a.t()[:650] @ a[:, :140],
                                      a.double().t()[:650] @ a.double()[:, :140]),
        "addmm, alpha and beta": (lambda: torch.addmm(bias, a, b, beta=0.5, alpha=2.0),
                                  0.5 * bias.double() + 2 * (a.double() @ b.double())),
        "weight gradient, 64 rows": (lambda: tokens.t() @ grads, tokens.double().t() @ grads.double()),
        "bmm": (lambda: batch @ other, batch.double() @ other.double()),
        "baddbmm": (lambda: torch.baddbmm(other[:, :1], batch, other),
                    other.double()[:, :1] + batch.double() @ other.double()),
    }
    for name, (compute, exact) in cases.items():
        threads(1)
        one = compute()
        torch.testing.assert_close(one.double(), exact, rtol=1e-5, atol=1e-4, msg=name)
        for count in (2, 3, 4):  # cut into 2 to 4 pieces, on panel boundaries
            threads(count)
            assert torch.equal(compute(), one), f"{name}, {count} threads"


def test_products_are_cut_at_whole_panels_and_evenly():
    for rows in (13, 37, 64, 128, 500, 2176):
        for pieces in (2, 3, 4):
            bounds = gemm.row_bounds(rows, pieces)
            assert bounds[0] == 0 and bounds[-1] == rows and len(bounds) <= pieces + 1
            assert all(bound % gemm.PANEL == 0 for bound in bounds[1:-1])
            assert all(end - start >= gemm.PANEL for start, end in zip(bounds, bounds[1:]))
    assert gemm.row_bounds(64, 2) == [0, 36, 64]      # a ViT weight gradient: not 48 and 16
    assert gemm.row_bounds(13, 2) == [0, 13]          # never a lone row
    assert gemm.row_bounds(2176, 2) == [0, 1104, 2176]  # long: multiples of 4 panels


@pytest.mark.skipif(not gemm.routed(), reason="matrix products are routed in portable mode only")
def test_routed_products_keep_torch_semantics():
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(torch.nn.functional.linear, (x, w))
    integers = torch.arange(6).reshape(2, 3) @ torch.arange(6).reshape(3, 2)
    assert integers.tolist() == [[10, 13], [28, 40]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.nn.Linear(8, 3)(x.float()).dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        torch.ones(3, 4) @ torch.ones(5, 2)
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.mm(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.float64))


routed_vector_math = pytest.mark.skipif(not vector_math.routed(),
                                        reason="vector math is routed in portable mode only")


@routed_vector_math
def test_vector_math_gives_numpys_bytes_whatever_the_layout():
    """MKL's VML would give other bytes (and other ones on each vendor's CPU): each op's result is
    NumPy's (SciPy's for the error functions), for a row-major and a column-major input alike."""
    from scipy import special

    x = torch.rand(1000, 7, generator=torch.Generator().manual_seed(0)) * 4 + 0.01
    for op, ufunc in vector_math.OPS.items():
        values = x / 5 if op in ("asin", "acos", "erfinv") else x  # inside their domains
        compute = getattr(special, ufunc.removeprefix("special.")) if isinstance(ufunc, str) else ufunc
        expected = compute(values.numpy())
        result = getattr(torch, op)(values)
        assert result.numpy().tobytes() == expected.tobytes(), op
        assert torch.equal(getattr(torch, op)(values.t().contiguous().t()), result), op
        torch.testing.assert_close(getattr(torch, op)(values.double()), torch.from_numpy(
            compute(values.double().numpy())), rtol=0, atol=0, msg=op)


@routed_vector_math
def test_vector_math_keeps_torch_semantics():
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(1)) + 0.5
    assert torch.arange(4).sqrt().dtype == torch.get_default_dtype()
    assert torch.equal(torch.arange(4).sqrt(), torch.tensor([0.0, 1.0, 2 ** 0.5, 3 ** 0.5]))
    half = x.bfloat16()
    assert torch.equal(half.exp(), half.float().exp().bfloat16())  # in float32, then rounded
    out = torch.empty(0)
    assert torch.exp(x, out=out) is out and torch.equal(out, x.exp())
    column = x.clone()
    column[:, 2].log_()  # in place on a strided view: written through
    assert torch.equal(column[:, 2], x[:, 2].log()) and torch.equal(column[:, :2], x[:, :2])
    with pytest.raises(RuntimeError, match="can't be cast"):
        torch.arange(4).sqrt_()
    assert torch.tensor(4.0).sqrt().item() == 2.0 and torch.empty(0, 3).exp().shape == (0, 3)
    torch.testing.assert_close(torch.tensor([1j * torch.pi]).exp(), torch.tensor([-1 + 0j]))
    inputs = (x.double().requires_grad_(),)
    assert torch.autograd.gradcheck(lambda t: torch.erf(t.log().tanh() * t.sqrt().exp()), inputs)


# ----------------------------------------------------------- helpers shared with test_pipeline


def _digests(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _train_fashion(project: Path, env: dict[str, str]) -> dict[str, str]:
    """train_fashion@improved on smoke params under `env`; digests of what it wrote."""
    for folder in ("models", "reports", "checkpoints"):
        subprocess.run(["rm", "-rf", str(project / folder)], check=True)
    result = subprocess.run([sys.executable, "-m", "dlprojects.fashion.train", "improved",
                             "data/raw/fashion_mnist", "models/fashion", "reports/fashion.csv"],
                            cwd=project, env={**tool_env(), **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return {**_digests(project / "models"), **_digests(project / "reports")}
