"""The ViT stages around the model: params checks, CIFAR-10 source and loader, training helpers,
figures. Fast: no real data set and no training run (the end-to-end `dvc repro` test runs both
stages on smoke-sized params)."""

from __future__ import annotations

import io
import math
import pickle
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import test_stage_errors
from conftest import committed
from dlprojects.core import plots
from dlprojects.core.config import ConfigError, load_section, parse
from dlprojects.vit.params import TrainVitParams
from dlprojects.core.data.cifar import load_cifar10_splits
from dlprojects.core.data.images import normalised_tensor
from dlprojects.core.data.download import DownloadError, download
from dlprojects.core.data.mirrors import MirrorError
from dlprojects.core.data.sources import CIFAR10, CIFAR10_FILES, CIFAR10_TARBALL, _cifar10_from_tarball
from dlprojects.vit.data import load_splits
from dlprojects.core.training import decay_groups, warmup_cosine
from dlprojects.vit.model import NO_DECAY, ViT

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ bad params


@pytest.mark.parametrize(("override", "message"), [
    ({"patch_size": 5},
     "train_vit.patch_size: 5 does not divide the 28x28 images of fashion_mnist; "
     "use one of 2, 4, 7, 14, 28"),
    ({"dataset": "cifar10", "patch_size": 7},
     "train_vit.patch_size: 7 does not divide the 32x32 images of cifar10; "
     "use one of 2, 4, 8, 16, 32"),
    ({"heads": 5},
     "train_vit.heads: 5 does not divide dim 64; pick heads so that dim / heads is whole"),
    ({"dataset": "svhn"},
     "train_vit.dataset: 'svhn' is not one of 'fashion_mnist', 'mnist', 'cifar10'"),
    ({"dataset": "mnist", "flip": True},
     "train_vit.flip: mirrored digits are not digits (2 and 5, say); set flip: false for mnist"),
])
def test_bad_params_fail_before_work(tmp_path, override, message):
    result = test_stage_errors.run_stage(tmp_path, "train_vit", override,
                                         "-m", "dlprojects.vit.train", "data/raw/x",
                                         "models/vit", "reports/vit/history.csv")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_evaluate_checks_the_same_params(tmp_path):
    result = test_stage_errors.run_stage(tmp_path, "train_vit", {"heads": 6},
                                         "-m", "dlprojects.vit.evaluate", "data/raw/x",
                                         "models/vit", "reports/vit")
    message = "train_vit.heads: 6 does not divide dim 64; pick heads so that dim / heads is whole"
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_cifar10_without_its_data_says_where_to_get_it(tmp_path):
    result = test_stage_errors.run_stage(
        tmp_path, "train_vit", {"dataset": "cifar10", "patch_size": 4},
        "-m", "dlprojects.vit.train", "data/raw/cifar10", "models/vit",
        "reports/vit/history.csv")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: data/raw/cifar10/cifar-10-batches-py not found; CIFAR-10 has no offline mirror: "
        "where the internet is reachable, extract "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into data/raw/cifar10")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_committed_params_describe_a_model_that_builds():
    params = load_section("train_vit", ROOT / "params.yaml")
    model = ViT(**params.model_kwargs())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    cifar = parse(TrainVitParams, {**committed("train_vit"), "dataset": "cifar10", "patch_size": 4},
                  "train_vit")
    kwargs = cifar.model_kwargs()
    assert (kwargs["image_size"], kwargs["in_channels"], kwargs["patch_size"]) == (32, 3, 4)
    assert ViT(**kwargs)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ConfigError, match=r"train_vit\.heads: 3 does not divide dim 64"):
        parse(TrainVitParams, {**committed("train_vit"), "heads": 3}, "train_vit")


# ------------------------------------------------------------------------------ training helpers


def test_weight_decay_skips_biases_norms_position_embedding_and_class_token():
    model = ViT(dim=16, depth=1, heads=2, mlp_dim=32, stem_channels=4)
    decay, no_decay = decay_groups(model, 0.05, no_decay=NO_DECAY)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    names = {id(p): name for name, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"pos_embedding", "cls_token", "head.bias", "norm.weight",
            "blocks.0.norm1.weight", "patch_embed.stem.1.weight"} <= skipped
    assert {names[id(p)] for p in decay["params"]} == {
        name for name, p in model.named_parameters() if p.ndim >= 2 and name not in skipped}
    assert "blocks.0.attn.to_qkv.weight" not in skipped


