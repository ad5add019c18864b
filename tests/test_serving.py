"""Models anyone can call: each model family logged as a pyfunc with a signature and an input
example, raw images or review texts in, named class probabilities and the label out; bad requests
refused with one message; served over real HTTP; and the predict command for files."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, committed, free_port, tool_env
from mlflow.exceptions import MlflowException
from test_registry import write_model
from test_sentiment import write_tiny_bert

from dlprojects.backprop import numpy_nn
from dlprojects.fashion.params import TrainFashionParams
from dlprojects.vit.params import TrainVitParams
from dlprojects.core.data.images import CLASS_NAMES, normalised_tensor
from dlprojects.fashion.model import DenseClassifier
from dlprojects.fashion.model import classifier as dense_classifier
from dlprojects.core.errors import UserError
from dlprojects.core.parsing import parse
from dlprojects.sentiment.bert import bert_identity, read_bert_config
from dlprojects.sentiment.model import SentimentRNN, save_rnn
from dlprojects.sentiment.predict import SentimentPredictor
from dlprojects.core.serving import images as image_models
from dlprojects.core.serving import reviews as review_models
from dlprojects.core import models
from dlprojects.vit.model import ViT
from dlprojects.vit.model import classifier as vit_classifier
from dlprojects.core.weights import save_model

CPU = torch.device("cpu")
REVIEWS = ["A moving, beautifully shot film.", "Two hours I will never get back.",
           "great wonderful film<br /><br />with an awful ending"]


def images(count: int, seed: int = 0, shape=(28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A model folder of each family, written as its train stage writes it (random weights)."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    write_model("mlp", root / "mlp", np.random.default_rng(1))
    write_model("cnn", root / "cnn", np.random.default_rng(2))
    fashion = parse(TrainFashionParams, committed("train_fashion"), "train_fashion")
    dense = DenseClassifier(**dataclasses.asdict(fashion.variant("improved"))).eval()
    save_model(dense, root / "fashion/model.safetensors", fashion.resolved("improved"))
    models.describe(root / "fashion", dense_classifier, "images")
    vit_params = parse(TrainVitParams, committed("train_vit"), "train_vit")
    save_model(ViT(**vit_params.model_kwargs()), root / "vit/model.safetensors",
               dataclasses.asdict(vit_params))
    models.describe(root / "vit", vit_classifier, "images")
    bert = write_tiny_bert(root / "bert")
    config = read_bert_config(bert, 48, "max_length", [-2, -1])
    embedding = {"bert": bert_identity(config), "max_length": 48, "truncation": "head_tail",
                 "head_tokens": 8, "bert_layers": [-2, -1], "amp": True}
    save_rnn(SentimentRNN(input_size=32, hidden_size=8), root / "sentiment", embedding=embedding,
             train_params={"loop": {"amp": True}})
    return {"mlp": root / "mlp", "cnn": root / "cnn", "fashion": root / "fashion",
            "vit": root / "vit", "sentiment": root / "sentiment", "bert": bert}


@pytest.fixture(scope="module")
def store(tmp_path_factory, folders):
    """Each model logged (not registered) into a SQLite store: {family: runs:/ URI}."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("serving")
    logged = {}
    try:
        with mlflow.start_run():
            for family in ("mlp", "cnn", "fashion", "vit"):
                info = image_models.log_image_classifier(folders[family], images(2))
                logged[family] = info.model_uri
            bert = root / "bert-copy"  # removed after logging: the model must carry its own
            shutil.copytree(folders["bert"], bert)
            logged["sentiment"] = review_models.log_review_classifier(folders["sentiment"], bert,
                                                                REVIEWS[:2]).model_uri
            shutil.rmtree(bert)
        yield {"tracking_uri": uri, **logged}
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(autouse=True)
def tracking(store):
    mlflow.set_tracking_uri(store["tracking_uri"])
    yield
    mlflow.set_tracking_uri(None)


def direct_probabilities(family: str, folder: Path, batch: np.ndarray) -> np.ndarray:
    """What the network computes on the pipeline's own input path (as evaluate does)."""
    if family in ("mlp", "cnn"):
        from dlprojects.backprop import network

        model, params = network.load(folder)
        model.eval()
        return numpy_nn.softmax(model.forward(network.as_inputs(params["kind"], batch)))
    from dlprojects.core.weights import load_params, load_weights

    params = load_params(folder / "model.safetensors")
    if family == "fashion":
        model = DenseClassifier(**params["variants"][params["variant"]])
    else:
        model = ViT(**parse(TrainVitParams, params, "train_vit").model_kwargs())
    load_weights(model, folder / "model.safetensors").eval()
    with torch.inference_mode():
        return model(normalised_tensor(batch, "fashion_mnist", CPU)).softmax(-1).double().numpy()


