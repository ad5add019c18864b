"""The comparison page of one or more sweeps: one HTML file, plotly.js inside, that opens in a
browser offline.

For each sweep: its configurations ranked by mean with their 95% intervals over seeds, parallel
coordinates of the swept params against the headline figure and the params' importances (both
Optuna's plots, drawn from the finished configurations whatever the sweep's method). Then the
learning curve of every finished trial of every sweep overlaid, one colour a configuration.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

from dlprojects.core.errors import UserError
from dlprojects.core.files import write_atomic
from dlprojects.core.projects import Model, project
from dlprojects.sweep.ranking import Configuration, table
from dlprojects.sweep.space import Sweep


def write_page(sweeps: list[tuple[Sweep, list[Configuration]]], output: Path) -> Path:
    """The page of `sweeps` (each with its ranking) at `output`."""
    sections, figures = [], []
    for sweep, ranking in sweeps:
        sections.append(f"<h1>Sweep {html.escape(sweep.name)}</h1>")
        sections.append(
            f"<p>{html.escape(sweep.model.label)} ({html.escape(sweep.model.name)}), "
            f"{html.escape('.'.join(sweep.model.headline))} on the test set; method "
            f"{sweep.method}, {sweep.seeds} seed(s) a configuration, {len(ranking)} "
            f"configuration(s) finished.</p>")
        if ranking:
            sections.append(_ranking_table(sweep, ranking))
        sections.append(len(figures))  # where this sweep's figures go
        figures.append(_figures(sweep, ranking))
    curves = [("Learning curves of every trial", _curves(sweeps))]
    script = True  # plotly.js, inlined once, before the first figure
    body, number = [], 0
    for section in [*sections, len(figures)]:
        if isinstance(section, str):
            body.append(section)
            continue
        for title, figure in (figures[section] if section < len(figures) else curves):
            body.append(f"<h2>{html.escape(title)}</h2>")
            if isinstance(figure, str):
                body.append(figure)
                continue
            body.append(figure.to_html(full_html=False, include_plotlyjs=script,
                                       div_id=f"figure-{number}"))
            script, number = False, number + 1
    names = ", ".join(sweep.name for sweep, _ in sweeps)
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sweeps "
            f"{html.escape(names)}</title><style>body {{font-family: sans-serif; margin: 2em}} "
            "table {border-collapse: collapse} td, th {border: 1px solid #ccc; padding: 0.3em "
            "0.6em; text-align: right}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(output, page)


def _ranking_table(sweep: Sweep, ranking: list[Configuration]) -> str:
    lines = table(sweep, ranking)
    rows = [line.strip("|").split("|") for line in lines if line.startswith("| ")]
    head, body = rows[0], rows[1:]
    cells = "".join(f"<th>{html.escape(cell.strip())}</th>" for cell in head)
    text = [f"<table id=\"ranking\"><tr>{cells}</tr>"]
    for row in body:
        text.append("<tr>" + "".join(f"<td>{html.escape(cell.strip())}</td>" for cell in row)
                    + "</tr>")
    text.append("</table>")
    text += [f"<p>{html.escape(line)}</p>" for line in lines if not line.startswith("|")]
    return "\n".join(text)


def _figures(sweep: Sweep, ranking: list[Configuration]) -> list[tuple[str, Any]]:
    study = _study(sweep, ranking)
    if study is None:
        return [("Parallel coordinates", "<p>Needs two finished configurations.</p>")]
    import optuna.visualization as plots

    try:
        importances = plots.plot_param_importances(study)
    except (ValueError, RuntimeError) as error:  # e.g. a space of one value a param
        importances = f"<p>No importances: {html.escape(str(error))}</p>"
    return [(f"{sweep.name}: params against the mean over seeds",
             plots.plot_parallel_coordinate(study)),
            (f"{sweep.name}: param importances (fANOVA)", importances)]


def _study(sweep: Sweep, ranking: list[Configuration]):
    """An in-memory Optuna study of the finished configurations (mean over seeds), for its plots."""
    if len(ranking) < 2:
        return None
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", study_name=sweep.name)
    distributions = {}
    for key, values in sweep.space.items():
        if isinstance(values, list):
            distributions[key] = CategoricalDistribution([_choice(value) for value in values])
        else:
            distributions[key] = values.distribution()
    for found in ranking:
        params = {key: _choice(found.params[key]) if isinstance(sweep.space[key], list)
                  else found.params[key] for key in sweep.space}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=found.mean))
    return study


def _choice(value: Any) -> Any:
    """A value Optuna takes as a category (numbers, strings, booleans; others as text)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(
        value)


