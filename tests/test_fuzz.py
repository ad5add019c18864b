"""Bad input of every kind, generated (Hypothesis): a params file, image bytes, review texts, HTTP
bodies to a served model and model folders. Each case ends in a result or in one line (a
`UserError`, or a 4xx with a short message) and leaves the workspace as it was: the project's
`models/`, `reports/`, `data/`, `params.yaml` and MLflow store, and the case's own folders, are
fingerprinted before and after each case.

Examples per entry point: FUZZ_EXAMPLES (default 100); the counts tried are printed (`pytest -s`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlprojects.core import models
from dlprojects.core.config import load_section
from dlprojects.core.errors import UserError, utf8_text
from dlprojects.core.parsing import read_params
from dlprojects.predict import image_pixels

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
TRIED: Counter[str] = Counter()  # cases per entry point, printed at the end of the module
WORKSPACE = [ROOT / name for name in ("models", "reports", "data", "params.yaml", "mlflow.db")]


def fingerprint(*roots: Path) -> dict[str, tuple[int, int, str]]:
    """(size, mtime in ns, sha256 of files up to 1 MB) of every file under `roots`."""
    found = {}
    for root in roots:
        for path in ([root] if root.is_file() else sorted(root.rglob("*")) if root.exists() else []):
            if path.is_file():
                stat = path.stat()
                digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                          if stat.st_size <= 2**20 else "")
                found[str(path)] = (stat.st_size, stat.st_mtime_ns, digest)
    return found


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message and len(message) < 600, repr(message[:300])
    assert " object at 0x" not in message, message  # named by what it is, not by an address
    return message


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print("\ncases tried per entry point: " + ", ".join(f"{name} {count}"
                                                          for name, count in sorted(TRIED.items())))


# ------------------------------------------------------------------------------------ params file

COMMITTED = yaml.safe_load((ROOT / "params.yaml").read_text())


def leaves(tree, path=()):
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, (*path, key))
    yield path


PATHS = [path for path in leaves(COMMITTED) if path]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=24),
                   st.lists(st.integers(-3, 700), max_size=4),
                   st.dictionaries(st.text(max_size=6), st.integers(-2, 2), max_size=2))


@st.composite
def params_files(draw) -> bytes:
    """A params.yaml with one mutation: a value replaced, a key dropped or added, or its bytes
    cut and spliced."""
    kind = draw(st.sampled_from(["value", "value", "drop", "add", "bytes", "top"]))
    if kind == "bytes":
        text = (ROOT / "params.yaml").read_bytes()
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 64)))
        return text[:start] + draw(st.binary(max_size=16)) + text[end:]
    if kind == "top":  # a file whose top level is not a mapping
        return yaml.safe_dump(draw(VALUES)).encode()
    params = copy.deepcopy(COMMITTED)
    path = draw(st.sampled_from(PATHS))
    parent = params
    for key in path[:-1]:
        parent = parent[key]
    if kind == "value":
        parent[path[-1]] = draw(VALUES)
    elif kind == "drop":
        del parent[path[-1]]
    else:
        parent[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
    return yaml.safe_dump(params).encode()


@FUZZ
@given(content=params_files())
def test_any_params_file_is_read_or_refused_in_one_line(content, tmp_path_factory):
    folder = tmp_path_factory.mktemp("params")
    path = folder / "params.yaml"
    path.write_bytes(content)
    before = fingerprint(*WORKSPACE, folder)
    for section in COMMITTED:
        TRIED["params file (load_section)"] += 1
        try:
            load_section(section, path)
        except UserError as error:
            one_line(error)
    try:
        read_params(path)
    except UserError as error:
        one_line(error)
    assert fingerprint(*WORKSPACE, folder) == before


# ---------------------------------------------------------------------------------- image bytes

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMATS = {"PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}, "TIFF": set(MODES),
           "BMP": {"1", "L", "P", "RGB"}, "GIF": {"L", "P"}, "JPEG": {"L", "RGB", "CMYK"}}


@st.composite
def image_files(draw) -> bytes:
    """The bytes of an image of any mode, size and format PIL writes, often damaged; or bytes."""
    from PIL import Image

    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    image_format = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(sorted(FORMATS[image_format])))
    width, height = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    data = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(0, 3))):  # damage: bytes flipped, the end cut off
        if draw(st.booleans()):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        else:
            del data[draw(st.integers(0, len(data) - 1)):]
            if not data:
                break
    return bytes(data)


@FUZZ
@given(data=image_files(), colour=st.booleans())
def test_any_image_bytes_give_pixels_or_one_line(data, colour):
    shape = (32, 32, 3) if colour else (28, 28)
    before = fingerprint(*WORKSPACE)
    TRIED["image bytes (predict)"] += 1
    try:
        pixels = image_pixels("x.img", data, shape)
        assert pixels.shape == shape and pixels.dtype == np.uint8
    except UserError as error:
        assert one_line(error).startswith("x.img: ")
    assert fingerprint(*WORKSPACE) == before


# ---------------------------------------------------------------------------------- review texts


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
       extra=st.lists(st.text(max_size=40), max_size=3))
def test_any_review_bytes_are_text_or_one_line(data, extra):
    from dlprojects.sentiment.predict import check_texts

    before = fingerprint(*WORKSPACE)
    TRIED["review bytes (predict, python -m dlprojects.sentiment)"] += 1
    try:
        check_texts([utf8_text("-", data), *extra])
    except UserError as error:
        one_line(error)
    assert fingerprint(*WORKSPACE) == before


# --------------------------------------------------------------------------------- model folders


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A backprop MLP's folder, as its train stage writes it (random weights)."""
    from test_registry import write_model

    folder = tmp_path_factory.mktemp("model") / "mlp"
    write_model("mlp", folder, np.random.default_rng(1))
    return folder


