"""The team's PostgreSQL: its own cluster under .team/postgres (see `dlprojects.team`)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from contextlib import closing
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
    data, log = team.folder / "postgres", team.log("postgres")  # owner-only, then PostgreSQL's
    values = team.credentials(create=True)
    password = values["POSTGRES_PASSWORD"]
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
    if not _serving(team, data):
        team.check_free("postgres")
        options = (f"-c listen_addresses=127.0.0.1 -p {team.port('postgres')} "
                   f"-c unix_socket_directories={data}")
        result = subprocess.run(_as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-l",
                                           str(log), "-w", "-t", "60", "-o", options, "start"],
                                          log), capture_output=True)
        if result.returncode != 0:
            raise UserError(f"PostgreSQL did not start ({last_line(log)}); its log: {log}")
    _prepare_databases(team, values)


SUPERUSER = "mlflow"  # the cluster's own superuser, for team-up alone
SERVER_ROLE = "mlflow_server"  # what the MLflow server connects as: its two databases' owner
DATABASES = ("mlflow", "mlflow_auth")  # runs and registry; users and permissions
STUDIES, STUDIES_ROLE = "optuna", "optuna_studies"  # sweeps' Optuna studies; their owner, which
# every colleague's login acts as there (no login of its own)


def _serving(team: Team, data: Path, seconds: float = 30) -> bool:
    """Whether the cluster runs and takes connections. A postmaster killed outright can look
    alive a moment longer (pg_ctl status) while it takes none: wait until it takes connections
    again or is gone, so that `team up` starts it afresh."""
    deadline = time.monotonic() + seconds
    while subprocess.run(_as_owner([postgres_bin("pg_ctl"), "-D", str(data), "status"]),
                         capture_output=True).returncode == 0:
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", team.port("postgres"))) == 0:
                return True
        if time.monotonic() > deadline:
            raise UserError(f"PostgreSQL in {data} looks alive but takes no connections; stop it "
                            f"(`python -m dlprojects.team down postgres`) and start it again")
        time.sleep(0.5)
    return False


def _connect(team: Team, password: str, database: str):
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=team.port("postgres"), user=SUPERUSER,
                                  password=password, dbname=database)
    connection.autocommit = True
    return connection


def _prepare_databases(team: Team, values: dict[str, str]) -> None:
    """The MLflow server's role (no superuser, no new databases or roles) and the databases it
    owns, with everything an earlier version made in them as the superuser handed over."""
    from psycopg2 import sql

    role = sql.Identifier(SERVER_ROLE)
    with closing(_connect(team, values["POSTGRES_PASSWORD"], "postgres")) as connection, \
            connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SERVER_ROLE,))
        verb = sql.SQL("ALTER" if cursor.fetchone() else "CREATE")
        cursor.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                               "NOREPLICATION NOBYPASSRLS PASSWORD %s").format(verb, role),
                       (values["POSTGRES_SERVER_PASSWORD"],))
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (STUDIES_ROLE,))
        if not cursor.fetchone():
            cursor.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(
                sql.Identifier(STUDIES_ROLE)))
        for name, owner in (*((name, SERVER_ROLE) for name in DATABASES),
                            (STUDIES, STUDIES_ROLE)):
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            statement = ("ALTER DATABASE {} OWNER TO {}" if cursor.fetchone() else
                         "CREATE DATABASE {} OWNER {}")
            cursor.execute(sql.SQL(statement).format(sql.Identifier(name), sql.Identifier(owner)))
        # a login connects to the databases it owns (or acts for) and to no other
        for name in ("postgres", "template1", *DATABASES, STUDIES):
            cursor.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(name)))
    for name in DATABASES:
        _hand_over(team, values["POSTGRES_PASSWORD"], name)


OWNED = """SELECT c.relkind, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = %s
             AND c.relkind IN ('r', 'p', 'v', 'm', 'S') ORDER BY c.relkind DESC"""
KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}


def _hand_over(team: Team, password: str, database: str) -> None:
    """The superuser's tables, views, sequences and enum types in `database` given to the
    server's role (tables first: their columns' sequences follow them)."""
    from psycopg2 import sql

    role = sql.Identifier(SERVER_ROLE)
    with closing(_connect(team, password, database)) as connection, \
            connection.cursor() as cursor:
        for _ in range(2):  # sequences not owned by a table column on the second pass
            cursor.execute(OWNED, (SUPERUSER,))
            for kind, name in cursor.fetchall():
                cursor.execute(sql.SQL(f"ALTER {KINDS[kind]} {{}} OWNER TO {{}}").format(
                    sql.Identifier(name), role))
        cursor.execute("""SELECT t.typname FROM pg_type t JOIN pg_namespace n
                          ON n.oid = t.typnamespace WHERE n.nspname = 'public'
                          AND t.typtype = 'e' AND pg_get_userbyid(t.typowner) = %s""",
                       (SUPERUSER,))
        for (name,) in cursor.fetchall():
            cursor.execute(sql.SQL("ALTER TYPE {} OWNER TO {}").format(sql.Identifier(name),
                                                                     role))


def stop_postgres(team: Team) -> str:
    """Stop the cluster (fast: open sessions end); returns what it did."""
    data = team.folder / "postgres"
    if (data / "postmaster.pid").exists() and subprocess.run(
            _as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True).returncode == 0:
        return "postgres: stopped"
    return "postgres: was not running"


def add_login(team: Team, name: str) -> str:
    """A login role `name` that acts as the studies' owner in database optuna and can reach
    nothing else; returns its URL for Optuna (password inside: keep it in an owner-only file)."""
    import secrets

    from psycopg2 import sql

    password = secrets.token_hex(24)
    login, studies = sql.Identifier(name), sql.Identifier(STUDIES_ROLE)
    with closing(_connect(team, team.credentials()["POSTGRES_PASSWORD"], "postgres")) as \
            connection, connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                               "INHERIT PASSWORD %s IN ROLE {}").format(login, studies),
                       (password,))
        cursor.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET role = %s").format(
            login, sql.Identifier(STUDIES)), (STUDIES_ROLE,))
    return (f"postgresql+psycopg2://{name}:{password}@127.0.0.1:{team.port('postgres')}/"
            f"{STUDIES}")


def drop_login(team: Team, name: str) -> bool:
    """End `name`'s sessions and drop its role; whether there was one."""
    from psycopg2 import sql

    with closing(_connect(team, team.credentials()["POSTGRES_PASSWORD"], "postgres")) as \
            connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s AND rolcanlogin", (name,))
        if not cursor.fetchone() or name in (SUPERUSER, SERVER_ROLE):
            return False
        cursor.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)))
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE usename = %s", (name,))
        cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    return True
