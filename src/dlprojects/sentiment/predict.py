"""Review text in, probability of positive out: the `python -m dlprojects.sentiment` command and
the served model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlprojects.core.errors import UserError
from dlprojects.sentiment.bert import (BERT_PARAM, bert_identity, embed, encode, load_bert,
                                       read_bert_config, trim_to_layers)
from dlprojects.sentiment.model import SentimentRNN, load_rnn
from dlprojects.sentiment.reviews import clean_review


def check_texts(texts: Sequence[str]) -> None:
    """Refuse a text with nothing to score: empty, only whitespace and `<br />` tags, or no letter
    at all (digits, emoji, punctuation). Every way to score a review (the served model,
    `dlprojects.predict`, `python -m dlprojects.sentiment`) goes through here."""
    if isinstance(texts, str):
        raise TypeError("pass a list of review texts, not one string")
    for number, text in enumerate(texts, 1):
        if not clean_review(text):
            raise UserError(f"review {number} of {len(texts)} is empty (or only whitespace and "
                            f"<br /> tags); give the text of a review")
        if not any(character.isalpha() for character in text):
            raise UserError(f"review {number} of {len(texts)} has no words ({text[:20]!r}); give "
                            f"the text of a review")


class SentimentPredictor:
    """Review text in, probability of positive out: the pipeline's trained RNN on the states of
    the same BERT, layers, max_length and truncation it was trained with."""

    def __init__(self, tokenizer, bert: nn.Module, rnn: SentimentRNN, embedding: dict[str, Any],
                 device: torch.device):
        self.tokenizer, self.bert, self.rnn = tokenizer, bert, rnn.eval()
        self.embedding, self.device = embedding, device

    @classmethod
    def load(cls, model_folder: Path, bert_folder: Path, *,
             device: torch.device) -> SentimentPredictor:
        rnn, saved = load_rnn(model_folder)
        embedding = saved["embedding"]
        config = read_bert_config(bert_folder, embedding["max_length"], "embed_imdb.max_length",
                                  embedding["bert_layers"], "embed_imdb.bert_layers")
        if bert_identity(config) != embedding["bert"]:
            raise UserError(f"{BERT_PARAM}: the BERT in {bert_folder} "
                            f"({config.get('_name_or_path')}) is not the one the RNN in "
                            f"{model_folder} was trained on "
                            f"({embedding['bert']['_name_or_path']}); "
                            f"run `dvc repro` to retrain, or restore that BERT")
        tokenizer, bert = load_bert(bert_folder, device=device)
        layers = trim_to_layers(bert, embedding["bert_layers"])
        return cls(tokenizer, bert, rnn.to(device), {**embedding, "bert_layers": layers}, device)

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """P(positive) of each text, float64 (N,)."""
        check_texts(texts)
        token_ids = encode(texts, self.tokenizer, max_length=self.embedding["max_length"],
                           truncation=self.embedding["truncation"],
                           head_tokens=self.embedding["head_tokens"])
        probabilities = np.zeros(len(texts))
        for index, states in embed(token_ids, self.bert, batch_size=batch_size, device=self.device,
                                   layers=self.embedding["bert_layers"],
                                   amp=self.embedding["amp"], desc="predict"):
            lengths = torch.tensor([len(review) for review in states])
            padded = torch.zeros(len(states), int(lengths.max()), states[0].shape[1])
            for row, review in enumerate(states):
                padded[row, :len(review)] = torch.from_numpy(review.astype(np.float32))
            logits = self.rnn(padded.to(self.device), lengths)
            probabilities[index] = logits.float().softmax(dim=-1)[:, 1].cpu().numpy()
        return probabilities


def predictor(folder: Path, bert: Path | None = None) -> SentimentPredictor:
    """The RNN in `folder` on the frozen BERT in `bert` (default data/raw/bert), on the CPU: the
    builder its model.json names."""
    return SentimentPredictor.load(folder, Path(bert or "data/raw/bert"), device=torch.device("cpu"))
