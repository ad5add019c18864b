"""Stage report: reports/index.html (self-contained) and reports/README.md from the results of
every evaluate stage, with each result's MLflow run id and git commit."""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
from pathlib import Path

from dlprojects import tracking
from dlprojects.errors import run_main
from dlprojects.report import check_inputs, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path, nargs="?", default=Path("."),
                        help="the project folder (holds reports/ and models/)")
    args = parser.parse_args()
    check_inputs(args.root)
    uri = tracking.tracking_uri()
    tracking.check_reachable(uri)
    import mlflow

    page, readme = write_report(args.root, mlflow.MlflowClient(uri))
    print(f"report: {page} ({page.stat().st_size / 1e6:.1f} MB, self-contained) and {readme}")


if __name__ == "__main__":
    run_main(main)
