"""The report stage: `reports/index.html`, one self-contained page (figures inlined, no external
scripts, styles or fonts) with the results of the four projects against the published figures,
every figure, and for each result the first MLflow run that produced its model, with that run's git
commit (identical reruns add runs but leave the page as it was); and `reports/README.md`, the same for
reading on a forge (figures linked, not inlined).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlprojects import tracking
from dlprojects.errors import UserError


@dataclass(frozen=True)
class Result:
    """One row of the results table: where its figure, run and plots come from."""

    project: str  # the MLflow experiment
    model: str
    metrics: str  # metrics JSON under reports/
    key: tuple[str, ...]  # path to the test accuracy inside it
    model_dir: str  # the train stage's out: its digest finds the run (tracking.runs_of_model)
    published: dict[str, str] = field(default_factory=dict)  # dataset -> published figure


RESULTS = (
    Result("backprop", "NumPy MLP", "backprop/mlp/metrics.json", ("test_accuracy",),
           "models/backprop/mlp",
           {"mnist": "98.04% (Nielsen, NumPy MLP)"}),
    Result("backprop", "NumPy CNN", "backprop/cnn/metrics.json", ("test_accuracy",),
           "models/backprop/cnn"),
    Result("fashion", "dense 256-128-64, batch norm + dropout", "fashion/metrics.json",
           ("improved", "test_accuracy"), "models/fashion/improved",
           {"fashion_mnist": "90.0% (Zalando benchmark, MLP 256-128-64)"}),
    Result("fashion", "dense 256-128-64, baseline", "fashion/metrics.json",
           ("baseline", "test_accuracy"), "models/fashion/baseline"),
    Result("vit", "Vision Transformer", "vit/metrics.json", ("test_accuracy",),
           "models/vit",
           {"fashion_mnist": "92.3% (small ViT from scratch)",
            "mnist": "99.5% (small ViT from scratch)", "cifar10": "91.0% (ViT, 6.3M params)"}),
    Result("sentiment", "frozen BERT + bi-GRU", "sentiment/metrics.json", ("test_accuracy",),
           "models/sentiment",
           {"imdb": "91.58% (frozen bert-base + bi-GRU, full set)"}),
)
DATASETS = {"backprop": "mnist", "fashion": "fashion_mnist", "sentiment": "imdb"}
FIGURE_FOLDERS = {"backprop": ["backprop/mlp", "backprop/cnn"], "fashion": ["fashion"],
                  "vit": ["vit"], "sentiment": ["sentiment"]}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path} not found; run `dvc repro` so that every evaluate stage has run")
    return json.loads(path.read_text())


def check_inputs(root: Path) -> None:
    """Fail, naming the fix, when an evaluate stage's results are missing (before MLflow opens)."""
    for result in RESULTS:
        _read_json(root / "reports" / result.metrics)
        if not (root / result.model_dir).is_dir():
            raise UserError(f"{result.model_dir} not found; run `dvc repro` so that every train "
                            f"stage has run")


def run_info(client, project: str, model_dir: Path) -> dict[str, str]:
    """Run id, git commit and dirty flag of the first run that wrote the model in `model_dir`
    from committed code (else the first run at all): reruns that make the same bytes add runs
    but leave the report as it was."""
    runs = sorted(tracking.runs_of_model(client, project, model_dir, newest_first=False),
                  key=lambda run: run.data.tags.get("git.dirty") != "false")  # stable: by time
    if not runs:
        return {"run_id": "not in this tracking store", "commit": "unknown", "dirty": "unknown",
                "stage": ""}
    tags = runs[0].data.tags
    return {"run_id": runs[0].info.run_id, "commit": tags.get("git.commit", "unknown"),
            "dirty": tags.get("git.dirty", "unknown"), "stage": tags.get("dvc.stage", "")}


def collect(root: Path, client) -> list[dict[str, Any]]:
    """One dict per row of the results table."""
    rows = []
    for result in RESULTS:
        metrics = _read_json(root / "reports" / result.metrics)
        value: Any = metrics
        for key in result.key:
            value = value[key]
        dataset = metrics.get("dataset") or DATASETS[result.project]
        rows.append({"project": result.project, "model": result.model, "dataset": dataset,
                     "test_accuracy": float(value),
                     "published": result.published.get(dataset, ""),
                     **run_info(client, result.project, root / result.model_dir)})
    return rows


def figures(reports: Path) -> dict[str, list[Path]]:
    """The PNGs of each project, in a stable order."""
    return {project: sorted(path for folder in folders
                            for path in (reports / folder).glob("*.png"))
            for project, folders in FIGURE_FOLDERS.items()}


def _table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[row["project"], row["model"], row["dataset"], f"{100 * row['test_accuracy']:.2f}%",
             row["published"] or "-", row["run_id"],
             row["commit"][:12] + (" (dirty)" if row["dirty"] == "true" else "")]
            for row in rows]


HEADER = ["project", "model", "data", "test accuracy", "published", "MLflow run", "git commit"]
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f4f4f4}td:nth-child(4){text-align:right;font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin:4px 0}code{font-size:90%}"""


def render_html(rows: list[dict[str, Any]], plots: dict[str, list[Path]], reports: Path) -> str:
    escape = html.escape
    table = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>"
                    for cells in _table_rows(rows))
    sections = []
    for project, paths in plots.items():
        images = "".join(
            f'<figure><img alt="{escape(str(path.relative_to(reports)))}" src="data:image/png;'
            f'base64,{base64.b64encode(path.read_bytes()).decode()}"><figcaption><code>'
            f"{escape(str(path.relative_to(reports)))}</code></figcaption></figure>"
            for path in paths)
        sections.append(f'<section id="{escape(project)}"><h2>{escape(project)}</h2>'
                        f"{images}</section>")
    head = "".join(f"<th>{escape(name)}</th>" for name in HEADER)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>dlprojects report</title><style>{STYLE}</style></head><body>"
            "<h1>dlprojects: results</h1><p>Test accuracy of each project's default run; "
            "restore any of them from its commit with <code>git checkout &lt;commit&gt; &amp;&amp; "
            "dvc pull</code>.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{table}</tbody></table>"
            + "".join(sections) + "</body></html>\n")


def render_markdown(rows: list[dict[str, Any]], plots: dict[str, list[Path]],
                    reports: Path) -> str:
    lines = ["# dlprojects: results", "",
             "Test accuracy of each project's default run (`dvc repro report` writes this file "
             "and `index.html`).", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _table_rows(rows)]
    for project, paths in plots.items():
        lines += ["", f"## {project}", ""]
        lines += [f"![{path.stem}]({path.relative_to(reports).as_posix()})" for path in paths]
    return "\n".join(lines) + "\n"


def write_report(root: Path, client) -> tuple[Path, Path]:
    """Write reports/index.html and reports/README.md (each atomically); return their paths."""
    reports = root / "reports"
    rows = collect(root, client)
    plots = figures(reports)
    written = []
    for name, text in (("index.html", render_html(rows, plots, reports)),
                       ("README.md", render_markdown(rows, plots, reports))):
        target = reports / name
        scratch = target.with_suffix(target.suffix + ".partial")
        scratch.write_text(text, encoding="utf-8")
        scratch.replace(target)
        written.append(target)
    return written[0], written[1]