def test_learning_rate_warms_up_linearly_then_decays_along_a_cosine():
    factor = warmup_cosine(warmup_steps=4, total_steps=14)
    assert [factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0
    assert factor(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(14) == pytest.approx(0.0)
    assert warmup_cosine(0, 10)(0) == 1.0


# --------------------------------------------------------------------------------------- CIFAR-10


def _fake_cifar_tarball(path: Path, per_batch: int = 3) -> Path:
    """The Toronto layout, tiny batches: image i of a batch has red i, green 100 and blue 200."""
    rng = np.random.default_rng(0)

    def batch(count: int) -> bytes:
        data = np.zeros((count, 3, 32, 32), dtype=np.uint8)
        data[:, 0] = np.arange(count)[:, None, None]
        data[:, 1], data[:, 2] = 100, 200
        return pickle.dumps({"data": data.reshape(count, -1),
                             "labels": rng.integers(0, 10, count).tolist()})

    members = {f"cifar-10-batches-py/data_batch_{i}": batch(per_batch) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = batch(per_batch)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({"label_names": ["airplane"]})
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_the_cifar10_normaliser_keeps_torchvisions_layout_and_the_loader_reads_it(tmp_path):
    fetched, staging = tmp_path / "fetched", tmp_path / "staging"
    fetched.mkdir()
    staging.mkdir()
    _fake_cifar_tarball(fetched / CIFAR10_TARBALL)
    _cifar10_from_tarball(fetched, staging)
    assert sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()) == \
        sorted(CIFAR10_FILES)  # the readme is dropped
    splits = load_cifar10_splits(staging, validation_size=5, seed=0, test_samples=2)
    assert splits.train_images.shape == (10, 32, 32, 3)
    assert splits.val_images.shape == (5, 32, 32, 3)
    assert splits.test_images.shape == (2, 32, 32, 3) and splits.train_labels.dtype == np.int64
    assert (splits.train_images[..., 1] == 100).all() and (splits.train_images[..., 2] == 200).all()
    assert splits.class_names[0] == "airplane"
    assert load_splits("cifar10", staging, validation_size=5, seed=0).train_images.shape[0] == 10
    tensor = normalised_tensor(splits.test_images, "cifar10", torch.device("cpu"))
    assert tensor.shape == (2, 3, 32, 32) and tensor.is_contiguous()
    torch.testing.assert_close(tensor[:, 1], torch.full((2, 32, 32), (100 / 255 - 0.4822) / 0.2435))


def test_a_broken_cifar10_tarball_is_a_mirror_error(tmp_path):
    (tmp_path / CIFAR10_TARBALL).write_bytes(b"not a tarball")
    with pytest.raises(MirrorError, match="is not a complete tar.gz"):
        _cifar10_from_tarball(tmp_path, tmp_path)


def test_offline_the_cifar10_download_fails_in_one_line_that_names_the_mirror_to_set(
        tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # offline, wherever the test runs
    lines = []
    with pytest.raises(DownloadError) as error:
        download(CIFAR10, tmp_path / "cifar10", log=lines.append)
    message = str(error.value)
    assert message == ("no mirror of 'cifar10' delivered verified files (tried: "
                       "https://www.cs.toronto.edu/~kriz/); add a URL serving the canonical files "
                       "to download.cifar10.mirrors in params.yaml")
    assert len(lines) == 1 and "www.cs.toronto.edu" in lines[0] and "\n" not in lines[0]
    assert list(tmp_path.iterdir()) == []  # no partial folder left behind


# ---------------------------------------------------------------------------------------- figures


@pytest.mark.parametrize(("side", "channels", "patch"), [(28, 0, 7), (32, 3, 8)])
def test_attention_maps_and_patch_grid_write_pngs(tmp_path, side, channels, patch):
    rng = np.random.default_rng(0)
    shape = (4, side, side, channels) if channels else (4, side, side)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    rollouts = rng.random((4, (side // patch) ** 2))
    written = [plots.attention_maps(images, rollouts, ["a", "b", "c", "d"],
                                    tmp_path / "attention.png", title="rollout"),
               plots.patch_grid(images[0], patch, tmp_path / "sub/patches.png", title="patches")]
    for path in written:
        assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"


def test_offline_the_cifar10_download_command_fails_cleanly_and_writes_nothing(tmp_path):
    out = tmp_path / "data/raw/cifar10"
    offline = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
               "NO_PROXY": ""}  # a closed port: offline even where the internet is reachable
    result = subprocess.run([sys.executable, str(ROOT / "pipeline/download.py"), "cifar10",
                             str(out)], cwd=ROOT, env=offline, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: no mirror of 'cifar10' delivered verified files (tried: "
        "https://www.cs.toronto.edu/~kriz/); add a URL serving the canonical files to "
        "download.cifar10.mirrors in params.yaml")
    assert list((tmp_path / "data/raw").iterdir()) == []  # no partial folder, no scratch left
