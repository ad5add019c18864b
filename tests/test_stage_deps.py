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
PIPELINE = ROOT / "pipeline"  # sys.path[0] of a pipeline script: `from download import ...`

# ------------------------------------------------------------------------------ import walker


def module_files(name: str) -> list[Path]:
    """The project files that `import name` executes: each package's __init__.py on the way down
    (a folder without one is a namespace package) and the module's own file. [] for third-party
    modules. A name past the last module (`dlprojects.core.evaluation.write_json`) adds nothing."""
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
    """The files a stage's command runs: a `pipeline/*.py` script, or a `python -m` module (and,
    for a package, its __main__)."""
    script = re.search(r"\bpipeline/\w+\.py\b", stage["cmd"])
    if script:
        return import_closure(ROOT / script.group())
    module = re.search(r"\bpython -m ([\w.]+)", stage["cmd"])
    assert module, f"no pipeline/*.py nor python -m in cmd: {stage['cmd']}"
    files = module_files(module.group(1))
    assert files, f"{module.group(1)} is not a dlprojects module"
    main = files[-1].parent / "__main__.py"
    return set().union(*(import_closure(path) for path in [*files, main] if path.is_file()))


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


def flagged_stages(project: Path) -> set[str]:
    """The stages that `dvc status` says have a modified dep."""
    status = json.loads(run(["dvc", "status", "--json"], project))
    return {stage for stage, changes in status.items() for change in changes
            if isinstance(change, dict) and "modified" in change.get("changed deps", {}).values()}


def declared_stages(project) -> set[str]:
    """A declared project's stages as DVC names them (a foreach stage as `name@item`)."""
    return {f"{name}@{item}" if "foreach" in stage else name
            for name, stage in project.stages.items() for item in stage.get("foreach", [None])}


@pytest.mark.slow
def test_editing_a_projects_code_flags_its_stages_alone(tmp_path):
    """Edit one file of a project: `dvc status` lists that project's stages and nothing of the
    others (the report, which reads every project's results, follows when they rerun). Edit the
    shared core: every stage that runs it."""
    from dlprojects.core.projects import declared

    project = copy_working_tree(tmp_path / "project")
    run(["dvc", "config", "--local", "core.no_scm", "true"], project)  # the copy is no git repo
    assert flagged_stages(project) == set()  # the committed dvc.lock records every dep
    for declared_project in declared():
        edited = project / "src/dlprojects" / declared_project.name / "__init__.py"
        original = edited.read_bytes()
        edited.write_bytes(original + b"# edited by test_stage_deps\n")
        assert flagged_stages(project) == declared_stages(declared_project), declared_project.name
        edited.write_bytes(original)
    core = project / "src/dlprojects/core/evaluation.py"
    core.write_bytes(core.read_bytes() + b"# edited by test_stage_deps\n")
    running_core = {name for name, stage in STAGES.items()
                    if "src/dlprojects/core" in stage.get("deps", [])}
    assert flagged_stages(project) == running_core
    assert {name for name, stage in STAGES.items()
            if "src/dlprojects/core/evaluation.py" in stage_closure(stage)} <= running_core
