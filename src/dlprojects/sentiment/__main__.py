"""Probability that a review is positive, from the pipeline's trained RNN and the same BERT.

    python -m dlprojects.sentiment "A moving, beautifully shot film."
    cat review.txt | python -m dlprojects.sentiment -
"""

import dlprojects  # noqa: F401  first: pins the CPU numerics before NumPy and torch load

import argparse
import sys
from pathlib import Path

from dlprojects.core.errors import run_main, utf8_text
from dlprojects.core.runtime import select_device, set_threads
from dlprojects.sentiment.predict import SentimentPredictor, check_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="+", help="review texts; '-' reads one from stdin")
    parser.add_argument("--model", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--bert", type=Path, default=Path("data/raw/bert"))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    texts = [utf8_text("-", sys.stdin.buffer.read()) if text == "-" else text
             for text in args.texts]
    check_texts(texts)  # before loading anything: the checks every way to score a review makes

    set_threads(args.threads)
    predictor = SentimentPredictor.load(args.model, args.bert, device=select_device(args.device))
    for probability in predictor(texts):
        print(f"{probability:.4f}")


run_main(main)