def _curves(sweeps: list[tuple[Sweep, list[Configuration]]]):
    """Every finished trial's validation curve (its train stage's history at the experiment)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    figure = go.Figure()
    palette = qualitative.Dark24
    configurations = [(sweep, found) for sweep, ranking in sweeps for found in ranking]
    paths = set()
    for place, (sweep, found) in enumerate(configurations):
        path, x, y = history_plot(sweep.model)
        paths.add(path)
        for trial in found.trials:
            frame = _history(trial, path)
            if frame is None or x not in frame or y not in frame:
                continue
            figure.add_trace(go.Scatter(
                x=frame[x].tolist(), y=frame[y].tolist(), mode="lines", name=trial,
                legendgroup=f"{sweep.name}-{found.number}",
                line={"color": palette[place % len(palette)]},
                hovertemplate=f"{trial}<br>{x} %{{x}}<br>{y} %{{y:.4f}}<extra></extra>"))
    if configurations:
        figure.update_layout(xaxis_title=x, yaxis_title=y, height=600,
                             title=f"{y} by {x}: {len(figure.data)} trials "
                                   f"({', '.join(sorted(paths))})")
    return figure


def _stages(model: Model) -> list[dict[str, Any]]:
    """The stages of `model`'s project, each foreach item's body on its own."""
    bodies = []
    for stage in project(model.project).stages.values():
        text = json.dumps(stage.get("do", stage))
        bodies += [json.loads(text if item is None else text.replace("${item}", str(item)))
                   for item in stage.get("foreach") or [None]]
    return bodies


def _paths(entries: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(entry, {}) if isinstance(entry, str) else next(
        (path, options or {}) for path, options in entry.items()) for entry in entries or []]


def history_plot(model: Model) -> tuple[str, str, str]:
    """(history CSV, x column, y column) of the train stage that writes `model`'s folder, from
    its project's declared plots."""
    for body in _stages(model):
        if model.folder in [path for path, _ in _paths(body.get("outs"))]:
            for path, options in _paths(body.get("plots")):
                if path.endswith(".csv"):
                    return path, options.get("x", "epoch"), options.get("y", "val_accuracy")
    raise ValueError(f"no history plot declared for {model.folder}")


def predictions_file(model: Model) -> str:
    """The test predictions CSV of `model`: an out of the stage that writes its metrics file
    (where that stage writes several, the one named after the model's folder)."""
    for body in _stages(model):
        if model.metrics in [path for path, _ in _paths(body.get("metrics"))]:
            found = [path for path, _ in _paths(body.get("outs"))
                     if Path(path).name.startswith("predictions")]
            named = [path for path in found if Path(model.folder).name in Path(path).name]
            if len(found) == 1 or len(named) == 1:
                return found[0] if len(found) == 1 else named[0]
    raise UserError(f"{model.name}: no predictions file among its evaluate stage's outs")


def _history(trial: str, path: str):
    """The history CSV at experiment `trial`, or None where it cannot be read."""
    import dvc.api
    import pandas as pd
    from dvc.exceptions import DvcException

    try:
        return pd.read_csv(io.StringIO(dvc.api.read(path, rev=trial)))
    except (DvcException, ValueError, OSError):
        return None
