"""Model folders that are missing, damaged or from other params: one line that says what to do."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from dlprojects.backprop import numpy_nn
from dlprojects.core.errors import UserError
from dlprojects.core import weights
from dlprojects.backprop.network import load_weights


def test_torch_model_files(tmp_path):
    path = weights.save_model(nn.Linear(3, 2), tmp_path / "vit/model.safetensors", {"dim": 3})
    assert weights.load_params(path) == {"dim": 3}
    with pytest.raises(UserError, match=r"model.safetensors not found; run `dvc repro` to train it"):
        weights.load_weights(nn.Linear(3, 2), tmp_path / "none/model.safetensors")
    with pytest.raises(UserError, match=r"does not fit the model params.yaml describes \(size mismatch"):
        weights.load_weights(nn.Linear(4, 2), path)
    path.write_bytes(path.read_bytes()[:40])  # truncated
    for load in (lambda: weights.load_weights(nn.Linear(3, 2), path),
                 lambda: weights.load_params(path)):
        with pytest.raises(UserError, match=r"is not a readable model \(.*\); restore it with "
                                            r"`dvc checkout .*vit` or retrain it"):
            load()


def test_numpy_model_files(tmp_path):
    network = numpy_nn.build_mlp([4, 3, 2], rng=np.random.default_rng(0))
    path = tmp_path / "mlp/weights.npz"
    path.parent.mkdir()
    numpy_nn.save_npz(path, network.state_dict())
    other = numpy_nn.build_mlp([4, 3, 2], rng=np.random.default_rng(1))
    load_weights(other, path)
    assert all(np.array_equal(a, b) for a, b in zip(network.state_dict().values(),
                                                    other.state_dict().values()))
    with pytest.raises(UserError, match="not found; run `dvc repro` to train it"):
        load_weights(other, tmp_path / "none.npz")
    with pytest.raises(UserError, match=r"does not fit the model params.yaml describes"):
        load_weights(numpy_nn.build_mlp([4, 5, 2], rng=np.random.default_rng(0)), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=r"is not a readable model .*; restore it with `dvc checkout"):
        load_weights(other, path)
