"""The download stages' machinery: real offline mirrors, and URL mirrors on a 127.0.0.1 server."""

from __future__ import annotations

import gzip
import http.server
import json
import shutil
import threading
from functools import partial
from pathlib import Path

import pytest

from dlprojects.core.data.download import DownloadError, download, verify
from dlprojects.core.data.idx import read_idx
from dlprojects.core.data.sources import IDX_NAMES, MNIST, SOURCE_NAMES, Source, _gunzip_idx, _gz_urls, source_for

pytestmark = pytest.mark.network


@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_each_offline_mirror_yields_the_verified_canonical_files(raw_data, name):
    folder = raw_data / name
    assert verify(source_for(name), folder) == []
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
        sorted(source_for(name).files)


def test_mnist_and_fashion_mnist_load_in_torchvision(raw_data):
    import torchvision

    mnist = torchvision.datasets.MNIST(raw_data / "mnist", train=True, download=False)
    fashion = torchvision.datasets.FashionMNIST(raw_data / "fashion_mnist", train=False,
                                                download=False)
    assert (len(mnist), len(fashion)) == (60_000, 10_000)
    assert read_idx(raw_data / "mnist/MNIST/raw/t10k-labels-idx1-ubyte")[:3].tolist() == [7, 2, 1]


def test_imdb_splits_load_in_datasets(raw_data):
    import datasets

    imdb = datasets.load_dataset("json", data_files={
        split: str(raw_data / f"imdb/{split}.jsonl") for split in ("train", "test")})
    for split in ("train", "test"):
        assert imdb[split].num_rows == 25_000
        assert sum(imdb[split]["label"]) == 12_500
    assert any(text.startswith("Bromwell High is a cartoon comedy") for text in imdb["train"]["text"])
    assert any(text.startswith("Once again Mr. Costner") for text in imdb["test"]["text"])
    assert any("<br />" in text for text in imdb["test"]["text"][:100])


def test_bert_folder_loads_offline(raw_data):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(raw_data / "bert")
    tokenizer = AutoTokenizer.from_pretrained(raw_data / "bert")
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (384, 6)
    assert tokenizer("a great film")["input_ids"][0] == tokenizer.cls_token_id


# ---------------------------------------------------------------------- URL mirrors on 127.0.0.1


@pytest.fixture
def server(tmp_path, raw_data):
    """Serves good/, truncated/ and tampered/ copies of the MNIST .gz files on 127.0.0.1."""
    site = tmp_path / "site"
    canonical = raw_data / "mnist/MNIST/raw"
    for kind in ("good", "truncated", "tampered"):
        (site / kind).mkdir(parents=True)
        for name in IDX_NAMES:
            data = (canonical / name).read_bytes()
            if kind == "tampered":  # a valid gzip of the wrong bytes: only the hash can tell
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            packed = gzip.compress(data, compresslevel=1, mtime=0)  # fast: the bytes inside count
            if kind == "truncated":
                packed = packed[: len(packed) // 2]
            (site / kind / f"{name}.gz").write_bytes(packed)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _url_source(*bases: str) -> Source:
    return Source(name="mnist", files=MNIST.files,
                  mirrors=tuple((_gz_urls(base), _gunzip_idx("MNIST")) for base in bases))


def test_bad_mirrors_are_reported_and_the_next_is_tried(server, tmp_path):
    lines = []
    target = tmp_path / "data/raw/mnist"
    answered = download(_url_source(f"{server}/truncated/", f"{server}/tampered/",
                                    f"{server}/missing/", f"{server}/good/"),
                        target, log=lines.append)
    assert answered == f"{server}/good/"
    assert verify(MNIST, target) == []
    assert "not a complete gzip file" in lines[0]
    assert "does not match its pinned md5" in lines[1]
    assert "404" in lines[2]
    assert [p.name for p in target.parent.iterdir()] == ["mnist"]  # no scratch folder left


def test_when_no_mirror_works_good_data_stays_and_the_error_says_what_to_do(server, tmp_path,
                                                                             raw_data):
    target = tmp_path / "data/raw/mnist"
    shutil.copytree(raw_data / "mnist", target)
    (target / "MNIST/raw/t10k-labels-idx1-ubyte").write_bytes(b"damaged")  # forces a download
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    with pytest.raises(DownloadError) as error:
        download(_url_source(f"{server}/truncated/", f"{server}/tampered/"), target,
                 log=lambda line: None)
    message = str(error.value)
    assert f"tried: {server}/truncated/, {server}/tampered/" in message
    assert "download.mnist.mirrors in params.yaml" in message and "\n" not in message
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["mnist"]


def test_verified_data_is_not_downloaded_again(tmp_path, raw_data):
    target = tmp_path / "mnist"
    shutil.copytree(raw_data / "mnist", target)
    assert download(_url_source("http://127.0.0.1:9/"), target, log=lambda line: None) == \
        "already present"


def test_a_user_mirror_from_params_serves_canonical_paths(tmp_path, raw_data):
    """download.<name>.mirrors: a base URL with the canonical files at their canonical paths."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(raw_data / "mnist"))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        target = tmp_path / "mnist"
        assert download(_url_source(), target, extra_mirrors=[url], log=lambda line: None) == url
        assert verify(MNIST, target) == []
    finally:
        httpd.shutdown()


def test_the_stage_script_reports_one_line_and_exit_status_2(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "params.yaml").write_text(json.dumps({"download": {"mnist": {"mirros": []}}}))
    result = subprocess.run([sys.executable, str(root / "pipeline/download.py"), "mnist",
                             "data/raw/mnist"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: download.mnist.mirros: unknown key (known: mirrors)"
    assert not (tmp_path / "data").exists()
