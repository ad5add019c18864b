"""The shape the code keeps: short functions, small modules, and MLflow through its public API
only (a private name can change in any MLflow release)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

CODE = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "pipeline").glob("*.py")])
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 300


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", CODE, ids=relative)
def test_functions_and_modules_stay_short(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{relative(path)}: split the module"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{relative(path)}:{node.lineno} {node.name}: {lines}"


def private_mlflow_uses(tree: ast.AST) -> list[str]:
    """`mlflow._x`, `from mlflow.a._b import c`, `mlflow.a._c(...)`, `from mlflow import _x`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            parts = node.module.split(".") + [alias.name for alias in node.names]
            found += [node.module] if any(part.startswith("_") for part in parts) else []
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "mlflow"
                      and any(part.startswith("_") for part in alias.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in {"mlflow", "fluent"}:
                found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("path", [*CODE, *sorted((ROOT / "tests").glob("*.py"))], ids=relative)
def test_mlflow_is_used_through_its_public_api(path):
    assert private_mlflow_uses(ast.parse(path.read_text())) == [], relative(path)


def test_the_private_api_check_can_fail():
    code = ("from mlflow.projects._project_spec import load_project\n"
            "from mlflow.tracking import fluent\nfluent._active_run_stack.get()\n")
    assert private_mlflow_uses(ast.parse(code)) == ["mlflow.projects._project_spec",
                                                    "fluent._active_run_stack"]
