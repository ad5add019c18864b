"""Stage report: reports/index.html (self-contained) and reports/README.md from the results of
every evaluate stage, each result named by its model digest (no MLflow run ids: they exist only in
the store of the machine that made them; `python -m dlprojects.lineage model <digest>` finds
them)."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
from pathlib import Path

from dlprojects.core.errors import run_main
from dlprojects.report import check_inputs, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path, nargs="?", default=Path("."),
                        help="the project folder (holds reports/ and models/)")
    args = parser.parse_args()
    check_inputs(args.root)
    page, readme = write_report(args.root)
    print(f"report: {page} ({page.stat().st_size / 1e6:.1f} MB, self-contained) and {readme}")


if __name__ == "__main__":
    run_main(main)