@FUZZ
@given(target=st.sampled_from(["model.json", "weights"]), offset=st.integers(0, 2**20),
       xor=st.integers(1, 255), cut=st.booleans())
def test_any_damaged_model_folder_loads_or_is_refused_in_one_line(model_folder, target, offset,
                                                                 xor, cut, tmp_path_factory):
    import shutil

    folder = tmp_path_factory.mktemp("damaged") / "mlp"
    shutil.copytree(model_folder, folder)
    files = sorted(path for path in folder.iterdir() if path.is_file() and (
        (path.name == "model.json") == (target == "model.json")))
    path = files[offset % len(files)]
    data = bytearray(path.read_bytes())
    if cut:
        del data[offset % max(len(data), 1):]
    elif data:
        data[offset % len(data)] ^= xor
    path.write_bytes(bytes(data))
    before = fingerprint(*WORKSPACE, folder)
    TRIED["model folders (models.load)"] += 1
    try:
        network = models.load(folder)
        network.probabilities(np.zeros((1, 28, 28), np.uint8))
    except UserError as error:
        one_line(error)
    assert fingerprint(*WORKSPACE, folder) == before


# ----------------------------------------------------------------------------- served HTTP bodies

JSON = st.recursive(st.none() | st.booleans() | st.integers(-300, 300) | st.floats()
                    | st.text(max_size=12),
                    lambda children: st.lists(children, max_size=6)
                    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=40)
KEYS = st.sampled_from(["inputs", "instances", "dataframe_records", "dataframe_split", "params"])
BODIES = st.one_of(st.binary(max_size=512),
                   JSON.map(lambda value: json.dumps(value).encode()),
                   st.dictionaries(KEYS, JSON, min_size=1, max_size=2).map(
                       lambda value: json.dumps(value).encode()))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A ViT logged into a store of its own and served by `python -m dlprojects.serve`."""
    import dataclasses

    import mlflow
    from conftest import committed
    from test_serving import Served, images

    from dlprojects.core.parsing import parse
    from dlprojects.core.serving.images import log_image_classifier
    from dlprojects.core.weights import save_model
    from dlprojects.vit.model import ViT, classifier
    from dlprojects.vit.params import TrainVitParams

    store = tmp_path_factory.mktemp("served")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    folder = store / "vit"
    params = parse(TrainVitParams, committed("train_vit"), "train_vit")
    save_model(ViT(**params.model_kwargs()), folder / "model.safetensors",
               dataclasses.asdict(params))
    models.describe(folder, classifier, "images")
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("fuzz")
        with mlflow.start_run():
            model_uri = log_image_classifier(folder, images(2)).model_uri
    finally:
        mlflow.set_tracking_uri(None)
    with Served(model_uri, uri) as server:
        yield server, store


@FUZZ
@given(body=BODIES, content_type=st.sampled_from(["application/json", "text/csv",
                                                    "application/json; charset=latin-1"]))
def test_any_http_body_gets_an_answer_or_a_short_4xx(served, body, content_type):
    import urllib.error

    server, store = served
    before = fingerprint(*WORKSPACE, store)
    TRIED["HTTP bodies (make serve)"] += 1
    request = urllib.request.Request(f"{server.url}/invocations", data=body,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200 and "predictions" in json.loads(response.read())
    except urllib.error.HTTPError as error:
        raw = error.read()
        assert 400 <= error.code < 500 and len(raw) < 500, (error.code, raw[:300])
        assert "\n" not in json.loads(raw)["message"]
    assert server.process.poll() is None  # still serving
    assert fingerprint(*WORKSPACE, store) == before


# ------------------------------------------------------------------------------- lineage queries


@pytest.fixture(scope="module")
def lineage_project(tmp_path_factory) -> Path:
    """A git clone's shape with an empty MLflow store, for `python -m dlprojects.lineage`."""
    import subprocess

    import mlflow

    folder = tmp_path_factory.mktemp("lineage")
    (folder / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    for command in (["init", "-q"], ["add", "-A"],
                    ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(["git", *command], cwd=folder, check=True)
    mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()  # its tables
    return folder


ARGUMENT = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=40)


@FUZZ
@given(command=st.sampled_from(["run", "exp", "model"]),
       target=ARGUMENT | st.from_regex(r"[0-9a-f]{8,64}", fullmatch=True)
       | st.sampled_from([".", "..", "/", ".git", "mlflow.db", "dvc.lock"]))
def test_any_lineage_query_answers_or_refuses_in_one_line(lineage_project, command, target,
                                                          capsys):
    import sys

    from dlprojects.lineage.query import main

    before = fingerprint(*WORKSPACE, lineage_project)
    TRIED["lineage queries (python -m dlprojects.lineage)"] += 1
    saved = (Path.cwd(), sys.argv, os.environ.pop("MLFLOW_TRACKING_URI", None))
    os.chdir(lineage_project)
    sys.argv = ["lineage", command, "--", target]
    try:
        main()
    except UserError as error:
        one_line(error)
    finally:
        os.chdir(saved[0])
        sys.argv = saved[1]
        if saved[2] is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved[2]
    capsys.readouterr()
    assert fingerprint(*WORKSPACE, lineage_project) == before
