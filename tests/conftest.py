"""Shared fixtures: the offline environment, and the real data sets fetched once per session."""

from __future__ import annotations

import dlprojects  # noqa: F401  first: the test process runs the pinned numerics, like a stage

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlprojects.core.projects import smoke_params

OFFLINE = {
    "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "MPLBACKEND": "Agg",
}
os.environ.update(OFFLINE)
os.environ.setdefault("GIT_AUTHOR_NAME", "dlprojects-tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@dlprojects.invalid")
os.environ.setdefault("GIT_COMMITTER_NAME", "dlprojects-tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@dlprojects.invalid")

ROOT = Path(__file__).resolve().parents[1]


def committed(section: str) -> dict:
    """Section `section` of the committed params.yaml: every param, with its default."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())[section]


def tool_env() -> dict[str, str]:
    """For `dvc`, `mlflow` and stage subprocesses: the offline environment, the venv first on PATH,
    system metrics sampled every 0.2 s, and no MLFLOW_TRACKING_URI (an in-process `mlflow.set_tracking_uri` exports it): each project
    uses its own mlflow.db."""
    env = {**os.environ, **OFFLINE,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"}  # smoke runs last seconds
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def copy_working_tree(destination: Path) -> Path:
    """The tracked and untracked-but-not-ignored files of the checkout, copied to `destination`."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def offline_mirrors(source):
    """The source with only its package-registry mirrors (those reachable without the internet)."""
    from dataclasses import replace

    from dlprojects.core.data.mirrors import Url

    return replace(source, mirrors=tuple(m for m in source.mirrors if not isinstance(m[0], Url)))


# The files that take minutes, each building a smoke pipeline of its own: `make test` runs them
# first, one to a worker, and the other files fill in beside them (with --no-loadscope-reorder)
LONGEST_FIRST = ("test_pipeline.py", "test_team.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture(scope="session")
def raw_data(tmp_path_factory) -> Path:
    """data/raw/<name> for every source, fetched for real from the offline mirrors, once."""
    from dlprojects.core.data.download import download
    from dlprojects.core.data.sources import SOURCE_NAMES, source_for

    root = tmp_path_factory.mktemp("raw")
    for name in SOURCE_NAMES:
        download(offline_mirrors(source_for(name)), root / name)
    return root


@pytest.fixture
def chdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def own_tracking_store(monkeypatch):
    """No MLFLOW_TRACKING_URI from the shell or from an earlier test (`mlflow.set_tracking_uri`
    exports it, and stage subprocesses would inherit it): each test names its own store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------ the smoke pipeline, once


def merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and key in base else value
    return merged


def checkout_env(cwd: Path) -> dict[str, str]:
    """tool_env(), running the code of the checkout at `cwd` when it is one (its src/ first on
    the path: a project added there is importable, as `make setup` makes it in a real clone)."""
    env = tool_env()
    if (Path(cwd) / "src/dlprojects").is_dir():
        env["PYTHONPATH"] = str(Path(cwd) / "src")
    return env


def run(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=checkout_env(cwd), capture_output=True,
                            text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def smoke_clone(clone: Path) -> Path:
    """A git repository at `clone` of the working tree, with smoke-sized params committed."""
    copy_working_tree(clone)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    smoke = smoke_params()
    (clone / "params.yaml").write_text(yaml.safe_dump(merge(params, smoke), sort_keys=False))
    run(["git", "init", "-q"], clone)
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-qm", "smoke"], clone)
    return clone


EXAMPLE = ROOT / "examples/digits"  # README, "Add a project"
EXAMPLE_TAG = "example-project"  # the commit that adds it, in the smoke clone


def add_example_project(clone: Path) -> None:
    """README's "Add a project", in `clone`: the example's folder and its params section (at its
    smoke size), dvc.yaml written again; committed and tagged EXAMPLE_TAG."""
    shutil.copytree(EXAMPLE / "digits", clone / "src/dlprojects/digits")
    section = yaml.safe_load((EXAMPLE / "params.yaml").read_text())
    smoke = yaml.safe_load((EXAMPLE / "digits/project.yaml").read_text())["smoke"]
    params = yaml.safe_load((clone / "params.yaml").read_text())
    (clone / "params.yaml").write_text(yaml.safe_dump({**params, **merge(section, smoke)},
                                                      sort_keys=False))
    run([sys.executable, "-m", "dlprojects.stages"], clone)
    run(["git", "add", "-A"], clone)
    run(["git", "commit", "-qm", "add the example project"], clone)
    run(["git", "tag", EXAMPLE_TAG], clone)


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A clone of the working tree with smoke-sized params and the example project added, after a
    full `dvc repro` (test_pipeline's tests build on it, in file order)."""
    clone = smoke_clone(tmp_path_factory.mktemp("e2e") / "dlprojects")
    add_example_project(clone)
    run(["dvc", "repro"], clone, timeout=1800)
    return clone
