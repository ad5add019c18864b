"""Review classifiers as pyfunc models: review texts in (a `review` column), P(negative),
P(positive) and the label out; the model folder and the frozen BERT (weights and tokenizer) travel
as the model's artifacts, and the builder the folder's model.json names rebuilds it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from dlprojects.core.errors import UserError
from dlprojects.core.serving import (
    HERE,
    MODEL_PACKAGES,
    model_code,
    bad_request,
    class_frame,
    output_schema,
    requirements,
)

MAX_REVIEWS = 256  # per request: about 10 s of the frozen BERT on two CPU cores
CLASSES = ["negative", "positive"]


def review_batch(model_input: Any) -> list[str]:
    """The review texts of a request (a `review` column, or a list of strings), or a 400."""
    if isinstance(model_input, (pd.DataFrame, dict)):
        if "review" not in model_input:
            raise bad_request(f"expected a column 'review' of texts; got {list(model_input)}")
        texts = list(model_input["review"])
    elif isinstance(model_input, str):
        texts = [model_input]
    else:
        texts = list(np.asarray(model_input, dtype=object).ravel())
    if not texts:
        raise bad_request("the batch is empty: send at least one review")
    if len(texts) > MAX_REVIEWS:
        raise bad_request(f"{len(texts)} reviews in one request; send at most {MAX_REVIEWS}")
    for number, text in enumerate(texts, 1):
        if not isinstance(text, str):
            raise bad_request(f"review {number} is a {type(text).__name__}, not text")
    return texts  # what a review must say: the predictor's checks (a 400 too)


class ReviewClassifier(mlflow.pyfunc.PythonModel):
    """Artifacts "rnn" (the model folder) and "bert" (the frozen BERT and its tokenizer)."""

    def load_context(self, context) -> None:
        self.load(Path(context.artifacts["rnn"]), Path(context.artifacts["bert"]))

    def load(self, rnn: Path, bert: Path) -> ReviewClassifier:
        from dlprojects.core import models

        self.predictor = models.load(rnn, bert=bert)  # the builder its model.json names
        return self

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # the hint names a type MLflow infers no schema from: the logged signature checks inputs
        texts = review_batch(model_input)
        try:
            positive = self.predictor(texts)
        except UserError as error:
            raise bad_request(str(error)) from None
        return class_frame(np.stack([1 - positive, positive], axis=1), CLASSES)


def log_review_classifier(model_dir: Path, bert_dir: Path, example: Sequence[str]):
    """Log the RNN in `model_dir` with the frozen BERT in `bert_dir` (weights and tokenizer) to
    the active run as artifact "model": review texts in. Returns its ModelInfo."""
    signature = ModelSignature(inputs=Schema([ColSpec("string", "review")]),
                               outputs=output_schema(CLASSES))
    with model_code(model_dir) as code:
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(HERE / "review_model.py"),
            artifacts={"rnn": str(model_dir), "bert": str(bert_dir)}, signature=signature,
            input_example=pd.DataFrame({"review": list(example)}), code_paths=[str(code)],
            pip_requirements=requirements(*MODEL_PACKAGES, "transformers", "tokenizers", "tqdm"))
