"""Safe by default, checked over the source: nothing unpickled that the pipeline did not write,
no remote code, checkpoints loaded as weights only, the MLflow UI on 127.0.0.1."""

from __future__ import annotations

import ast
import re

from conftest import ROOT

SOURCES = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "pipeline").glob("*.py"),
                  *(ROOT / "benchmarks").glob("*.py")])


def calls(name: str):
    """(file, call) for every call of `<something>.<name>(...)` or `<name>(...)` in SOURCES."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                    node.func, "id", "")
                if called == name:
                    yield path.relative_to(ROOT), node


def keyword(call: ast.Call, name: str):
    found = [k.value for k in call.keywords if k.arg == name]
    return found[0].value if found and isinstance(found[0], ast.Constant) else None


def test_the_scan_sees_the_source():
    assert len(SOURCES) > 30 and list(calls("load_weights"))


def test_nothing_calls_torch_load():
    """torch.load unpickles (even `weights_only` is a restricted unpickler): weights are
    safetensors, checkpoints `.npz` read without pickle."""
    loads = [f"{path}:{call.lineno}" for path, call in calls("load")
             if isinstance(call.func, ast.Attribute)
             and getattr(call.func.value, "id", "") == "torch"]
    assert loads == []


def test_nothing_is_unpickled_but_through_the_restricted_cifar_unpickler():
    for name in ("loads", "load"):
        for path, call in calls(name):
            owner = call.func.value if isinstance(call.func, ast.Attribute) else None
            assert getattr(owner, "id", "") not in {"pickle", "cPickle", "joblib", "dill"}, \
                f"{path}:{call.lineno} unpickles"
    for path, call in calls("load"):
        assert keyword(call, "allow_pickle") is not True, f"{path}:{call.lineno}"
    cifar = (ROOT / "src/dlprojects/core/data/cifar.py").read_text()
    assert "class BatchUnpickler(pickle.Unpickler)" in cifar and "def find_class" in cifar


def test_no_remote_code_and_the_ui_binds_to_localhost():
    for path in SOURCES:
        assert not re.search(r"trust_remote_code\s*=\s*True", path.read_text()), path
    makefile = (ROOT / "Makefile").read_text()
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db --host $(or $(HOST),127.0.0.1)" in makefile
