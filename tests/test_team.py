"""The team's servers (`python -m dlprojects.team`): PostgreSQL, a SeaweedFS S3 store and `mlflow
server` with logins, all on 127.0.0.1 under a project's .team/, and no one getting in who should
not."""

from __future__ import annotations

import base64
import json
import random
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import copy_working_tree, tool_env

pytestmark = [pytest.mark.slow]


def free_base(span: int = 6) -> int:
    """A port P with P..P+span and their gRPC twins (+10000) free."""
    for _ in range(200):
        base = random.randrange(20000, 29000)
        ports = [base + i for i in range(span)] + [base + 10000 + i for i in range(span)]
        if not any(_taken(port) for port in ports):
            return base
    raise RuntimeError("no free ports")


def _taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    root = copy_working_tree(tmp_path_factory.mktemp("team") / "project")
    for folder in (root, *root.parents[:4]):  # PostgreSQL, run as user postgres under root,
        folder.chmod(folder.stat().st_mode | 0o711)  # must reach its data in the project
    base = free_base(12)
    ports = {"POSTGRES": base + 6, "S3": base + 7, "MLFLOW": base + 8, "SEAWEED": base}
    env = {**tool_env(), **{f"DLPROJECTS_TEAM_{name}_PORT": str(port)
                            for name, port in ports.items()}}
    command = [sys.executable, "-m", "dlprojects.team"]
    started = subprocess.run([*command, "up"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    values = dict(line.removeprefix("export ").split("=", 1) for line in subprocess.run(
        [*command, "env"], cwd=root, env=env, capture_output=True, text=True,
        check=True).stdout.splitlines())
    yield root, env, values
    subprocess.run([*command, "down"], cwd=root, env=env, capture_output=True, timeout=120)


def request(uri: str, path: str, user: str | None = None, password: str | None = None,
            body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(f"{uri}{path}", data=data, method="POST" if data else "GET",
                                  headers={"Content-Type": "application/json"})
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        call.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


def test_the_secrets_are_generated_and_kept_from_others(team):
    root, _, values = team
    credentials = root / ".team/credentials.env"
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert len(values["MLFLOW_TRACKING_PASSWORD"]) >= 24
    assert ".team/" in (root / ".gitignore").read_text()
    assert "secret_access_key" not in (root / ".dvc/config").read_text()
    assert values["AWS_SECRET_ACCESS_KEY"] in (root / ".dvc/config.local").read_text()


def test_no_login_or_a_wrong_password_gets_401(team):
    _, _, values = team
    uri, search = values["MLFLOW_TRACKING_URI"], "/api/2.0/mlflow/experiments/search?max_results=1"
    assert request(uri, search)[0] == 401
    assert request(uri, search, "admin", "wrong")[0] == 401
    assert request(uri, search, "admin", values["MLFLOW_TRACKING_PASSWORD"])[0] == 200


def test_a_stage_with_a_wrong_password_stops_before_training_in_one_line(team, raw_data):
    root, env, values = team
    (root / "data/raw").mkdir(parents=True, exist_ok=True)
    if not (root / "data/raw/fashion_mnist").exists():
        (root / "data/raw/fashion_mnist").symlink_to(raw_data / "fashion_mnist")
    result = subprocess.run(
        [sys.executable, "pipeline/train_fashion.py", "improved", "data/raw/fashion_mnist",
         "models/f", "reports/f/history.csv"], cwd=root, capture_output=True, text=True,
        env={**env, **values, "MLFLOW_TRACKING_PASSWORD": "wrong"}, timeout=300)
    assert result.returncode == 2
    assert not (root / "models/f").exists()
    assert result.stderr.strip().splitlines() == [
        f"error: MLflow tracking server {values['MLFLOW_TRACKING_URI']} refused user 'admin' "
        f"(401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (for the team's "
        f"servers: eval $(python -m dlprojects.team env))"]


def test_a_second_user_reads_but_cannot_change_the_first_users_experiment(team):
    _, _, values = team
    uri, admin = values["MLFLOW_TRACKING_URI"], ("admin", values["MLFLOW_TRACKING_PASSWORD"])
    status, created = request(uri, "/api/2.0/mlflow/experiments/create", *admin,
                              body={"name": "admins-experiment"})
    assert status == 200
    experiment = created["experiment_id"]
    assert request(uri, "/api/2.0/mlflow/users/create", *admin,
                   body={"username": "colleague", "password": "a-long-password-42"})[0] == 200
    colleague = ("colleague", "a-long-password-42")
    assert request(uri, f"/api/2.0/mlflow/experiments/get?experiment_id={experiment}",
                   *colleague)[0] == 200
    assert request(uri, "/api/2.0/mlflow/experiments/update", *colleague,
                   body={"experiment_id": experiment, "new_name": "taken"})[0] == 403


def test_artifacts_go_through_the_server_to_the_s3_store(team, tmp_path):
    _, env, values = team
    script = ("import mlflow, sys\nmlflow.set_experiment('artifacts')\n"
              "with mlflow.start_run() as run:\n    mlflow.log_text('hello', 'a.txt')\n"
              "print(mlflow.artifacts.load_text(f'runs:/{run.info.run_id}/a.txt'))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**env, **values},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "hello"
    assert any(Path(team[0] / ".team/s3").rglob("*"))