# ---------------------------------------------------------------------------------- in process


@pytest.mark.parametrize("family", ["mlp", "cnn", "fashion", "vit"])
def test_an_image_model_takes_uint8_images_and_names_its_classes(family, folders, store):
    model = mlflow.pyfunc.load_model(store[family])
    schema = model.metadata.get_input_schema()
    assert schema.is_tensor_spec() and schema.inputs[0].type == np.dtype(np.uint8)
    assert schema.inputs[0].shape == (-1, 28, 28)
    assert model.metadata.saved_input_example_info["type"] == "ndarray"
    batch = images(7, seed=3)
    frame = model.predict(batch)
    classes = CLASS_NAMES["mnist" if family in ("mlp", "cnn") else "fashion_mnist"]
    assert list(frame.columns) == [*classes, "label"]
    expected = direct_probabilities(family, folders[family], batch)
    np.testing.assert_allclose(frame[classes].to_numpy(), expected, rtol=1e-5, atol=1e-7)
    assert list(frame["label"]) == [classes[i] for i in expected.argmax(1)]


@pytest.mark.parametrize("batch, message", [
    (images(0), "Failed to enforce schema|the batch is empty"),
    (images(2, shape=(28, 20)), "Shape of input"),
    (images(2).astype(np.float64) / 255, "dtype of input float64 does not match"),
    (images(image_models.MAX_IMAGES + 1), f"send at most {image_models.MAX_IMAGES}"),
])
def test_a_bad_image_batch_is_refused_with_one_clear_message(batch, message, store):
    model = mlflow.pyfunc.load_model(store["fashion"])
    with pytest.raises(MlflowException, match=message):
        model.predict(batch)


def test_the_review_model_carries_its_bert_and_scores_text_as_predict_does(folders, store):
    model = mlflow.pyfunc.load_model(store["sentiment"])  # the BERT it was logged with is gone
    frame = model.predict(pd.DataFrame({"review": REVIEWS}))
    assert list(frame.columns) == ["negative", "positive", "label"]
    predictor = SentimentPredictor.load(folders["sentiment"], folders["bert"], device=CPU)
    np.testing.assert_allclose(frame["positive"], predictor(REVIEWS), rtol=1e-6)
    np.testing.assert_allclose(frame["negative"] + frame["positive"], 1.0, rtol=1e-12)
    assert list(frame["label"]) == ["positive" if p >= 0.5 else "negative"
                                    for p in frame["positive"]]
    assert model.metadata.get_input_schema().input_names() == ["review"]


@pytest.mark.parametrize("reviews, message", [
    ([], "Failed to enforce schema|the batch is empty"),
    (["A fine film.", "  <br />"], "review 2 of 2 is empty"),
    ([3, 4], "Can not safely convert int64"),
    (["A fine film.", "42"], "review 2 of 2 has no words"),
    (["fine"] * (review_models.MAX_REVIEWS + 1), f"send at most {review_models.MAX_REVIEWS}"),
])
def test_a_bad_review_batch_is_refused_with_one_clear_message(reviews, message, store):
    model = mlflow.pyfunc.load_model(store["sentiment"])
    with pytest.raises(MlflowException, match=message):
        model.predict(pd.DataFrame({"review": reviews}))


def test_logged_models_declare_pinned_requirements_and_carry_no_pickle(store):
    from importlib.metadata import version

    for family in ("fashion", "sentiment"):
        local = Path(mlflow.artifacts.download_artifacts(store[family]))
        pins = (local / "requirements.txt").read_text().split()
        assert f"torch=={version('torch').split('+')[0]}" in pins
        assert f"numpy=={version('numpy')}" in pins
        assert not list(local.rglob("*.pkl")), "a pickled python_model: loading it runs its bytes"
    assert any(pin.startswith("transformers==") for pin in (
        Path(mlflow.artifacts.download_artifacts(store["sentiment"])) / "requirements.txt"
    ).read_text().split())


# ------------------------------------------------------------------------------------- over HTTP


def post(url: str, body: bytes | dict) -> tuple[int, dict]:
    status, raw = post_raw(url, body)
    return status, json.loads(raw or b"{}")


