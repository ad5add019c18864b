"""Stage plots_template: the self-contained template `dvc plots show` uses (see .dvc/config)."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
from pathlib import Path

from dlprojects.core.errors import run_main
from dlprojects.plots_template import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="reports/plots_template.html")
    out = build(parser.parse_args().out)
    print(f"plots_template: {out} ({out.stat().st_size / 1e6:.1f} MB, no external scripts)")


if __name__ == "__main__":
    run_main(main)
