"""Pinned CPU numerics: every stage loads NumPy and torch on the pinned kernels, and a stage gives
the same bytes whether MKL may use this CPU's best instructions or only AVX2 (which is what
another CPU looks like to it)."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, tool_env
from dlprojects import numerics

SCRIPTS = sorted((ROOT / "pipeline").glob("*.py"))
PROBE = """
import dlprojects, json, os, numpy, torch
from numpy._core._multiarray_umath import __cpu_features__
from threadpoolctl import threadpool_info
print(json.dumps({
    "aten": torch.backends.cpu.get_cpu_capability(),
    "openblas": [i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"],
    "numpy_avx512": bool(__cpu_features__.get("X86_V4")),
    "env": {name: os.environ.get(name) for name in dlprojects.numerics.PINNED},
}))
"""


def probe(**env: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], env={**tool_env(), **env},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_stage_script_imports_dlprojects_before_anything_else(script):
    imports = [node for node in ast.parse(script.read_text()).body
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    first = imports[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "dlprojects", (
        f"{script.name}: the first import must be `import dlprojects` (it pins the numerics "
        f"before NumPy and torch load)")


def test_the_test_process_pinned_before_numpy_and_torch_loaded():
    # stages run in this process in many tests; a pytest plugin that imports NumPy first would
    # leave it on its own kernels and make every stage print a warning
    import dlprojects

    assert dlprojects.LOADED_BEFORE_PIN == []


@pytest.mark.skipif(not numerics.pinned(), reason="this CPU has no AVX2 to pin to")
def test_a_stage_process_runs_the_pinned_kernels():
    found = probe()
    assert found["aten"] == "AVX2"
    assert found["openblas"] == ["Haswell"]
    assert found["numpy_avx512"] is False
    assert found["env"] == numerics.PINNED


@pytest.mark.skipif(not numerics.pinned(), reason="this CPU has no AVX2 to pin to")
def test_pins_override_what_the_machine_sets_and_native_opts_out():
    # Some machines set OPENBLAS_CORETYPE themselves: the project's own value wins.
    assert probe(OPENBLAS_CORETYPE="Prescott")["openblas"] == ["Haswell"]
    native = probe(DLPROJECTS_NUMERICS="native", ATEN_CPU_CAPABILITY="default")
    assert native["aten"] == "DEFAULT"  # left alone: whatever the environment says


def _digests(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _train_fashion(project: Path, env: dict[str, str]) -> dict[str, str]:
    """train_fashion@improved on smoke params under `env`; digests of what it wrote."""
    for folder in ("models", "reports", "checkpoints"):
        subprocess.run(["rm", "-rf", str(project / folder)], check=True)
    result = subprocess.run([sys.executable, "pipeline/train_fashion.py", "improved",
                             "data/raw/fashion_mnist", "models/fashion", "reports/fashion.csv"],
                            cwd=project, env={**tool_env(), **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return {**_digests(project / "models"), **_digests(project / "reports")}


