"""The report stage: `reports/index.html`, one self-contained page (figures inlined, no external
scripts, styles or fonts) with the results of every declared project (`core.projects`) against
the published figures and every figure; and `reports/README.md`, the same for reading on a forge
(figures linked, not inlined).

Each result is named by its model's digest (`lineage.model_digest`, the `model.digest` tag of its
MLflow runs and registered versions) and the DVC hash dvc.lock records for the model folder, never
by an MLflow run id: run ids exist only in the store of the machine that made them, and the report
is committed. `python -m dlprojects.lineage model <folder or digest>` lists the runs of a digest in
whichever store MLFLOW_TRACKING_URI names, and the commit whose dvc.lock first recorded the model.
The report reads only files, so the same results give the same bytes on every machine (its line on
the numerics names a CPU only where the results are that CPU's own bytes).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from dlprojects import numerics
from dlprojects.core.errors import UserError
from dlprojects.core.files import write_atomic
from dlprojects.core.lineage import dvc_hashes, model_digest
from dlprojects.core.projects import declared, models


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path} not found; run `dvc repro` so that every evaluate stage has run")
    return json.loads(path.read_text())


def check_inputs(root: Path) -> None:
    """Fail, naming the fix, when an evaluate stage's results or a train stage's model is gone."""
    for model in models():
        _read_json(root / model.metrics)
        if not (root / model.folder).is_dir():
            raise UserError(f"{model.folder} not found; run `dvc repro` so that every train "
                            f"stage has run")


NOT_RECORDED = "not in dvc.lock"


def collect(root: Path) -> list[dict[str, Any]]:
    """One dict per row of the results table: each declared model, project by project."""
    recorded = dvc_hashes(root)
    rows = []
    for project in declared():
        for model in project.models:
            metrics = _read_json(root / model.metrics)
            value = model.value(metrics)
            if value is None:
                raise UserError(f"{model.metrics} has no {'.'.join(model.headline)}; run `dvc "
                                f"repro` so that its evaluate stage writes it")
            dataset = metrics.get("dataset") or project.dataset
            rows.append({"project": project.name, "model": model.label, "dataset": dataset,
                         "test_accuracy": value, "published": model.published.get(dataset, ""),
                         "folder": model.folder, "digest": model_digest(root / model.folder),
                         "dvc_hash": recorded.get(model.folder, NOT_RECORDED)})
    return rows


def figures(reports: Path) -> dict[str, list[Path]]:
    """The PNGs of each project, in a stable order."""
    return {project.name: sorted(path for folder in project.figures
                                 for path in (reports / folder).glob("*.png"))
            for project in declared()}


SHORT = 12  # hex digits of the digest in the results table; lineage accepts it as well


def _table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[row["project"], row["model"], row["dataset"], f"{100 * row['test_accuracy']:.2f}%",
             row["published"] or "-", row["digest"][:SHORT]] for row in rows]


def _lineage_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[row["folder"], row["digest"], row["dvc_hash"]] for row in rows]


HEADER = ["project", "model", "data", "test accuracy", "published", "model digest"]
LINEAGE_HEADER = ["model folder", "model digest (sha256)", "DVC hash (dvc.lock)"]
LINEAGE_COMMAND = "python -m dlprojects.lineage model <folder or digest>"
LINEAGE_TEXT = ("Each result is named by its model digest, a sha256 of the model folder's files "
                "(the <code>model.digest</code> tag of its MLflow runs and registered model "
                "versions). <code>{command}</code> lists its runs in your MLflow store "
                "(<code>MLFLOW_TRACKING_URI</code>, else <code>mlflow.db</code>) and the git "
                "commit whose <code>dvc.lock</code> first recorded the model; <code>git checkout "
                "&lt;commit&gt; &amp;&amp; dvc pull</code> restores it.")
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f4f4f4}td:nth-child(4){text-align:right;font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin:4px 0}code{font-size:90%}"""


