"""Each stage's `deps` in dvc.yaml cover every project file its script runs: the script, the
pipeline scripts it imports and the `dlprojects` modules it imports, transitively (lazy imports
inside functions too). A module missing from `deps` means `dvc repro` reports "up to date" after
that module changed, and the committed metrics go stale."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_working_tree, tool_env

SRC = ROOT / "src"
PIPELINE = ROOT / "pipeline"  # sys.path[0] of a stage script: `from train_backprop import ...`

# ------------------------------------------------------------------------------ import walker


def module_files(name: str) -> list[Path]:
    """The project files that `import name` executes: each package's __init__.py on the way down
    (a folder without one is a namespace package) and the module's own file. [] for third-party
    modules. A name past the last module (`dlprojects.evaluation.write_json`) adds nothing."""
    first, *rest = name.split(".")
    if first != "dlprojects":
        script = PIPELINE / f"{first}.py"
        return [script] if not rest and script.is_file() else []
    files, path = [], SRC
    for part in [first, *rest]:
        path = path / part
        if (path / "__init__.py").is_file():
            files.append(path / "__init__.py")
        elif path.with_suffix(".py").is_file():
            files.append(path.with_suffix(".py"))
            break
        elif not path.is_dir():
            break
    return files


def package_of(path: Path) -> str:
    """The dotted package a file under src/ belongs to (what `from . import x` is relative to)."""
    return ".".join(path.parent.relative_to(SRC).parts) if path.is_relative_to(SRC) else ""


def imported_names(path: Path) -> set[str]:
    """Every module name an `import` or `from ... import` anywhere in the file may load; for
    `from a import b`, both `a` and `a.b` (b may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from .layers import Layer`, `from .. import x`
                package = package_of(path).split(".")
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""])
                base = base.rstrip(".")
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_closure(script: Path) -> set[str]:
    """The script and every project file it imports, transitively, as paths relative to ROOT."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            for name in imported_names(path):
                todo.extend(module_files(name))
    return {path.relative_to(ROOT).as_posix() for path in seen}


# ------------------------------------------------------------------------------ dvc.yaml stages


def substitute(value, item):
    """`${item}` replaced in every string of a `foreach` stage's `do` body."""
    if isinstance(value, str):
        return value.replace("${item}", str(item))
    if isinstance(value, list):
        return [substitute(v, item) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, item) for k, v in value.items()}
    return value


def pipeline_stages() -> Iterator[tuple[str, dict]]:
    """(name, definition) of each stage, `foreach` stages expanded to `stage@item`."""
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:
            assert isinstance(stage["foreach"], list), f"{name}: only list foreach is handled"
            for item in stage["foreach"]:
                yield f"{name}@{item}", substitute(stage["do"], item)
        else:
            yield name, stage


STAGES = dict(pipeline_stages())


def stage_closure(stage: dict) -> set[str]:
    script = re.search(r"\bpipeline/\w+\.py\b", stage["cmd"])
    assert script, f"no pipeline/*.py in cmd: {stage['cmd']}"
    return import_closure(ROOT / script.group())


def covered(path: str, deps: list[str]) -> bool:
    """A dep covers the path itself or, for a folder, every file under it."""
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_cover_imported_project_files(name):
    stage = STAGES[name]
    missing = sorted(p for p in stage_closure(stage) if not covered(p, stage.get("deps", [])))
    assert not missing, f"stage {name}: deps in dvc.yaml miss imported project files {missing}"


# ------------------------------------------------------------------------------ real dvc status

def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, env=tool_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def stages_with_modified(project: Path, path: str) -> set[str]:
    """The stages that `dvc status` says have `path` as a modified dep."""
    status = json.loads(run(["dvc", "status", "--json"], project))
    return {stage for stage, changes in status.items() for change in changes
            if isinstance(change, dict) and change.get("changed deps", {}).get(path) == "modified"}


EDITED_MODULES = ["src/dlprojects/evaluation.py", "src/dlprojects/data/images.py"]


@pytest.mark.slow
@pytest.mark.parametrize("module", EDITED_MODULES)
def test_dvc_status_flags_exactly_the_stages_that_import_an_edited_module(tmp_path, module):
    project = copy_working_tree(tmp_path / "project")
    run(["dvc", "config", "--local", "core.no_scm", "true"], project)  # the copy is no git repo
    # The committed dvc.lock records every dep: nothing is modified before the edit
    assert stages_with_modified(project, module) == set()

    with (project / module).open("a") as file:
        file.write("# edited by test_stage_deps\n")
    flagged = stages_with_modified(project, module)

    importing = {name for name, stage in STAGES.items() if module in stage_closure(stage)}
    assert importing, f"no stage imports {module}: pick a module the pipeline uses"
    assert flagged == importing, (f"{module} edited: dvc status flags {sorted(flagged)}, "
                                  f"the stages importing it are {sorted(importing)}")
