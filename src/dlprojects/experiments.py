"""Named experiments kept as params files: `experiments/<name>.yaml` has the shape of params.yaml
and holds only what differs from it.

    python -m dlprojects.experiments run experiments/full-size.yaml   # dvc exp run -n full-size ...
    python -m dlprojects.experiments run experiments/full-size.yaml --dry-run   # print it only
    python -m dlprojects.experiments show [dvc exp show options]   # make exps: the headlines

Every value is checked first (each key must exist in params.yaml, and each section it changes
must still be valid), then `dvc exp run -n <name> -S <key>=<value> ...` runs the pipeline with it.

`show` is `dvc exp show` at a glance: each declared model's headline test figure, the params that
differ between the experiments shown, and nothing else (no per-class accuracies, no dependency
hashes).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

from dlprojects.core.config import parse, section_type
from dlprojects.core.errors import UserError, run_main
from dlprojects.core.parsing import PARAMS_FILE, ConfigError, read_params


def run_dvc(command: list[str], **options) -> subprocess.CompletedProcess:
    """`subprocess.run` of a `dvc ...` command; one line where no dvc is on PATH."""
    try:
        return subprocess.run(command, **options)
    except FileNotFoundError:
        raise UserError("dvc not found on PATH; run `make setup` and use the project's "
                        ".venv/bin (or the make targets)") from None


def overrides(path: Path) -> dict[str, Any]:
    """{"train_vit.loop.epochs": 100, ...}: every value the file sets, by its dotted key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; experiments live in experiments/<name>.yaml")
    data = read_params(path)
    flat: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for name, inner in value.items():
                walk(inner, f"{key}.{name}" if key else name)
        else:
            flat[key] = value

    walk(data, "")
    return flat


def dotted(params: dict[str, Any], key: str) -> Any:
    """The value of dotted `key` (train_vit.loop.seed) in nested params; None where absent."""
    value: Any = params
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def apply(params: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """params with `values` set; a key params.yaml does not have is a ConfigError."""
    merged = copy.deepcopy(params)
    for key, value in values.items():
        *parents, name = key.split(".")
        target = merged
        for part in parents:
            target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict) or name not in target:
            raise ConfigError(f"{key}: not a param of params.yaml; check the spelling")
        target[name] = value
    for section in {key.split(".")[0] for key in values}:
        parse(section_type(section), merged[section], section)
    return merged


def dvc_command(name: str, values: dict[str, Any]) -> list[str]:
    command = ["dvc", "exp", "run", "-n", name]
    for key, value in values.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        command += ["-S", f"{key}={text}"]
    return command


def show_command(extra: list[str]) -> list[str]:
    """`dvc exp show` keeping each declared model's headline metric (DVC names a metric by its
    key, or file:key where two files share it), dropping every other metric of the declared
    metrics files and the dependency columns, showing only the params that differ."""
    from dlprojects.core.projects import models

    def column(file: str, key: str) -> str:
        return f"({re.escape(file)}:)?{re.escape(key)}"

    headlines = {(model.metrics, ".".join(model.headline)) for model in models()}
    others = set()
    for file in {model.metrics for model in models()}:
        try:
            metrics = json.loads(Path(file).read_text())
        except (OSError, ValueError):
            continue  # not evaluated yet: its columns are not in the table either
        others |= {(file, key) for key in flat_keys(metrics)} - headlines
    keep = "^(Experiment|Created|State|" + "|".join(column(*h) for h in sorted(headlines)) + ")$"
    drop = "|".join([*(f"^{column(*other)}$" for other in sorted(others)),
                     "^(data|src|models|reports)/"])
    return ["dvc", "exp", "show", "--only-changed", "--keep", keep, "--drop", drop, *extra]


def flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of a metrics file's leaves, as DVC names them."""
    keys = []
    for name, value in tree.items():
        key = f"{prefix}{name}"
        keys += flat_keys(value, f"{key}.") if isinstance(value, dict) else [key]
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiments/<name>.yaml as DVC experiment <name>")
    run.add_argument("file", type=Path)
    run.add_argument("--dry-run", action="store_true", help="print the dvc command only")
    sub.add_parser("show", help="dvc exp show: each model's headline figure and the params that "
                                "differ; other options go to dvc exp show")
    args, extra = parser.parse_known_args()
    if args.command == "show":
        raise SystemExit(run_dvc(show_command(extra)).returncode)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    values = overrides(args.file)
    apply(read_params(PARAMS_FILE), values)
    command = dvc_command(args.file.stem, values)
    print(shlex.join(command), flush=True)
    if not args.dry_run:
        raise SystemExit(run_dvc(command).returncode)


if __name__ == "__main__":
    run_main(main)