def seed_table(reports: Path) -> list[str]:
    """The lines of reports/seeds.md (`make seeds`): the spread of each result over seeds."""
    path = reports / "seeds.md"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _markdown_html(lines: list[str]) -> str:
    """The seeds table's Markdown as HTML: its heading, paragraphs and one table."""
    escape, parts, table = html.escape, [], []
    for line in lines:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-:"):  # not the separator row
                tag = "th" if not table else "td"
                table.append("<tr>" + "".join(f"<{tag}>{escape(c)}</{tag}>" for c in cells)
                             + "</tr>")
            continue
        if table:
            parts.append(f"<table>{''.join(table)}</table>")
            table = []
        if line.startswith("# "):
            parts.append(f"<h2>{escape(line[2:])}</h2>")
        elif line.strip():
            parts.append(f"<p>{escape(line).replace('`', '')}</p>")
    if table:
        parts.append(f"<table>{''.join(table)}</table>")
    return "".join(parts)


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
    lineage = "".join("<tr>" + "".join(f"<td><code>{escape(cell)}</code></td>" for cell in cells)
                      + "</tr>" for cells in _lineage_rows(rows))
    lineage_head = "".join(f"<th>{escape(name)}</th>" for name in LINEAGE_HEADER)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>dlprojects report</title><style>{STYLE}</style></head><body>"
            "<h1>dlprojects: results</h1><p>Test accuracy of each project's default run.</p>"
            f"{_markdown_html([numerics.summary()])}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{table}</tbody></table>"
            f"{_markdown_html(seed_table(reports))}"
            f"<h2>Lineage</h2><p>{LINEAGE_TEXT.format(command=escape(LINEAGE_COMMAND))}</p>"
            f"<table><thead><tr>{lineage_head}</tr></thead><tbody>{lineage}</tbody></table>"
            + "".join(sections) + "</body></html>\n")


def render_markdown(rows: list[dict[str, Any]], plots: dict[str, list[Path]],
                    reports: Path) -> str:
    lines = ["# dlprojects: results", "",
             "Test accuracy of each project's default run (`dvc repro report` writes this file "
             "and `index.html`).", "", numerics.summary(), "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _table_rows(rows)]
    lines += [f"#{line}" if line.startswith("# ") else line
              for line in ["", *seed_table(reports)]]
    text = html.unescape(LINEAGE_TEXT.replace("<code>", "`").replace("</code>", "`"))
    lines += ["", "## Lineage", "", text.format(command=LINEAGE_COMMAND), "",
              "| " + " | ".join(LINEAGE_HEADER) + " |", "|" + "---|" * len(LINEAGE_HEADER)]
    lines += ["| " + " | ".join(f"`{cell}`" for cell in cells) + " |"
              for cells in _lineage_rows(rows)]
    for project, paths in plots.items():
        lines += ["", f"## {project}", ""]
        lines += [f"![{path.stem}]({path.relative_to(reports).as_posix()})" for path in paths]
    return "\n".join(lines) + "\n"


LINEAGE_FILE = "lineage.json"  # the lineage table as data: `python -m dlprojects.lineage` reads it


def lineage_json(rows: list[dict[str, Any]]) -> str:
    """reports/lineage.json: each declared model's folder, digest and DVC hash."""
    entries = [{"folder": row["folder"], "digest": row["digest"], "dvc_hash": row["dvc_hash"]}
               for row in rows]
    return json.dumps(entries, indent=2) + "\n"


def write_report(root: Path) -> tuple[Path, Path]:
    """Write reports/index.html, reports/README.md and reports/lineage.json (each atomically);
    return the first two."""
    reports = root / "reports"
    rows = collect(root)
    plots = figures(reports)
    page = write_atomic(reports / "index.html", render_html(rows, plots, reports))
    readme = write_atomic(reports / "README.md", render_markdown(rows, plots, reports))
    write_atomic(reports / LINEAGE_FILE, lineage_json(rows))
    return page, readme
