"""`dvc.yaml`, written from the project declarations (`src/dlprojects/*/project.yaml`).

    python -m dlprojects.stages            # write dvc.yaml
    python -m dlprojects.stages --check    # exit 1, naming the fix, when dvc.yaml is not current

Each project's stages are its declaration's, with the code they run added to their deps: the
package's `__init__.py` (it pins the numerics), `numerics/`, the shared `core/` and the project's
own folder, as folders: so editing one project's code reruns that project's stages and the report,
nothing else. Around them: one download stage per data set any project reads, the report (every
declared model's folder and metrics), the plots template.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from dlprojects.core.errors import UserError, run_main
from dlprojects.core.files import write_atomic
from dlprojects.core.projects import DECLARATION, Project, declared

PACKAGE = "src/dlprojects"
SHARED_CODE = [f"{PACKAGE}/__init__.py", f"{PACKAGE}/numerics", f"{PACKAGE}/core"]
HEADER = ("# Written by `python -m dlprojects.stages` from the project declarations\n"
          "# (src/dlprojects/*/project.yaml): edit those and run it again, not this file.\n")


OUTPUTS = ("outs", "metrics", "plots")


def _kept(entries: list[Any]) -> list[dict[str, Any]]:
    """Stage outputs marked `persist: true`: DVC deletes the others before the stage's command
    runs, so a bad param (refused by the command in one line) would cost the good outputs of the
    last run. Each command writes its files whole or not at all (`core.files`), so a failed run
    leaves them as `dvc.lock` records them."""
    kept = []
    for entry in entries:
        path, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        kept.append({path: {**(options or {}), "persist": True}})
    return kept


def _with_code(stage: dict[str, Any], code: list[str]) -> dict[str, Any]:
    """A declared stage (or a foreach stage's body) with the code it runs among its deps and its
    outputs kept until it replaces them."""
    if "foreach" in stage:
        return {"foreach": stage["foreach"], "do": _with_code(stage["do"], code)}
    ordered = {"cmd": stage["cmd"], "deps": [*stage.get("deps", []), *code]}
    return ordered | {key: _kept(value) if key in OUTPUTS else value
                      for key, value in stage.items() if key not in ("cmd", "deps")}


def _download(projects: tuple[Project, ...]) -> dict[str, Any]:
    sources = sorted({source for project in projects for source in project.data})
    return {"foreach": sources, "do": {
        "cmd": "python pipeline/download.py ${item} data/raw/${item}",
        "deps": ["pipeline/download.py", *SHARED_CODE],
        "params": ["download.${item}"],
        # persist: a failed download leaves the folder as it was (DVC would delete it first)
        "outs": [{"data/raw/${item}": {"persist": True}}]}}


def _report(projects: tuple[Project, ...]) -> dict[str, Any]:
    models = [model for project in projects for model in project.models]
    metrics = list(dict.fromkeys(model.metrics for model in models))
    return {"cmd": "python pipeline/report.py",
            "deps": ["pipeline/report.py", f"{PACKAGE}/report.py", *SHARED_CODE,
                     *(f"{PACKAGE}/{project.name}/{DECLARATION}" for project in projects),
                     *metrics, "reports/seeds.md", *(model.folder for model in models)],
            "outs": ["reports/index.html", {"reports/README.md": {"cache": False}},
                     {"reports/lineage.json": {"cache": False}}]}


def pipeline(projects: tuple[Project, ...]) -> dict[str, Any]:
    """The contents of dvc.yaml."""
    stages: dict[str, Any] = {"download": _download(projects)}
    for project in projects:
        code = [*SHARED_CODE, f"{PACKAGE}/{project.name}"]
        for name, stage in project.stages.items():
            if name in stages:
                raise UserError(f"stage {name} of project {project.name} is declared twice; "
                                f"name it after its project")
            stages[name] = _with_code(stage, code)
    stages["report"] = _report(projects)
    stages["plots_template"] = {  # what `dvc plots show` renders with: Vega inlined, offline
        "cmd": "python pipeline/plots_template.py reports/plots_template.html",
        "deps": ["pipeline/plots_template.py", f"{PACKAGE}/plots_template.py", *SHARED_CODE],
        "outs": ["reports/plots_template.html"]}
    plots = [plot for project in projects for plot in project.plots]
    return {"plots": plots, "stages": stages}


def render(projects: tuple[Project, ...]) -> str:
    body = yaml.safe_dump(pipeline(projects), sort_keys=False, width=100,
                          default_flow_style=None)
    return HEADER + body.replace("\nstages:", "\n\nstages:")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say whether dvc.yaml is current")
    parser.add_argument("--output", type=Path, default=Path("dvc.yaml"))
    args = parser.parse_args()
    text = render(declared())
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    if args.check:
        if current != text:
            raise UserError(f"{args.output} does not match the project declarations; run "
                            f"`python -m dlprojects.stages`")
        return
    if current != text:
        write_atomic(args.output, text)
    print(f"{args.output}: {len(text.splitlines())} lines, {len(declared())} projects",
          file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
