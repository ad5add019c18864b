"""Named experiments kept as params files: `experiments/<name>.yaml` has the shape of params.yaml
and holds only what differs from it.

    python -m dlprojects.experiments run experiments/full-size.yaml   # dvc exp run -n full-size ...
    python -m dlprojects.experiments run experiments/full-size.yaml --dry-run   # print it only

Every value is checked first (each key must exist in params.yaml, and each section it changes
must still be valid), then `dvc exp run -n <name> -S <key>=<value> ...` runs the pipeline with it.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

from dlprojects.core.config import parse, section_type
from dlprojects.core.errors import UserError, run_main
from dlprojects.core.parsing import PARAMS_FILE, ConfigError, read_params


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiments/<name>.yaml as DVC experiment <name>")
    run.add_argument("file", type=Path)
    run.add_argument("--dry-run", action="store_true", help="print the dvc command only")
    args = parser.parse_args()
    values = overrides(args.file)
    apply(read_params(PARAMS_FILE), values)
    command = dvc_command(args.file.stem, values)
    print(shlex.join(command), flush=True)
    if not args.dry_run:
        raise SystemExit(subprocess.run(command).returncode)


if __name__ == "__main__":
    run_main(main)
