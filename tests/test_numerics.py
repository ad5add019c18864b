"""Pinned CPU numerics: every stage loads NumPy and torch on the pinned kernels, and a stage gives
the same bytes whether MKL may use this CPU's best instructions or only AVX2 (which is what
another CPU looks like to it)."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_working_tree, merge, tool_env
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


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.skipif(not numerics.pinned(), reason="this CPU has no AVX2 to pin to")
def test_same_bytes_under_two_isa_ceilings(project, raw_data, tmp_path):
    """Fashion MLP (MKL GEMM, batch norm), ViT (oneDNN convolution, attention), frozen BERT and
    the bi-GRU: the same model, history and embedding bytes with MKL capped at AVX2 as the smoke
    pipeline (conftest) made on this CPU's best instructions. Unpinned, the two differ on an
    AVX-512 CPU (the control, on the fashion MLP)."""
    capped = tmp_path / "capped"
    shutil.copytree(project, capped, symlinks=True)
    result = subprocess.run(["dvc", "repro", "--force", "-s", "train_fashion@improved",
                             "train_vit", "embed_imdb", "train_sentiment"], cwd=capped,
                            env={**tool_env(), "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = ["models/fashion/improved", "models/vit", "models/sentiment", "data/embeddings",
               "reports/fashion/improved/history.csv", "reports/vit/history.csv",
               "reports/sentiment/history.csv"]
    best, cap = ({name: _digests(root / name) if (root / name).is_dir()
                  else hashlib.sha256((root / name).read_bytes()).hexdigest()
                  for name in outputs} for root in (project, capped))
    assert best == cap, [name for name in best if best[name] != cap[name]]

    if probe(DLPROJECTS_NUMERICS="native")["aten"] != "AVX512":
        return  # the control needs a CPU whose best is wider than AVX2
    project = copy_working_tree(tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    smoke = yaml.safe_load((ROOT / "tests/smoke_params.yaml").read_text())
    params["train_fashion"] = merge(params["train_fashion"], smoke["train_fashion"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / "data/raw").mkdir(parents=True)
    (project / "data/raw/fashion_mnist").symlink_to(raw_data / "fashion_mnist")
    native_best = _train_fashion(project, {"DLPROJECTS_NUMERICS": "native"})
    native_capped = _train_fashion(project, {"DLPROJECTS_NUMERICS": "native",
                                             "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                                             "ATEN_CPU_CAPABILITY": "avx2"})
    assert native_best != native_capped

