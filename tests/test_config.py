import pytest

from conftest import ROOT, committed
from dlprojects.core.config import DownloadParams, LoopParams, load_section
from dlprojects.core.parsing import ConfigError, as_flat_dict, parse, read_params

LOOP = committed("train_fashion")["loop"]
DOWNLOAD = committed("download")


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
        parse(LoopParams, {**LOOP, **data}, "loop")


def test_a_missing_key_is_named_and_params_yaml_holds_every_default():
    loop = {key: value for key, value in LOOP.items() if key != "threads"}
    with pytest.raises(ConfigError, match=r"^loop\.threads: missing; add it to params\.yaml"):
        parse(LoopParams, loop, "loop")


def test_malformed_params_yaml_is_one_line_that_says_how_to_restore_it(tmp_path):
    (tmp_path / "params.yaml").write_text("train_vit:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"params\.yaml is not valid YAML \(line \d+\); fix it or "
                                          r"restore it with `git checkout"):
        load_section("train_vit", tmp_path / "params.yaml")


def test_nested_sections_check_their_keys():
    with pytest.raises(ConfigError, match=r"download\.bert\.model: 'gpt2' is not one of"):
        parse(DownloadParams, {**DOWNLOAD, "bert": {"mirrors": [], "model": "gpt2"}}, "download")
    with pytest.raises(ConfigError, match=r"download\.imdb\.mirrors\[0\]: expected str"):
        parse(DownloadParams, {**DOWNLOAD, "imdb": {"mirrors": [3]}}, "download")
    with pytest.raises(ConfigError, match=r"download\.mnist\.mirrors: 'ftp://x' is not an http"):
        parse(DownloadParams, {**DOWNLOAD, "mnist": {"mirrors": ["ftp://x"]}}, "download")


def test_ints_are_accepted_where_floats_are_expected_and_flattening():
    params = parse(LoopParams, {**LOOP, "epochs": 3}, "loop")
    assert as_flat_dict(params)["epochs"] == 3
    flat = as_flat_dict(parse(DownloadParams, DOWNLOAD, "download"))
    assert flat["bert.model"] == "all-MiniLM-L6-v2"


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="not found; run from the project root"):
        load_section("download", tmp_path / "params.yaml")


def test_the_full_size_experiment_sets_valid_params_and_runs_as_a_named_dvc_experiment():
    import subprocess
    import sys

    from dlprojects import experiments

    path = ROOT / "experiments/full-size.yaml"
    values = experiments.overrides(path)
    assert len(values) >= 15
    experiments.apply(read_params(ROOT / "params.yaml"), values)  # raises when a key is gone
    shown = subprocess.run([sys.executable, "-m", "dlprojects.experiments", "run", str(path),
                            "--dry-run"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert shown.stdout.startswith("dvc exp run -n full-size -S embed_imdb.train_samples=0 ")
    assert "-S train_vit.loop.epochs=100" in shown.stdout


def test_an_experiment_with_a_bad_value_or_an_unknown_key_is_refused(tmp_path):
    from dlprojects import experiments

    params = read_params(ROOT / "params.yaml")
    with pytest.raises(ConfigError, match=r"^train_vit\.heads: 5 does not divide dim 64"):
        experiments.apply(params, {"train_vit.heads": 5})
    with pytest.raises(ConfigError, match=r"^train_vit\.loop\.epoch: not a param of params\.yaml"):
        experiments.apply(params, {"train_vit.loop.epoch": 5})


def test_mlproject_entry_points_name_no_project_and_use_every_parameter():
    """The entry points work for any declared project: a stage name and a param to set are
    parameters, not one entry per stage (which a new project would have to add)."""
    import re

    import yaml

    from dlprojects.core.projects import declared

    entry_points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    text = (ROOT / "MLproject").read_text()
    for project in declared():
        assert not re.search(rf"\b{project.name}\b", text), project.name
    assert entry_points["main"]["command"] == "dvc repro"
    for name, entry in entry_points.items():
        used = set(re.findall(r"\{(\w+)\}", entry["command"]))
        assert used == set(entry.get("parameters", {})), name
