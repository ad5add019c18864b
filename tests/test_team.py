"""The team's servers (`python -m dlprojects.team`): PostgreSQL, a SeaweedFS S3 store and `mlflow
server` with logins, all on 127.0.0.1 under a project's .team/; no one getting in who should not;
two clones sharing runs, models and data through them, through restarts and at the same time
(the tests build on each other, in file order)."""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import copy_working_tree, run, smoke_clone, tool_env

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


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


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
    assert (root / ".dvc/config.local").stat().st_mode & 0o777 == 0o600


def test_no_login_or_a_wrong_password_gets_401(team):
    _, _, values = team
    uri = values["MLFLOW_TRACKING_URI"]
    assert request(uri, SEARCH)[0] == 401
    assert request(uri, SEARCH, "admin", "wrong")[0] == 401
    assert request(uri, SEARCH, "admin", values["MLFLOW_TRACKING_PASSWORD"])[0] == 200


def test_a_stage_with_a_wrong_password_stops_before_training_in_one_line(team, raw_data):
    root, env, values = team
    (root / "data/raw").mkdir(parents=True, exist_ok=True)
    if not (root / "data/raw/fashion_mnist").exists():
        (root / "data/raw/fashion_mnist").symlink_to(raw_data / "fashion_mnist")
    result = subprocess.run(
        [sys.executable, "-m", "dlprojects.fashion.train", "improved", "data/raw/fashion_mnist",
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
              "print(run.info.run_id, mlflow.artifacts.load_text(\n"
              "    f'runs:/{run.info.run_id}/a.txt'))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**env, **values},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run_id, text = result.stdout.strip().splitlines()[-1].split()
    assert text == "hello"
    stored = s3_objects(team, "mlflow")
    assert [key for key in stored if key.endswith(f"/{run_id}/artifacts/a.txt")], stored


def test_no_secret_is_on_a_command_line_and_mlflow_connects_with_least_privilege(team):
    """Any local user reads every process's command line: no secret of credentials.env is on
    one. The MLflow server connects as a role that is no superuser, makes no database or role and
    owns its two databases and all in them (a table the superuser made before is handed over by
    the next `team up`)."""
    import psycopg2

    root, env, _ = team
    secrets = [value for line in (root / ".team/credentials.env").read_text().splitlines()
               for value in [line.split("=", 1)[1]]]
    server = int((root / ".team/mlflow.pid").read_text())
    lines = {}
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            lines[int(path.parent.name)] = path.read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
    assert "mlflow" in lines[server] and "postgresql" in lines[server], lines[server]
    assert not [(pid, line[:120]) for pid, line in lines.items()
                if any(secret in line for secret in secrets)]

    credentials = dict(line.split("=", 1) for line in
                       (root / ".team/credentials.env").read_text().splitlines())
    port = int(env["DLPROJECTS_TEAM_POSTGRES_PORT"])

    def connect(user: str, password: str, database: str):
        connection = psycopg2.connect(host="127.0.0.1", port=port, user=user,
                                      password=password, dbname=database)
        connection.autocommit = True
        return contextlib.closing(connection)

    with connect("mlflow", credentials["POSTGRES_PASSWORD"], "mlflow") as admin:
        with admin.cursor() as cursor:
            cursor.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                           "WHERE rolname = 'mlflow_server'")
            assert cursor.fetchall() == [(False, False, False)]
            cursor.execute("SELECT datname FROM pg_database "
                           "WHERE pg_get_userbyid(datdba) = 'mlflow_server' ORDER BY datname")
            assert cursor.fetchall() == [("mlflow",), ("mlflow_auth",)]
            cursor.execute("CREATE TABLE made_by_the_superuser (id serial PRIMARY KEY)")
    servers(team, "up")
    with connect("mlflow", credentials["POSTGRES_PASSWORD"], "mlflow") as admin:
        with admin.cursor() as cursor:
            cursor.execute("SELECT tablename, tableowner FROM pg_tables "
                           "WHERE schemaname = 'public' AND tableowner <> 'mlflow_server'")
            assert cursor.fetchall() == []
            cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            assert cursor.fetchone()[0] > 10  # MLflow's own tables among them
            cursor.execute("DROP TABLE made_by_the_superuser")
    with connect("mlflow_server", credentials["POSTGRES_SERVER_PASSWORD"], "mlflow") as server:
        with server.cursor() as cursor, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cursor.execute("CREATE DATABASE not_its_own")


def answers(port: int, tls: bool = False) -> bytes:
    """What a client with no credential at all gets from 127.0.0.1:`port`: the first bytes of
    the answer to an HTTP/1.1 request, and, on a second connection, to HTTP/2's preface (a gRPC
    server's first SETTINGS frame); over TLS without a client certificate when `tls`. b"" when
    the server refuses."""
    import ssl

    got = b""
    for request in (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as plain:
                if tls:
                    context = ssl.create_default_context()
                    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                    context.set_alpn_protocols(["h2", "http/1.1"])
                    connection = context.wrap_socket(plain)
                else:
                    connection = plain
                connection.sendall(request)
                got += connection.recv(64)
        except (OSError, ssl.SSLError):
            pass
    return got


def test_no_port_of_the_s3_store_but_s3_answers_without_a_certificate(team):
    """Every TCP port SeaweedFS listens on, tried as another local user would: plain HTTP and
    HTTP/2 (gRPC) answer nothing but "this is an HTTPS server", TLS without a client certificate
    of the team's authority is refused; the S3 port refuses an unsigned request. Its Unix sockets,
    its folders and its logs are its owner's alone, and no log holds a secret."""
    import psutil

    root, env, values = team
    weed = psutil.Process(int((root / ".team/s3.pid").read_text()))
    ports = sorted({c.laddr.port for c in weed.net_connections("tcp") if c.status == "LISTEN"})
    s3 = int(env["DLPROJECTS_TEAM_S3_PORT"])
    assert s3 in ports and len(ports) >= 9, ports  # master, volume, filer, admin: HTTP and gRPC
    for port in ports:
        if port == s3:
            continue
        plain = answers(port)
        assert plain == b"" or plain.startswith(b"HTTP/1.0 400 Bad Request") and b"\x00" not in \
            plain[:40] and len(plain) <= 128, (port, plain)  # Go's "client sent HTTP to HTTPS"
        assert answers(port, tls=True) == b"", port
    request = urllib.request.Request(f"http://127.0.0.1:{s3}/dvc")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    for path in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock"):
        if any(path.name.endswith(f"-{port}.sock") for port in ports):
            assert path.stat().st_mode & 0o077 == 0, path
    team_folder = root / ".team"
    assert team_folder.stat().st_mode & 0o077 == 0o011  # passable (PostgreSQL), not listable
    secrets = [value for name, value in values.items() if "PASSWORD" in name or "SECRET" in name]
    for path in team_folder.rglob("*"):
        if path.is_relative_to(team_folder / "postgres") or path.is_symlink():
            continue  # PostgreSQL's own (0700, its user's)
        mode = path.stat().st_mode
        if path.is_dir():
            assert mode & 0o066 == 0, (path, oct(mode))  # others list and change nothing
        elif all(folder.stat().st_mode & 0o001 for folder in path.parents
                 if folder.is_relative_to(team_folder)):  # a file others could reach
            assert mode & 0o077 == 0, (path, oct(mode))
        if path.is_file() and path.is_relative_to(team_folder / "logs"):
            text = path.read_text(errors="replace")
            assert not [secret for secret in secrets if secret in text], path


def test_a_server_that_cannot_start_says_why_in_one_line(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")

    def team_cli(*arguments: str, **env: str) -> list[str]:
        result = subprocess.run([sys.executable, "-m", "dlprojects.team", *arguments],
                                cwd=tmp_path, env={**tool_env(), **env}, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        return result.stderr.strip().splitlines()

    assert team_cli("env") == [
        f"error: {tmp_path / '.team/credentials.env'} not found: where the team's servers run, "
        f"start them with `make team-up`; in a colleague's clone, `python -m dlprojects.team "
        f"join` what the admin's `team add` printed"]
    assert team_cli("up", "s3", DLPROJECTS_TEAM_S3_PORT="s3") == [
        "error: DLPROJECTS_TEAM_S3_PORT='s3' is not a port number"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert team_cli("up", "s3", DLPROJECTS_TEAM_S3_PORT=str(port)) == [
            f"error: port {port} (s3) is taken by another program; stop it or set "
            f"DLPROJECTS_TEAM_S3_PORT"]
    data = tmp_path / ".team/postgres"
    data.mkdir(parents=True)
    (data / "notes.txt").write_text("not a database\n")
    assert team_cli("up", "postgres") == [
        f"error: {data} holds files but no PostgreSQL cluster; move it away and run "
        f"`make team-up` again"]
    assert (data / "notes.txt").read_text() == "not a database\n"


# ------------------------------------------------- two clones sharing the team's servers


def s3_objects(team, bucket: str) -> dict[str, bytes]:
    """Every object of `bucket`, read through the S3 API with the team's keys."""
    import botocore.session

    _, env, values = team
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=f"http://127.0.0.1:{env['DLPROJECTS_TEAM_S3_PORT']}",
        region_name="us-east-1", aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"])
    keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket) for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def servers(team, *arguments: str) -> None:
    """`python -m dlprojects.team ARGUMENTS` where the servers live."""
    root, env, _ = team
    result = subprocess.run([sys.executable, "-m", "dlprojects.team", *arguments], cwd=root,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def as_user(command: list[str], cwd: Path, login: dict[str, str], **kwargs):
    """`command` in `cwd` pointed at the team's servers with `login`; must succeed."""
    result = subprocess.run(command, cwd=cwd, env={**tool_env(), **login}, capture_output=True,
                            text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


@contextlib.contextmanager
def client_of(login: dict[str, str]):
    """An MlflowClient on the team's server, logged in as `login`."""
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        for name, value in login.items():
            patch.setenv(name, value)
        yield mlflow.MlflowClient(login["MLFLOW_TRACKING_URI"])


def clone_for_team(team, folder: Path, identity: str, source: Path | None = None) -> Path:
    """A smoke clone (or a `git clone` of `source`) that joined the team with `identity` (what
    `team add` printed): its DVC remote `team` has that colleague's keys."""
    if source is None:
        smoke_clone(folder)
    else:
        run(["git", "clone", "-q", str(source), str(folder)], folder.parent)
    joined = subprocess.run([sys.executable, "-m", "dlprojects.team", "join"], cwd=folder,
                            input=identity, env=tool_env(), capture_output=True, text=True,
                            timeout=120)
    assert joined.returncode == 0, joined.stderr
    return folder


def add_colleague(team, name: str) -> str:
    """`team add name` where the servers run: the identity it printed."""
    root, env, _ = team
    added = subprocess.run([sys.executable, "-m", "dlprojects.team", "add", name], cwd=root,
                           env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0 and "Traceback" not in added.stderr, added.stderr
    assert f"hand these lines to {name} privately" in added.stderr
    return added.stdout


def login_of(identity: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in identity.splitlines())


@pytest.fixture(scope="module")
def people(team) -> dict[str, str]:
    """Two colleagues' identities, as `team add` printed them: Ana works in clone A, Bea in B."""
    return {name: add_colleague(team, name) for name in ("ana", "bea")}


@pytest.fixture(scope="module")
def clones(team, people, tmp_path_factory) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("clones")
    return {"a": clone_for_team(team, top / "a", people["ana"]), "b": top / "b"}


@pytest.fixture(scope="module")
def ana(people) -> dict[str, str]:
    return login_of(people["ana"])


@pytest.fixture(scope="module")
def colleague(people) -> dict[str, str]:
    """B's login: Bea's own identity."""
    return login_of(people["bea"])


HISTORIES = {"train_backprop@mlp": "reports/backprop/mlp/history.csv",
             "train_backprop@cnn": "reports/backprop/cnn/history.csv",
             "train_fashion@baseline": "reports/fashion/baseline/history.csv",
             "train_fashion@improved": "reports/fashion/improved/history.csv",
             "train_vit": "reports/vit/history.csv",
             "train_sentiment": "reports/sentiment/history.csv"}


def epochs_in(path: Path) -> int:
    with path.open() as f:
        return sum(1 for _ in csv.DictReader(f))


def test_a_runs_the_smoke_pipeline_on_the_server_through_a_postgres_restart(team, clones, ana):
    _, _, values = team
    a = clones["a"]
    as_user(["dvc", "repro", "evaluate_backprop@mlp"], a, ana, timeout=900)
    servers(team, "down", "postgres")  # between two stages
    servers(team, "up")
    as_user(["dvc", "repro"], a, ana, timeout=1800)

    commit = run(["git", "rev-parse", "HEAD"], a).stdout.strip()
    stored = s3_objects(team, "mlflow")
    with client_of(values) as client:
        stages = {}
        for experiment, count in (("backprop", 2), ("fashion", 2), ("sentiment", 1), ("vit", 1)):
            runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
            assert len(runs) == count
            for found in runs:
                stages[found.data.tags["dvc.stage"]] = found
                assert found.info.status == "FINISHED"
                assert found.data.tags["git.commit"] == commit
                assert "test_accuracy" in found.data.metrics  # from the evaluate stage
                assert client.list_artifacts(found.info.run_id)
                assert any(f"/{found.info.run_id}/artifacts/" in key for key in stored)
        assert sorted(stages) == sorted(HISTORIES)
        for stage, history in HISTORIES.items():  # every epoch's metrics, before and after
            run_id = stages[stage].info.run_id
            assert len(client.get_metric_history(run_id, "val_loss")) == epochs_in(a / history)
        for name in ("backprop-mlp", "backprop-cnn", "fashion", "vit", "sentiment"):
            assert client.get_model_version_by_alias(name, "champion").run_id in {
                found.info.run_id for found in stages.values()}


def test_b_pulls_what_a_pushed_through_an_s3_restart_and_nothing_retrains(team, clones, people,
                                                                         ana, colleague):
    a, b = clones["a"], clones["b"]
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-qm", "results"], a)
    as_user(["dvc", "push", "-r", "team"], a, ana)
    servers(team, "down", "s3")  # between push and pull
    servers(team, "up")
    clone_for_team(team, b, people["bea"], source=a)
    as_user(["dvc", "pull", "-r", "team"], b, colleague)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], b).stdout
    repro = run(["dvc", "repro"], b).stdout
    assert "Running stage" not in repro and "up to date" in repro
    lock = yaml.safe_load((b / "dvc.lock").read_text())["stages"]
    outs = [out["path"] for stage in lock.values() for out in stage.get("outs", [])]
    for out in outs:
        files = [out] if (a / out).is_file() else [
            path.relative_to(a) for path in (a / out).rglob("*") if path.is_file()]
        assert files, out
        for name in files:
            assert (b / name).read_bytes() == (a / name).read_bytes(), name
    assert run(["git", "status", "--porcelain"], b).stdout == ""


def test_b_serves_as_the_champion_what_a_trained_and_finds_its_runs(team, clones, colleague):
    import numpy as np
    from PIL import Image

    a, b = clones["a"], clones["b"]
    image = b.parent / "item.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(image)
    predict = [sys.executable, "-m", "dlprojects.predict"]
    mine = run([*predict, "models/fashion/improved", str(image)], a).stdout
    served = as_user([*predict, "models:/fashion@champion", str(image)], b, colleague).stdout
    assert served == mine and str(image) in served

    with client_of(colleague) as client:
        trained = client.search_runs(
            [client.get_experiment_by_name("fashion").experiment_id],
            filter_string="tags.`dvc.stage` = 'train_fashion@improved'")
    found = as_user([sys.executable, "-m", "dlprojects.lineage", "model",
                     "models/fashion/improved"], b, colleague).stdout
    assert [run.info.run_id for run in trained] and trained[0].info.run_id in found


def test_the_server_killed_mid_run_and_restarted_loses_nothing(team, clones, ana):
    root, _, values = team
    a = clones["a"]
    params = yaml.safe_load((a / "params.yaml").read_text())
    params["train_fashion"]["loop"].update(epochs=6, threads=1)
    params["train_fashion"]["data"]["train_samples"] = 12000
    (a / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage = subprocess.Popen(["dvc", "repro", "train_fashion@improved"], cwd=a,
                             env={**tool_env(), **ana}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    with client_of(values) as client:
        experiment = client.get_experiment_by_name("fashion").experiment_id
        deadline, running = time.monotonic() + 600, []
        while not running or len(client.get_metric_history(running[0].info.run_id,
                                                            "val_loss")) < 2:
            assert stage.poll() is None and time.monotonic() < deadline, stage.communicate()
            time.sleep(0.3)
            running = client.search_runs([experiment],
                                         filter_string="attributes.status = 'RUNNING'")
    run_id = running[0].info.run_id
    os.killpg(int((root / ".team/mlflow.pid").read_text()), signal.SIGKILL)
    out, err = stage.communicate(timeout=300)
    assert stage.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped answering in epoch" in errors[0], err[-3000:]
    assert "Traceback" not in err

    servers(team, "up")
    resumed = as_user(["dvc", "repro", "train_fashion@improved"], a, ana, timeout=900)
    assert f"resuming MLflow run {run_id}" in resumed.stderr
    with client_of(values) as client:
        assert client.get_run(run_id).info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2, 3, 4, 5, 6]
        assert client.list_artifacts(run_id)
        assert len(client.search_runs([experiment])) == 3  # A's two, and this one


def test_two_queued_experiments_log_to_the_server_at_once(team, clones, ana):
    _, _, values = team
    a, rates, epochs = clones["a"], ["0.001", "0.003"], 4
    for rate in rates:
        as_user(["dvc", "exp", "run", "--queue", "-S", f"train_fashion.lr={rate}",
                 "-S", f"train_fashion.loop.epochs={epochs}",
                 "-S", "train_fashion.data.train_samples=20000", "train_fashion@improved"],
                a, ana)
    as_user(["dvc", "queue", "start", "-j", "2"], a, ana)
    try:
        deadline = time.monotonic() + 900
        while re.search(r"\b(Queued|Running)\b",
                        status := run(["dvc", "queue", "status"], a).stdout):
            assert time.monotonic() < deadline, f"the queue did not finish:\n{status}"
            time.sleep(2)
    finally:
        subprocess.run(["dvc", "queue", "stop"], cwd=a, env=tool_env(), capture_output=True)
    assert len(re.findall(r"\bSuccess\b", status)) == len(rates), status
    with client_of(values) as client:
        runs = client.search_runs([client.get_experiment_by_name("fashion").experiment_id],
                                  filter_string="tags.`dvc.exp_name` != ''")
        runs = [found for found in runs if "dvc.exp_name" in found.data.tags]
        assert sorted(found.data.params["lr"] for found in runs) == sorted(rates)
        for found in runs:
            assert found.info.status == "FINISHED"
            assert len(client.get_metric_history(found.info.run_id, "val_loss")) == epochs
        spans = sorted((found.info.start_time, found.info.end_time) for found in runs)
        assert spans[1][0] < spans[0][1], "the two experiments did not run at the same time"


def test_b_pulls_lists_compares_and_applies_the_experiments_a_pushed(team, clones, ana,
                                                                   colleague):
    """Shared experiments: A pushes its two queued experiments through the team's git (a bare
    repository here) and DVC remote; B, logged in as herself, pulls them, lists them, compares
    them from their stored predictions, finds their MLflow runs on the server, and applies one,
    whose outputs are then A's bytes."""
    a, b = clones["a"], clones["b"]
    names = run(["dvc", "exp", "list", "--name-only"], a).stdout.split()
    assert len(names) == 2, names
    shared = a.parent / "team.git"
    run(["git", "init", "-q", "--bare", str(shared)], a.parent)
    for clone in (a, b):
        run(["git", "remote", "add", "team-git", str(shared)], clone)
    run(["git", "push", "-q", "team-git", "HEAD"], a)
    as_user(["dvc", "exp", "push", "-r", "team", "team-git", *names], a, ana, timeout=300)

    listed = as_user(["dvc", "exp", "list", "--name-only", "team-git"], b, colleague).stdout
    assert sorted(listed.split()) == sorted(names)
    as_user(["dvc", "exp", "pull", "-r", "team", "team-git", *names], b, colleague, timeout=300)
    shown = json.dumps(json.loads(run(["dvc", "exp", "show", "--json"], b).stdout))
    assert all(name in shown for name in names)
    first, second = (f"{name}:reports/fashion/predictions_improved.csv" for name in names)
    compared = run([sys.executable, "-m", "dlprojects.compare", first, second], b).stdout
    assert "McNemar p" in compared, compared
    for name in names:  # each experiment's training run, on the team's server
        found = as_user([sys.executable, "-m", "dlprojects.lineage", "exp", name], b,
                        colleague).stdout
        assert "train_fashion@improved" in found, found

    import dvc.api

    run(["dvc", "exp", "apply", names[0]], b)
    try:
        for path in ("params.yaml", "models/fashion/improved/model.safetensors",
                     "reports/fashion/improved/history.csv"):
            assert (b / path).read_bytes() == dvc.api.read(path, repo=str(a), rev=names[0],
                                                           mode="rb"), path
        assert (b / "params.yaml").read_bytes() != (a / "params.yaml").read_bytes()
    finally:
        run(["git", "checkout", "--", "."], b)
        run(["dvc", "checkout", "-f"], b)


def s3_as(login: dict[str, str], service: str = "s3"):
    import botocore.session

    return botocore.session.get_session().create_client(
        service, endpoint_url=login["DLPROJECTS_TEAM_S3_ENDPOINT"], region_name="us-east-1",
        aws_access_key_id=login["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=login["AWS_SECRET_ACCESS_KEY"])


def refused(call) -> str:
    """The error code the server answered `call` with; fails when it was let through."""
    from botocore.exceptions import ClientError
    from mlflow.exceptions import MlflowException

    try:
        call()
    except ClientError as error:  # SeaweedFS's IAM API may answer a bare HTTP status
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return error.response.get("Error", {}).get("Code") or f"HTTP {status}"
    except MlflowException as error:
        return error.error_code
    raise AssertionError("let through")


def test_each_colleague_has_keys_of_her_own_and_deletes_no_one_elses_runs(team, clones, ana,
                                                                          colleague):
    """Ana and Bea, each in her clone with the identity `team add` made: Bea runs and pushes an
    experiment, Ana pulls it and sees its run; neither deletes the other's runs (nor her own:
    the admin alone deletes). Their S3 keys reach bucket dvc alone; the IAM API refuses them;
    mixed or wrong credentials are refused."""
    a, b, bea = clones["a"], clones["b"], colleague
    as_user(["dvc", "exp", "run", "-n", "bea-lr", "-S", "train_fashion.lr=0.004",
             "train_fashion@improved"], b, bea, timeout=900)
    as_user(["dvc", "exp", "push", "-r", "team", "team-git", "bea-lr"], b, bea, timeout=300)
    as_user(["dvc", "exp", "pull", "-r", "team", "team-git", "bea-lr"], a, ana, timeout=300)
    assert "bea-lr" in run(["dvc", "exp", "list", "--name-only"], a).stdout.split()
    with client_of(ana) as client:
        fashion = client.get_experiment_by_name("fashion").experiment_id
        beas = client.search_runs([fashion], filter_string="tags.`dvc.exp_name` = 'bea-lr'")
        anas = client.search_runs([fashion], filter_string="tags.`dvc.exp_name` != 'bea-lr'")
        assert len(beas) == 1 and anas
        assert refused(lambda: client.delete_run(beas[0].info.run_id)) == "PERMISSION_DENIED"
    with client_of(bea) as client:
        for found in (anas[0], beas[0]):
            assert refused(lambda: client.delete_run(found.info.run_id)) == "PERMISSION_DENIED"
            assert client.get_run(found.info.run_id).info.lifecycle_stage == "active"
    for login, other in ((ana, bea), (bea, ana)):
        s3, iam = s3_as(login), s3_as(login, "iam")
        assert s3.list_objects_v2(Bucket="dvc")["KeyCount"] > 0
        assert refused(lambda: s3.list_objects_v2(Bucket="mlflow")) == "AccessDenied"
        assert refused(lambda: s3.put_object(Bucket="mlflow", Key="x", Body=b"x")) == \
            "AccessDenied"
        assert refused(lambda: s3.create_bucket(Bucket="mine")) == "AccessDenied"
        assert refused(lambda: iam.list_users()) in {"AccessDenied", "HTTP 403"}
        assert refused(lambda: iam.create_access_key(
            UserName=other["MLFLOW_TRACKING_USERNAME"])) in {"AccessDenied", "HTTP 403"}
        mixed = {**login, "AWS_SECRET_ACCESS_KEY": other["AWS_SECRET_ACCESS_KEY"]}
        assert refused(lambda: s3_as(mixed).list_objects_v2(Bucket="dvc")) == \
            "SignatureDoesNotMatch"
        uri = login["MLFLOW_TRACKING_URI"]
        assert request(uri, SEARCH, login["MLFLOW_TRACKING_USERNAME"],
                       other["MLFLOW_TRACKING_PASSWORD"])[0] == 401
        assert request(uri, SEARCH, login["MLFLOW_TRACKING_USERNAME"],
                       login["MLFLOW_TRACKING_PASSWORD"])[0] == 200


def test_a_colleagues_restarted_sweep_sets_aside_the_run_it_may_not_delete(team, clones, ana):
    """A sweep restarted after a kill drops the MLflow run of an unfinished trial; a colleague
    may delete no run, so hers is set aside: KILLED, tagged, out of the sweep's parent run."""
    script = """if True:
        from dlprojects.sweep.space import load
        from dlprojects.sweep.trials import ParentRun

        sweep = load("experiments/sweeps/vit-lr-wd.yaml")
        parent = ParentRun(sweep)
        trial = sweep.trial_name(0, 0)
        unfinished = parent.client.create_run(parent.experiment, tags={
            "dvc.exp_name": trial, "mlflow.parentRunId": parent.run_id}).info.run_id
        parent.discard(trial)
        print(unfinished, parent.adopt([trial]))
    """
    said = as_user([sys.executable, "-c", script], clones["a"], ana).stdout
    run_id, adopted = said.splitlines()[-1].split()
    assert f"MLflow run {run_id} of an unfinished attempt set aside (KILLED, out of the sweep's " \
           "parent run" in said, said
    assert adopted == "0"
    with client_of(ana) as client:
        stored = client.get_run(run_id)
    assert stored.info.status == "KILLED" and stored.info.lifecycle_stage == "active"
    assert "mlflow.parentRunId" not in stored.data.tags
    assert stored.data.tags["sweep.discarded"] == "an unfinished attempt"


SHARED_SWEEP = """model: backprop-mlp
method: optuna
trials: 4
seeds: 1
params:
  train_backprop.mlp.training.lr: {low: 0.01, high: 0.3, log: true}
"""


def test_two_clones_work_one_optuna_study_in_the_teams_postgresql(team, clones, ana, colleague):
    """Ana's and Bea's clones (two machines' workers) run one Optuna sweep at once: one study in
    the team's PostgreSQL (their identities' DLPROJECTS_SWEEP_STORAGE), four configurations
    asked once each, each a DVC experiment of the clone that ran it, every trial's runs under
    one MLflow parent run. Their PostgreSQL logins reach database optuna alone."""
    import optuna
    import psycopg2

    workers = {}
    for clone, login in ((clones["a"], ana), (clones["b"], colleague)):
        (clone / "experiments/sweeps").mkdir(parents=True, exist_ok=True)
        (clone / "experiments/sweeps/shared.yaml").write_text(SHARED_SWEEP)
        workers[clone] = subprocess.Popen(
            [sys.executable, "-m", "dlprojects.sweep", "run", "experiments/sweeps/shared.yaml"],
            cwd=clone, env={**tool_env(), **login}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
    said = {clone: worker.communicate(timeout=1500)[0] for clone, worker in workers.items()}
    assert all(worker.returncode == 0 for worker in workers.values()), said
    study = optuna.load_study(study_name="shared", storage=ana["DLPROJECTS_SWEEP_STORAGE"])
    assert [trial.state.name for trial in study.trials] == ["COMPLETE"] * 4
    assert len({trial.user_attrs["worker"] for trial in study.trials}) == 2
    ran = {clone: {name for name in run(["dvc", "exp", "list", "--name-only"], clone).stdout.split()
                   if name.startswith("shared-")} for clone in workers}
    assert ran[clones["a"]] and ran[clones["b"]] and not ran[clones["a"]] & ran[clones["b"]]
    assert set.union(*ran.values()) == {f"shared-{number:02d}-s0" for number in range(4)}
    with client_of(ana) as client:
        backprop = client.get_experiment_by_name("backprop").experiment_id
        parents = client.search_runs([backprop], filter_string="tags.`sweep.name` = 'shared' "
                                                               "and tags.`sweep.role` = 'parent'")
        assert len(parents) == 1
        trials = [found for found in client.search_runs([backprop])
                  if found.data.tags.get("dvc.exp_name", "").startswith("shared-")]
        assert {found.data.tags["dvc.exp_name"] for found in trials} == set.union(*ran.values())
        assert {found.data.tags["mlflow.parentRunId"] for found in trials} == {
            parents[0].info.run_id}
    url = psycopg2.extensions.parse_dsn(ana["DLPROJECTS_SWEEP_STORAGE"].replace(
        "postgresql+psycopg2", "postgresql"))
    for database in ("mlflow", "mlflow_auth", "postgres"):
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            psycopg2.connect(**{**url, "dbname": database}).close()
    with contextlib.closing(psycopg2.connect(**url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        assert cursor.fetchall() == [("optuna_studies",)]


def test_a_removed_colleague_is_refused_at_once(team, clones, colleague):
    """`team remove bea`: her login and her keys are refused by the very next request; removing
    her again is one line."""
    root, env, _ = team
    command = [sys.executable, "-m", "dlprojects.team", "remove", "bea"]
    removed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                             timeout=120)
    assert removed.stdout.strip() == "bea: revoked MLflow login, S3 keys, PostgreSQL login", \
        removed.stderr
    uri = colleague["MLFLOW_TRACKING_URI"]
    assert request(uri, SEARCH, colleague["MLFLOW_TRACKING_USERNAME"],
                   colleague["MLFLOW_TRACKING_PASSWORD"])[0] == 401
    assert refused(lambda: s3_as(colleague).list_objects_v2(Bucket="dvc")) == "InvalidAccessKeyId"
    pushed = subprocess.run(["dvc", "push", "-r", "team"], cwd=clones["b"],
                            env={**tool_env(), **colleague}, capture_output=True, text=True,
                            timeout=300)
    assert pushed.returncode != 0 and "Traceback" not in pushed.stderr
    again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == ["error: no colleague bea on the team's servers"]


def test_another_local_user_reads_no_secret_of_any_server(team):
    """As user nobody: no server process's environment (where the MLflow server keeps the S3
    keys and the admin's password) and no file under .team can be read."""
    root, _, values = team
    servers = [int((root / f".team/{name}.pid").read_text()) for name in ("s3", "mlflow")]
    servers.append(int((root / ".team/postgres/postmaster.pid").read_text().splitlines()[0]))
    processes = [pid for pgid in servers for pid in group(pgid)]
    mlflow_server = Path(f"/proc/{servers[1]}/environ").read_bytes()  # its owner reads it
    assert values["AWS_SECRET_ACCESS_KEY"].encode() in mlflow_server
    files = [path for path in (root / ".team").rglob("*") if path.is_file()]
    assert len(processes) >= 4 and len(files) > 10
    for path in [*(f"/proc/{pid}/environ" for pid in processes), *map(str, files)]:
        read = subprocess.run(["cat", path], user="nobody", group="nogroup",
                              capture_output=True, timeout=30)
        assert read.returncode != 0 and not read.stdout, path
        assert b"Permission denied" in read.stderr or b"No such file" in read.stderr, path


def group(pgid: int) -> list[int]:
    """The live processes of process group `pgid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found.append(int(stat.parent.name))
    return found


def test_each_server_killed_outright_comes_back_with_team_up_and_nothing_of_it_is_left(team):
    """SIGKILL of each server's first process in turn (MLflow's workers live on and keep its
    port), then `team up`: it ends what is left, the stack answers again with every run it had,
    and no process of the killed server remains; `team down` says what it did."""
    root, env, values = team
    command = [sys.executable, "-m", "dlprojects.team"]
    with client_of(values) as client:
        before = {e.name: len(client.search_runs([e.experiment_id]))
                  for e in client.search_experiments()}
    for name in ("mlflow", "s3", "postgres"):
        pid_file = (root / ".team/postgres/postmaster.pid" if name == "postgres"
                    else root / f".team/{name}.pid")
        pgid = int(pid_file.read_text().splitlines()[0])  # a group's id: its first process's
        os.kill(pgid, signal.SIGKILL)
        up = subprocess.run([*command, "up"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
        assert up.returncode == 0 and "Traceback" not in up.stderr, (name, up.stderr)
        if name == "mlflow":
            assert "mlflow: ended" in up.stderr and "leftover" in up.stderr, up.stderr
        assert group(pgid) == [] or name == "postgres", (name, group(pgid))
    with client_of(values) as client:
        after = {e.name: len(client.search_runs([e.experiment_id]))
                 for e in client.search_experiments()}
    assert after == before
    down = subprocess.run([*command, "down", "mlflow"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    again = subprocess.run([*command, "down", "mlflow"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=120)
    assert "mlflow: stopped" in down.stdout and "mlflow: was not running" in again.stdout
    servers(team, "up")
