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


def test_the_full_size_experiment_of_the_makefile_sets_valid_params():
    import re

    import yaml

    from dlprojects.config import SECTIONS

    makefile = (ROOT / "Makefile").read_text()
    block = makefile.split("FULL_SIZE :=", 1)[1].split("\n\n", 1)[0]
    overrides = re.findall(r"-S ([\w.]+)=(\S+)", block)
    assert len(overrides) >= 15
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for path, value in overrides:
        *parents, key = path.split(".")
        target = params
        for parent in parents:
            target = target[parent]  # a KeyError here: the Makefile names a param that is gone
        assert key in target, f"{path} is not in params.yaml"
        target[key] = yaml.safe_load(value)
    for section in ("embed_imdb", "train_sentiment", "train_vit"):
        parse(SECTIONS[section], params[section], section)  # raises ConfigError when invalid


def test_mlproject_parameters_set_real_params_and_default_to_the_committed_values():
    import re

    import yaml
    from mlflow.projects._project_spec import load_project

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    project = load_project(str(ROOT))
    checked = 0
    for name, entry in project._entry_points.items():
        for path, parameter in re.findall(r"-S ([\w.]+)=\{(\w+)\}", entry.command):
            value = params
            for key in path.split("."):
                value = value[key]  # a KeyError: the entry point sets a param that is gone
            declared = entry.parameters[parameter]
            assert declared.type in ("int", "float", "string"), (name, parameter)
            assert str(declared.default) == str(value), f"{name}: {parameter} default"
            checked += 1
    assert checked >= 10
