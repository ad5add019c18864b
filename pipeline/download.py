"""Stage download@<name>: fetch a data source from its mirrors into data/raw/<name>, verified.

Also fetches cifar10, which has no offline mirror and so no stage:
    python pipeline/download.py cifar10 data/raw/cifar10
"""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
from pathlib import Path

from dlprojects.core.config import load_section
from dlprojects.core.data.download import download
from dlprojects.core.data.sources import SOURCE_NAMES, URL_ONLY_SOURCES, source_for
from dlprojects.core.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=[*SOURCE_NAMES, *URL_ONLY_SOURCES])
    parser.add_argument("out", type=Path, help="folder for the canonical files")
    args = parser.parse_args()
    params = getattr(load_section("download"), args.name)
    source = source_for(args.name, bert_model=getattr(params, "model", "all-MiniLM-L6-v2"))
    download(source, args.out, extra_mirrors=params.mirrors)


if __name__ == "__main__":
    run_main(main)