def post_raw(url: str, body: bytes | dict) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/invocations", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Served:
    """`python -m dlprojects.serve <uri>` (what `make serve` runs) on a free port of 127.0.0.1,
    with no venv on PATH: it needs no activated venv."""

    def __init__(self, model_uri: str, tracking_uri: str, cwd: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**tool_env(), "MLFLOW_TRACKING_URI": tracking_uri, "PATH": "/usr/bin:/bin"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dlprojects.serve", model_uri, "--port", str(self.port)],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.perf_counter()
        while time.perf_counter() - started < 120:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.process.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/ping", timeout=1).read()
                self.cold_start = time.perf_counter() - started
                return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise AssertionError(f"{model_uri} was not served within 120 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def test_a_served_image_model_answers_as_it_does_in_process_and_refuses_bad_requests(store):
    model = mlflow.pyfunc.load_model(store["vit"])
    batch = images(3, seed=5)
    offline = model.predict(batch)
    with Served(store["vit"], store["tracking_uri"]) as server:
        status, answer = post(server.url, {"inputs": batch.tolist()})
        assert status == 200
        served = pd.DataFrame(answer["predictions"])
        assert list(served["label"]) == list(offline["label"])
        np.testing.assert_allclose(served[CLASS_NAMES["fashion_mnist"]],
                                   offline[CLASS_NAMES["fashion_mnist"]], atol=1e-5)
        for bad in ({"inputs": images(2, shape=(20, 28)).tolist()},  # wrong shape
                    {"inputs": "a shoe"},                            # a string, not pixels
                    {"inputs": np.full((1, 28, 28), 300).tolist()},  # not a uint8
                    {"inputs": []},                                  # empty batch
                    {"inputs": images(image_models.MAX_IMAGES + 1).tolist()},  # oversized
                    b"not json"):
            status, answer = post(server.url, bad)
            assert 400 <= status < 500 and answer.get("message"), (bad if isinstance(bad, bytes)
                                                                  else str(bad)[:80], status)
        assert post(server.url, {"inputs": batch.tolist()})[0] == 200  # still serving


def test_a_served_model_answers_any_body_in_a_short_line_and_refuses_one_over_its_limit(store):
    with Served(store["fashion"], store["tracking_uri"]) as server:
        for body in (b'{"inputs": "' + b"A" * 5_000_000 + b'"}',     # 5 MB of text for pixels
                     json.dumps({"inputs": np.zeros((2000, 20, 28), int).tolist()}).encode(),
                     np.random.default_rng(0).bytes(5_000_000),      # 5 MB of garbage
                     b'{"dataframe_split": {"columns": ["' + b"c" * 100_000 + b'"]}}'):
            status, raw = post_raw(server.url, body)
            message = json.loads(raw)["message"]
            assert status == 400 and len(raw) < 500 and "\n" not in message, (status, raw[:200])
            assert "A" * 50 not in message and "0, 0, 0, 0, 0, 0" not in message, message
        assert "batch is empty: send at least one image" in post(server.url, {"inputs": []})[1][
            "message"]
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(17 * 2**20))
        connection.endheaders()  # the body is never sent: refused on its announced length
        response = connection.getresponse()
        assert response.status == 413 and "send the batch in parts" in json.loads(
            response.read())["message"]
        connection.close()
        assert post(server.url, {"inputs": images(2).tolist()})[0] == 200  # still serving


def test_serve_refuses_a_taken_port_and_make_serve_a_missing_model_in_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.perf_counter()
        refused = subprocess.run([sys.executable, "-m", "dlprojects.serve", "models:/vit@champion",
                                  "--port", str(port)], capture_output=True, text=True, cwd=ROOT,
                                 env=tool_env(), timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert f"127.0.0.1:{port}: cannot listen there" in refused.stderr
    assert time.perf_counter() - started < 30  # before any model loads
    unnamed = subprocess.run(["make", "-s", "serve"], capture_output=True, text=True, cwd=ROOT,
                             env=tool_env(), timeout=120)
    assert unnamed.returncode != 0 and "name the model: make serve MODEL=" in unnamed.stderr


def test_a_served_review_model_scores_text_and_refuses_a_number(store):
    model = mlflow.pyfunc.load_model(store["sentiment"])
    offline = model.predict(pd.DataFrame({"review": REVIEWS}))
    with Served(store["sentiment"], store["tracking_uri"]) as server:
        status, answer = post(server.url, {"inputs": REVIEWS})
        assert status == 200
        served = pd.DataFrame(answer["predictions"])
        np.testing.assert_allclose(served["positive"], offline["positive"], atol=1e-5)
        records = {"dataframe_records": [{"review": text} for text in REVIEWS]}
        assert post(server.url, records)[1] == answer
        for bad in ({"inputs": [42]}, {"inputs": [""]}, {"inputs": []},
                    {"inputs": ["fine"] * (review_models.MAX_REVIEWS + 1)}):
            status, answer = post(server.url, bad)
            assert 400 <= status < 500 and answer.get("message"), (str(bad)[:80], status)
        assert post(server.url, {"inputs": REVIEWS[:1]})[0] == 200


# ------------------------------------------------------------------------------ predict command


def predict(*args: str, stdin: bytes = b"", tracking_uri: str = "") -> subprocess.CompletedProcess:
    env = {**tool_env(), **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {})}
    return subprocess.run([sys.executable, "-m", "dlprojects.predict", *args], input=stdin,
                          capture_output=True, cwd=ROOT, env=env, timeout=300)


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a greyscale PNG of width x height (its header only: enough to open)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def test_predict_reads_image_files_of_any_size_from_a_folder_or_the_registry(folders, store,
                                                                               tmp_path):
    from PIL import Image

    big = np.kron(images(1, seed=7)[0], np.ones((3, 3), dtype=np.uint8))  # 84x84, grey
    (tmp_path / "big.png").write_bytes(png(big))
    colour = np.stack([images(1, seed=8, shape=(40, 30))[0]] * 3, axis=-1)
    (tmp_path / "colour.png").write_bytes(png(colour))
    expected_pixels = [np.asarray(Image.fromarray(big).resize((28, 28), Image.Resampling.LANCZOS)),
                       np.asarray(Image.fromarray(colour).convert("L").resize(
                           (28, 28), Image.Resampling.LANCZOS))]
    expected = direct_probabilities("fashion", folders["fashion"], np.stack(expected_pixels))
    for model, tracking_uri in ((str(folders["fashion"]), ""),
                                (store["fashion"], store["tracking_uri"])):
        result = predict(model, str(tmp_path / "big.png"), "-", tracking_uri=tracking_uri,
                         stdin=(tmp_path / "colour.png").read_bytes())
        assert result.returncode == 0, result.stderr.decode()
        header, *rows = [line.split(",") for line in result.stdout.decode().splitlines()]
        assert header == ["file", "label", *CLASS_NAMES["fashion_mnist"]]
        assert [row[0] for row in rows] == [str(tmp_path / "big.png"), "-"]
        np.testing.assert_allclose([[float(v) for v in row[2:]] for row in rows], expected,
                                   atol=2e-6)


def test_predict_scores_review_files_like_the_served_model(folders, store, tmp_path):
    (tmp_path / "review.txt").write_text(REVIEWS[0], encoding="utf-8")
    result = predict(str(folders["sentiment"]), str(tmp_path / "review.txt"), "-",
                     "--bert", str(folders["bert"]), stdin=REVIEWS[1].encode())
    assert result.returncode == 0, result.stderr.decode()
    rows = [line.split(",") for line in result.stdout.decode().splitlines()[1:]]
    offline = mlflow.pyfunc.load_model(store["sentiment"]).predict(
        pd.DataFrame({"review": REVIEWS[:2]}))
    np.testing.assert_allclose([float(row[3]) for row in rows], offline["positive"], atol=2e-6)


@pytest.mark.parametrize("family, data, message", [
    ("fashion", b"\x89PNG\r\n\x1a\n broken", "-: not an image this command reads"),
    ("fashion", b"", "-: not an image this command reads"),
    ("fashion", b"a review", "-: not an image this command reads"),
    ("fashion", png_header(20_000, 20_000), "-: more pixels than this command reads"),
    ("sentiment", b"\xff\xfe\x00bad", "-: not UTF-8 text"),
    ("sentiment", b"   ", "review 1 of 1 is empty"),
])
def test_predict_answers_any_bytes_with_one_error_line(family, data, message, folders):
    result = predict(str(folders[family]), "-", "--bert", str(folders["bert"]), stdin=data)
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr.decode() and "Traceback" not in result.stderr.decode()



def test_predict_scales_16_bit_pixels_from_their_range_and_refuses_what_has_none():
    from PIL import Image

    from dlprojects.predict import image_pixels

    wide = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 83)  # 0 to 64,989
    pixels = image_pixels("wide.png", png(wide), (28, 28))
    np.testing.assert_array_equal(pixels, np.rint(wide * (255 / 65535)).astype(np.uint8))
    assert pixels.max() == 253  # PIL's own conversion would clip most of them to 255
    narrow = images(1, seed=3)[0]
    np.testing.assert_array_equal(image_pixels("eight.png", png(narrow), (28, 28)), narrow)
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), 7.5, dtype=np.float32)).save(buffer, format="TIFF")
    with pytest.raises(UserError, match=r"F pixels from 7.5 to 7.5 have no range"):
        image_pixels("float.tif", buffer.getvalue(), (28, 28))


