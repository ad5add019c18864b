"""The frozen BERT: checking a model folder, loading it offline, tokenizing and truncating reviews,
and their hidden states batch by batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dlprojects.core.distributed import World
from dlprojects.core.errors import UserError
from dlprojects.sentiment.reviews import clean_review, truncate

BERT_PARAM = "download.bert.model"  # the param that chooses what data/raw/bert holds


def read_bert_config(folder: Path, max_length: int, max_length_param: str,
                     layers: Sequence[int] = (-1,), layers_param: str = "") -> dict[str, Any]:
    """config.json of a BERT folder, after checking that it is one, that `max_length` fits its
    positions and that it has the hidden `layers` asked for."""
    folder = Path(folder)
    refetch = f"set {BERT_PARAM} and run `dvc repro download@bert`"
    if not (folder / "config.json").is_file():
        raise UserError(f"{BERT_PARAM}: {folder} is missing or holds no model (no config.json); "
                        f"{refetch}")
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError:
        raise UserError(f"{BERT_PARAM}: {folder}/config.json is not valid JSON; "
                        f"{refetch}") from None
    if config.get("model_type") != "bert":
        raise UserError(f"{BERT_PARAM}: {folder} holds a {config.get('model_type')!r} model, not a "
                        f"BERT; {refetch}")
    limit = int(config.get("max_position_embeddings", 512))
    if max_length > limit:
        raise UserError(f"{max_length_param}: {max_length} exceeds the {limit} positions of the "
                        f"BERT in {folder}; use at most {limit}")
    depth = int(config.get("num_hidden_layers", 0))
    for layer in layers:
        if not -depth - 1 <= layer <= depth:
            raise UserError(f"{layers_param}: layer {layer} does not exist; the BERT in {folder} "
                            f"has hidden states 0 (embeddings) to {depth} (or -1 to {-depth - 1})")
    return config


def bert_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What an RNN trained on a BERT's states depends on: saved with the RNN, checked by predict."""
    keys = ("_name_or_path", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "vocab_size")
    return {key: config.get(key) for key in keys}


def load_bert(folder: Path, *, device: torch.device):
    """(tokenizer, frozen BertModel in eval mode on `device`) from a local folder, offline.
    Check the folder with `read_bert_config` first."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # the "Loading weights" bar says nothing in a stage's log
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModel.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise UserError(f"{BERT_PARAM}: cannot load the BERT in {folder} ({error}); set "
                        f"{BERT_PARAM} and run `dvc repro download@bert`") from None
    model.requires_grad_(False)
    return tokenizer, model.eval().to(device)


def trim_to_layers(model: nn.Module, layers: Sequence[int]) -> list[int]:
    """Drop the encoder layers after the deepest hidden layer in `layers`, whose work would be
    thrown away (a sixth of MiniLM's time for the default [-3, -2]); returns `layers` as indices
    counted from the embeddings (0), which stay valid in the trimmed model."""
    depth = len(model.encoder.layer)
    absolute = [layer % (depth + 1) for layer in layers]
    model.encoder.layer = model.encoder.layer[:max(absolute)]
    return absolute


def encode(texts: Sequence[str], tokenizer, *, max_length: int, truncation: str = "head_tail",
           head_tokens: int = 0) -> list[list[int]]:
    """Token ids of each review: `<br />` removed, truncated to `max_length` including [CLS] and
    [SEP] (see `truncate` for the modes)."""
    cleaned = [clean_review(text) for text in texts]
    pieces = tokenizer(cleaned, add_special_tokens=False, truncation=False, verbose=False)
    budget = max_length - 2
    return [[tokenizer.cls_token_id, *truncate(ids, budget, truncation, head_tokens),
             tokenizer.sep_token_id] for ids in pieces["input_ids"]]


@torch.inference_mode()
def embed(token_ids: Sequence[list[int]], model: nn.Module, *, batch_size: int,
          device: torch.device, layers: Sequence[int] = (-1,), amp: bool = True,
          sort_by_length: bool = True, pad_to: int | None = None, desc: str = "embed",
          world: World = World()) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Yields (review indices, fp16 states (length_i, H) of their real tokens) batch by batch; a
    token's state is the mean of its hidden `layers` (0: the embeddings, -1: the last layer).

    Batches hold reviews of similar length (longest first, so memory trouble shows at once) and
    are padded to their own longest review; `sort_by_length=False, pad_to=max_length` is the naive
    loop the benchmark compares against. bf16 autocast on CUDA when `amp`. With several ranks,
    each embeds every `world.size`-th batch (`gather_batches` brings them together).
    """
    lengths = np.array([len(ids) for ids in token_ids])
    order = np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(len(lengths))
    pad_id = getattr(getattr(model, "config", None), "pad_token_id", 0) or 0
    only_last = list(layers) == [-1]
    bar = tqdm(total=len(order), desc=desc, unit="review", disable=None if world.main else True,
               file=sys.stderr)
    for number, start in enumerate(range(0, len(order), batch_size)):
        index = order[start:start + batch_size]
        if number % world.size != world.rank:
            bar.update(len(index))
            continue
        input_ids, attention_mask = _padded(token_ids, lengths, index, pad_id,
                                            pad_to or int(lengths[index].max()))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=amp and device.type == "cuda"):
            output = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                           output_hidden_states=not only_last)
        if only_last:
            hidden = output.last_hidden_state.float()
        else:
            hidden = torch.stack([output.hidden_states[layer].float() for layer in layers]).mean(0)
        hidden = hidden.to(torch.float16).cpu().numpy()  # (B, width, H)
        yield index, [hidden[row, :lengths[review]] for row, review in enumerate(index)]
        bar.update(len(index))
    bar.close()


def _padded(token_ids: Sequence[list[int]], lengths: np.ndarray, index: np.ndarray, pad_id: int,
            width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask), both (len(index), width): the reviews in `index` padded with
    `pad_id` to `width` tokens."""
    input_ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(index), width), dtype=torch.long)
    for row, review in enumerate(index):
        input_ids[row, :lengths[review]] = torch.tensor(token_ids[review])
        attention_mask[row, :lengths[review]] = 1
    return input_ids, attention_mask
