"""Trained torch models on disk: weights in safetensors, the resolved params in its metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn


def save_model(model: nn.Module, path: Path, params: dict[str, Any]) -> Path:
    """Write weights and params together, so a model file always says how it was made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    temporary = path.with_suffix(".tmp")
    save_file(state, temporary, metadata={"params": json.dumps(params, sort_keys=True)})
    temporary.replace(path)
    return path


def load_params(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["params"])


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    model.load_state_dict(load_file(str(path)))
    return model
