"""A team's servers on one machine, under `.team/` (gitignored): PostgreSQL as MLflow's backend
store, a SeaweedFS S3 store for MLflow's artifacts and the DVC remote `team`, and `mlflow server`
with basic-auth logins, each bound to 127.0.0.1.

    python -m dlprojects.team up       # start (or check) all three; make team-up
    python -m dlprojects.team down     # stop them; the data stays
    python -m dlprojects.team env      # the variables that point a shell at them
    python -m dlprojects.team add bea  # a colleague's own login and S3 keys (`team.people`)

Secrets are generated on the first `up` and kept in `.team/credentials.env` (mode 0600): the
MLflow admin's password, the S3 keys, the passwords of PostgreSQL's superuser and of the role the
MLflow server connects as, and Flask's secret key. Nothing has a default password, and no secret
is on a command line. Ports: the defaults below, or DLPROJECTS_TEAM_<NAME>_PORT.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from dlprojects.core.errors import UserError

PORTS = {"postgres": 15432, "s3": 18333, "mlflow": 15000, "seaweed": 19333}
SECRETS = ("MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "POSTGRES_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "POSTGRES_SERVER_PASSWORD")
ADMIN = "admin"
BUCKETS = ("mlflow", "dvc")


@dataclass(frozen=True)
class Team:
    """Where the team's servers keep their data, logs and secrets, and their ports."""

    root: Path

    @property
    def folder(self) -> Path:
        return self.root / ".team"

    def port(self, name: str) -> int:
        value = os.environ.get(f"DLPROJECTS_TEAM_{name.upper()}_PORT", str(PORTS[name]))
        if not value.isdigit():
            raise UserError(f"DLPROJECTS_TEAM_{name.upper()}_PORT={value!r} is not a port number")
        return int(value)

    def log(self, name: str) -> Path:
        """.team/logs/<name>.log, readable by its owner alone (the folder lets PostgreSQL's
        user reach its own log, and lists nothing to others)."""
        logs = self.private_folder() / "logs"
        logs.mkdir(exist_ok=True)
        logs.chmod(0o711)
        path = logs / f"{name}.log"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        path.chmod(0o600)
        return path

    def private_folder(self) -> Path:
        """.team, made if new: others may pass through it (PostgreSQL runs as its own user) but
        not list it; what is inside is its owner's alone."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o711)
        return self.folder

    def check_free(self, name: str) -> None:
        """Stop with one line when something already listens on server `name`'s port."""
        with socket.socket() as probe:
            probe.settimeout(0.5)
            taken = probe.connect_ex(("127.0.0.1", self.port(name))) == 0
        if taken:
            raise UserError(f"port {self.port(name)} ({name}) is taken by another program; stop "
                            f"it or set DLPROJECTS_TEAM_{name.upper()}_PORT")

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port('mlflow')}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port('s3')}"

    def credentials(self, create: bool = False) -> dict[str, str]:
        """The secrets of .team/credentials.env; generated (once) when `create`."""
        path = self.folder / "credentials.env"
        if not path.exists():
            if not create:
                raise UserError(f"{path} not found: where the team's servers run, start them "
                                f"with `make team-up`; in a colleague's clone, `python -m "
                                f"dlprojects.team join` what the admin's `team add` printed")
            self.private_folder()
            # hex: nothing a shell, a URL or a command line reads specially (a leading '-')
            values = {name: secrets.token_hex(24) for name in SECRETS}
            values["AWS_ACCESS_KEY_ID"] = secrets.token_hex(10).upper()
            self.write_secret(path.name, "".join(f"{name}={value}\n"
                                                 for name, value in values.items()))
        lines = path.read_text().splitlines()
        values = dict(line.split("=", 1) for line in lines if "=" in line)
        missing = [name for name in SECRETS if name not in values]
        if create and missing:  # a team folder of an earlier version: its new secrets added
            added = {name: secrets.token_hex(24) for name in missing}
            with path.open("a") as f:
                f.write("".join(f"{name}={value}\n" for name, value in added.items()))
            values |= added
        return values

    def write_secret(self, name: str, text: str) -> Path:
        """`text` in .team/`name`, readable by its owner alone from the moment it exists."""
        return write_owner_only(self.folder / name, text.encode())

    def client_env(self) -> dict[str, str]:
        """What points the stages, the registry, serving, lineage and DVC at the servers: the
        identity `team join` kept in this clone, else (where the servers run) the admin's."""
        identity = self.folder / "identity.env"
        if identity.exists():
            return dict(line.split("=", 1) for line in identity.read_text().splitlines()
                        if "=" in line)
        values = self.credentials()
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_TRACKING_USERNAME": ADMIN,
                "MLFLOW_TRACKING_PASSWORD": values["MLFLOW_TRACKING_PASSWORD"],
                "AWS_ACCESS_KEY_ID": values["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": values["AWS_SECRET_ACCESS_KEY"]}


def write_owner_only(path: Path, data: bytes) -> Path:
    """`data` in `path` (replacing it), readable by its owner alone from the moment it exists."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(data)
    return path


def last_line(log: Path) -> str:
    """The last line a server wrote to `log`, for a one-line error."""
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1][:160] if lines else "no output"