def test_predict_refuses_an_image_too_large_to_decode_in_one_line():
    from dlprojects.predict import image_pixels

    for side in (9_000, 20_000):  # over this command's limit; over twice PIL's own
        with pytest.raises(UserError, match=rf"{side}x{side} pixels is more than this command "
                                            rf"reads|more pixels than this command reads"):
            image_pixels("bomb.png", png_header(side, side), (28, 28))


def test_predict_names_a_missing_model_in_one_line(store, tmp_path):
    for model in ("models:/no-such-model@champion", str(tmp_path / "nowhere")):
        result = predict(model, "-", stdin=b"x", tracking_uri=store["tracking_uri"])
        assert result.returncode == 2 and "Traceback" not in result.stderr.decode()
        assert len(result.stderr.decode().strip().splitlines()) == 1, result.stderr.decode()


def test_predict_checks_its_files_before_it_loads_a_registered_model(folders, tmp_path):
    """The model's signature says what it takes: files are checked against it before the model
    loads. Its weights removed from the store, a bad file is still named first."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "order", artifact_location=(tmp_path / "artifacts").as_uri()))
    with mlflow.start_run():
        info = image_models.log_image_classifier(folders["fashion"], images(2))
    for weights in (tmp_path / "artifacts").rglob("model.safetensors"):
        weights.unlink()
    note, shoe = tmp_path / "note.txt", tmp_path / "shoe.png"
    note.write_bytes(b"not an image")
    shoe.write_bytes(png(images(1)[0]))
    refused = predict(info.model_uri, str(shoe), str(note), tracking_uri=uri)
    assert refused.returncode == 2 and refused.stderr.decode().strip().splitlines() == [
        f"error: {note}: not an image this command reads (PNG, JPEG, GIF, BMP, TIFF, ...): no "
        f"known image format"]
    unloadable = predict(info.model_uri, str(shoe), tracking_uri=uri)
    stderr = unloadable.stderr.decode().strip()  # the load's own error, once files are fine
    assert unloadable.returncode == 2 and "model.safetensors" in stderr and "\n" not in stderr


def test_predict_outside_a_project_says_where_the_store_should_be(tmp_path):
    """No dvc.yaml above and no MLFLOW_TRACKING_URI: one line, and no empty mlflow.db left."""
    result = subprocess.run([sys.executable, "-m", "dlprojects.predict", "models:/vit@champion",
                             "-"], input=b"x", capture_output=True, cwd=tmp_path, env=tool_env(),
                            timeout=120)
    assert result.returncode == 2
    assert "no MLflow store at" in result.stderr.decode() and "MLFLOW_TRACKING_URI" in (
        result.stderr.decode())
    assert list(tmp_path.iterdir()) == []



@pytest.mark.slow
def test_the_review_model_loads_where_only_its_requirements_are_installed(store, tmp_path):
    """A fresh environment with the packages the model's requirements.txt pins and nothing else
    of this project's: it loads (its code travels with it) and answers as here."""
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    local = Path(mlflow.artifacts.download_artifacts(store["sentiment"]))
    env = tmp_path / "env"
    for command in ([uv, "venv", "-q", str(env), "--python", sys.executable],
                    [uv, "pip", "install", "-q", "--python", str(env / "bin/python"), "-r",
                     str(local / "requirements.txt")]):
        subprocess.run(command, check=True, capture_output=True, timeout=600)
    script = ("import sys, mlflow, pandas as pd\n"
              "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
              "print(model.predict(pd.DataFrame({'review': sys.argv[2:]})).to_json())")
    result = subprocess.run([str(env / "bin/python"), "-c", script, str(local), *REVIEWS],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"],
                                 "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert result.returncode == 0, result.stderr[-2000:]
    there = pd.read_json(io.StringIO(result.stdout.splitlines()[-1]))
    here = mlflow.pyfunc.load_model(store["sentiment"]).predict(pd.DataFrame({"review": REVIEWS}))
    np.testing.assert_allclose(there["positive"], here["positive"], atol=1e-6)
