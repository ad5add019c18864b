from pathlib import Path

import pytest

from dlprojects.config import ConfigError, DownloadParams, LoopParams, as_flat_dict, load_section, parse

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_params_load():
    params = load_section("download", ROOT / "params.yaml")
    assert isinstance(params, DownloadParams)
    assert params.bert.model == "all-MiniLM-L6-v2"


@pytest.mark.parametrize(("data", "message"), [
    ({"epochs": 0}, "loop.epochs: 0 must be at least 1"),
    ({"epochs": "ten"}, "loop.epochs: expected int, got 'ten'"),
    ({"epochs": True}, "loop.epochs: expected int, got True"),
    ({"device": "tpu"}, "loop.device: 'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    ({"epoch": 3}, "loop.epoch: unknown key"),
])
def test_bad_values_name_their_key(data, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse(LoopParams, data, "loop")


def test_nested_sections_check_their_keys():
    with pytest.raises(ConfigError, match=r"download\.bert\.model: 'gpt2' is not one of"):
        parse(DownloadParams, {"bert": {"model": "gpt2"}}, "download")
    with pytest.raises(ConfigError, match=r"download\.imdb\.mirrors\[0\]: expected str"):
        parse(DownloadParams, {"imdb": {"mirrors": [3]}}, "download")
    with pytest.raises(ConfigError, match=r"download\.mnist\.mirrors: 'ftp://x' is not an http"):
        parse(DownloadParams, {"mnist": {"mirrors": ["ftp://x"]}}, "download")


def test_ints_are_accepted_where_floats_are_expected_and_flattening():
    params = parse(LoopParams, {"epochs": 3}, "loop")
    assert as_flat_dict(params)["epochs"] == 3
    flat = as_flat_dict(parse(DownloadParams, {}, "download"))
    assert flat["bert.model"] == "all-MiniLM-L6-v2"


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="not found; run from the project root"):
        load_section("download", tmp_path / "params.yaml")
