"""Trained torch models on disk: weights in safetensors, the resolved params in its metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dlprojects.core.errors import missing_model, mismatched_model, unreadable_model
from dlprojects.core.files import atomic_path


def save_model(model: nn.Module, path: Path, params: dict[str, Any]) -> Path:
    """Write weights and params together, so a model file always says how it was made."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as scratch:
        save_file(state, scratch, metadata={"params": json.dumps(params, sort_keys=True)})
    return Path(path)


def _existing(path: Path) -> str:
    if not Path(path).is_file():
        raise missing_model(path)
    return str(path)


def load_params(path: Path) -> dict[str, Any]:
    try:
        with safe_open(_existing(path), framework="pt") as f:
            return json.loads(f.metadata()["params"])
    except (SafetensorError, KeyError, TypeError, ValueError) as error:
        raise unreadable_model(path, error) from None


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load `path` into `model`; a missing, damaged or mismatched file is a one-line error."""
    try:
        state = load_file(_existing(path))
    except (SafetensorError, ValueError) as error:
        raise unreadable_model(path, error) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        lines = str(error).splitlines()
        raise mismatched_model(path, lines[1].strip() if len(lines) > 1 else str(error)) from None
    return model
