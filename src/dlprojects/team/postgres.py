"""The team's PostgreSQL: its own cluster under .team/postgres (see `dlprojects.team`)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from dlprojects.core.errors import UserError
from dlprojects.team import Team, last_line


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
        team.check_free("postgres")
        options = (f"-c listen_addresses=127.0.0.1 -p {team.port('postgres')} "
                   f"-c unix_socket_directories={data}")
        result = subprocess.run(_as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-l",
                                           str(log), "-w", "-t", "60", "-o", options, "start"],
                                          log), capture_output=True)
        if result.returncode != 0:
            raise UserError(f"PostgreSQL did not start ({last_line(log)}); its log: {log}")
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
