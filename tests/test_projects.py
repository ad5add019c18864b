"""One project, one place: each project declares itself in its folder's project.yaml, and
nothing else names it. dvc.yaml is generated from the declarations; no project imports another;
a model folder names its builder, and one loader rebuilds any project's model from it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tool_env
from dlprojects.core import models, projects
from dlprojects.core.errors import UserError

PACKAGE = ROOT / "src/dlprojects"
DECLARED = projects.declared()


def test_every_project_folder_declares_the_four_projects():
    assert [project.name for project in DECLARED] == ["backprop", "fashion", "sentiment", "vit"]
    for project in DECLARED:
        assert project.models and project.seed_params and project.stages, project.name
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        assert all(section in params for section in project.params), project.name
        for model in project.models:  # every declared model has a stage that writes it
            outs = yaml.safe_dump(project.stages)
            assert model.folder.split("/")[0] + "/" in outs, model.name


def test_dvc_yaml_is_the_one_the_declarations_give():
    result = subprocess.run([sys.executable, "-m", "dlprojects.stages", "--check"], cwd=ROOT,
                            env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len((ROOT / "dvc.yaml").read_text().splitlines()) < 200


def test_a_stale_dvc_yaml_is_named_with_the_fix(tmp_path):
    stale = tmp_path / "dvc.yaml"
    stale.write_text("stages: {}\n")
    result = subprocess.run([sys.executable, "-m", "dlprojects.stages", "--check", "--output",
                             str(stale)], cwd=ROOT, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {stale} does not match the project declarations; "
                                      f"run `python -m dlprojects.stages`")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("project", [p.name for p in DECLARED])
def test_no_project_imports_another(project):
    others = {p.name for p in DECLARED} - {project}
    for path in (PACKAGE / project).rglob("*.py"):
        bad = {name for name in imported_modules(path)
               if name.split(".")[:2] in [["dlprojects", other] for other in others]}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def shared_files() -> list[Path]:
    """Everything outside the project folders that could name a project: the shared code, the
    pipeline scripts, the Makefile, MLproject, CI."""
    folders = {PACKAGE / p.name for p in DECLARED}
    code = [path for path in PACKAGE.rglob("*") if path.is_file() and path.suffix in (".py",)
            and not any(path.is_relative_to(folder) for folder in folders)]
    return [*code, *ROOT.glob("pipeline/*.py"), ROOT / "Makefile", ROOT / "MLproject",
            *ROOT.glob(".ci/*")]


def naming(name: str) -> re.Pattern:
    """How code names a project: its package, its model or report folders, its registered
    name or experiment as a string."""
    return re.compile(rf"(dlprojects[./]{name}\b|models[:/]+{name}\b|reports/{name}\b"
                      rf"|[\"']{name}[\"'-])")


def test_no_project_is_named_outside_its_declaration():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in shared_files() if path.is_file()
             for number, line in enumerate(path.read_text().splitlines(), 1)
             for project in DECLARED if naming(project.name).search(line)]
    assert found == []


def test_the_name_check_can_fail():
    assert naming("vit").search('publish("vit", folder)')
    assert naming("vit").search("from dlprojects.vit.model import ViT")
    assert naming("vit").search("Result('vit', 'models/vit')")
    assert not naming("vit").search("a Vision Transformer (the ViT) for each project")


def test_a_model_folder_names_its_builder_and_loads_without_other_projects(tmp_path):
    """Save a FashionMNIST network, load it by its model.json alone in a fresh interpreter: no
    other project's code is imported."""
    code = f"""
import sys, torch
import dlprojects
from dlprojects.fashion.model import DenseClassifier, classifier
from dlprojects.core import models
from dlprojects.core.weights import save_model
torch.manual_seed(0)
net = DenseClassifier(hidden=[8], batch_norm=True, dropout=0.0)
params = {{"variant": "v", "variants": {{"v": {{"hidden": [8], "batch_norm": True, "dropout": 0.0}}}}}}
save_model(net, r"{tmp_path}/model.safetensors", params)
models.describe(r"{tmp_path}", classifier, "images")
for name in [m for m in sys.modules if m.startswith("dlprojects.fashion")]:
    del sys.modules[name]
network = models.load(r"{tmp_path}")
print(network.shape, len(network.classes))
print(sorted({{m.split(".")[1] for m in sys.modules if m.startswith("dlprojects.")}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=tool_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shape, loaded = result.stdout.strip().splitlines()[-2:]
    assert shape == "(28, 28) 10"
    assert set(eval(loaded)) <= {"core", "numerics", "fashion"}
    assert (tmp_path / "model.json").read_text().count("dlprojects.fashion.model:classifier") == 1


def test_a_folder_without_model_json_says_which_folders_are_models(tmp_path):
    (tmp_path / "improved").mkdir()
    (tmp_path / "improved/model.json").write_text('{"builder": "x", "input": "images"}')
    with pytest.raises(UserError, match=r"is not a model folder; name one of the model "
                                        r"folders in it: improved$"):
        models.manifest(tmp_path)


def test_a_builder_outside_the_package_is_refused(tmp_path):
    (tmp_path / "model.json").write_text('{"builder": "os:system", "input": "images"}')
    with pytest.raises(UserError, match="is not a dlprojects module:callable"):
        models.load(tmp_path)


def test_a_broken_declaration_is_one_line(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo/project.yaml").write_text("title: x\nparams: [demo]\n")
    with pytest.raises(UserError, match=r"project.yaml: 'data' is missing|'dataset' is missing|"
                                        r"'models' is missing"):
        projects.read(tmp_path / "demo/project.yaml")
