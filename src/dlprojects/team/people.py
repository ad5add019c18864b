"""One identity per colleague: an MLflow login, S3 keys and a PostgreSQL login for sweeps' shared
Optuna studies, their own, made and revoked together.

    python -m dlprojects.team add bea      # where the servers run: prints bea's identity
    python -m dlprojects.team join         # in bea's clone: reads those lines from standard input
    python -m dlprojects.team remove bea   # all three refused from the next request

Each login is assigned the role `colleagues`: EDIT on every experiment, run, logged model and
registered model. A colleague logs runs in any project's experiment and registers and promotes
models, and deletes no run, hers or another's, even in an experiment she created (a grant on the
run tier overrides the experiment's); the admin alone deletes. The projects' experiments and
registered models are the admin's (`add` makes those missing), so no colleague holds MANAGE on
them. Her S3 keys (SeaweedFS's IAM API, on the S3 port) read, write and list bucket `dvc` alone:
MLflow's artifacts reach the `mlflow` bucket through the server, with the server's keys. Her
PostgreSQL login reaches database `optuna` alone, where it acts as the studies' owner
(`DLPROJECTS_SWEEP_STORAGE`: the study a sweep's workers on several machines share). The MLflow
server runs one worker process, which forgets a deleted login at once (`auth_cache_ttl_seconds`
caches verified logins per process).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sys
import warnings

from dlprojects.core.errors import UserError, database_reason
from dlprojects.team import ADMIN, Team
from dlprojects.team.postgres import add_login, drop_login

ROLE = "colleagues"
GRANTS = ("experiment", "run", "logged_model", "registered_model", "registered_model_version")
IDENTITY = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DLPROJECTS_TEAM_S3_ENDPOINT",
            "DLPROJECTS_SWEEP_STORAGE")
BUCKET = "dvc"
NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@contextlib.contextmanager
def servers_answer(doing: str):
    """A refusal or an error from the MLflow server or the S3 store as one line."""
    from botocore.exceptions import BotoCoreError, ClientError
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (BotoCoreError, ClientError, MlflowException) as error:
        raise UserError(f"{doing}: the team's servers answered {str(error).splitlines()[0][:160]}"
                        ) from None


def add(team: Team, name: str) -> dict[str, str]:
    """Make `name` a login in role `colleagues`, S3 keys limited to bucket `dvc` and a
    PostgreSQL login for sweeps' shared Optuna studies; returns the identity `join` takes.
    Nothing is left half made when a step fails."""
    if not NAME.fullmatch(name) or name == ADMIN:
        raise UserError(f"{name!r} is not a colleague's name: lower-case letters, digits, '-' "
                        f"and '_', a letter first, at most 32, not {ADMIN!r}")
    auth, iam = _mlflow_admin(team), _iam(team)
    if _exists(lambda: auth.get_user(name)) or _exists(lambda: iam.get_user(UserName=name)):
        raise UserError(f"{name} is already a colleague; `python -m dlprojects.team remove "
                        f"{name}` first to give them a new identity")
    _admins_places(team)
    password = secrets.token_hex(24)
    auth.create_user(name, password)
    try:
        auth.assign_role(name, _role(auth).id)
        iam.create_user(UserName=name)
        keys = iam.create_access_key(UserName=name)["AccessKey"]
        iam.put_user_policy(UserName=name, PolicyName=f"{BUCKET}-bucket",
                            PolicyDocument=json.dumps(_bucket_policy()))
        studies = add_login(team, name)
    except BaseException:
        with contextlib.suppress(Exception):
            remove(team, name)
        raise
    return {"MLFLOW_TRACKING_URI": team.tracking_uri, "MLFLOW_TRACKING_USERNAME": name,
            "MLFLOW_TRACKING_PASSWORD": password, "AWS_ACCESS_KEY_ID": keys["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": keys["SecretAccessKey"],
            "DLPROJECTS_TEAM_S3_ENDPOINT": team.s3_endpoint, "DLPROJECTS_SWEEP_STORAGE": studies}


def _admins_places(team: Team) -> None:
    """Every declared project's experiment and registered models, made by the admin when
    missing: their creator holds MANAGE on them (delete them, grant on them), and no colleague
    should."""
    import mlflow

    from dlprojects.core.datasets import EXPERIMENT_KIND
    from dlprojects.core.projects import declared

    with _logged_in(ADMIN, team.credentials()["MLFLOW_TRACKING_PASSWORD"]):
        client = mlflow.MlflowClient(team.tracking_uri)
        for project in declared():
            if client.get_experiment_by_name(project.name) is None:
                client.create_experiment(project.name, tags=dict([EXPERIMENT_KIND]))
            for model in project.models:
                if not _exists(lambda: client.get_registered_model(model.name)):
                    client.create_registered_model(model.name)


def remove(team: Team, name: str) -> list[str]:
    """Delete `name`'s login and S3 identity (keys, policy, user); returns what was revoked."""
    auth, iam = _mlflow_admin(team), _iam(team)
    revoked = []
    if _exists(lambda: auth.get_user(name)):
        auth.delete_user(name)
        revoked.append("MLflow login")
    if _exists(lambda: iam.get_user(UserName=name)):
        for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
        for policy in iam.list_user_policies(UserName=name)["PolicyNames"]:
            iam.delete_user_policy(UserName=name, PolicyName=policy)
        iam.delete_user(UserName=name)
        revoked.append("S3 keys")
    if drop_login(team, name):
        revoked.append("PostgreSQL login")
    if not revoked:
        raise UserError(f"no colleague {name} on the team's servers")
    return revoked


def join(team: Team, text: str) -> dict[str, str]:
    """Keep the identity `add` printed (`text`) in this clone's .team/identity.env (0600), once
    both servers have taken it; DVC remote `team` gets its keys. Returns it."""
    values = dict(line.strip().removeprefix("export ").split("=", 1)
                  for line in text.splitlines() if "=" in line and not line.startswith("#"))
    missing = [name for name in IDENTITY if not values.get(name)]
    if missing:
        raise UserError(f"the identity read lacks {', '.join(missing)}; paste every line "
                        f"`python -m dlprojects.team add <name>` printed")
    identity = {name: values[name] for name in IDENTITY}
    _check(identity)
    team.private_folder()
    team.write_secret("identity.env", "".join(f"{name}={value}\n"
                                              for name, value in identity.items()))
    from dlprojects.team.servers import dvc_credentials

    dvc_credentials(team, identity, identity["DLPROJECTS_TEAM_S3_ENDPOINT"])
    return identity


def _check(identity: dict[str, str]) -> None:
    """Stop with one line unless the MLflow server and the S3 store both take `identity`."""
    from botocore.exceptions import BotoCoreError, ClientError

    from dlprojects.core.tracking import TrackingUnauthorized, check_reachable

    user, uri = identity["MLFLOW_TRACKING_USERNAME"], identity["MLFLOW_TRACKING_URI"]
    with _logged_in(user, identity["MLFLOW_TRACKING_PASSWORD"]):
        try:
            check_reachable(uri)
        except TrackingUnauthorized:
            raise UserError(f"the team's MLflow server {uri} refused {user}'s login; ask the "
                            f"admin for a new identity") from None
    client = _client("s3", identity["DLPROJECTS_TEAM_S3_ENDPOINT"], identity)
    try:
        client.head_bucket(Bucket=BUCKET)
    except (BotoCoreError, ClientError) as error:
        raise UserError(f"the team's S3 store refused {user}'s keys ({str(error)[:120]}); ask "
                        f"the admin for a new identity") from None
    import sqlalchemy

    try:
        sqlalchemy.create_engine(identity["DLPROJECTS_SWEEP_STORAGE"]).connect().close()
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise UserError(f"the team's PostgreSQL refused {user}'s login for sweeps "
                        f"({database_reason(error, 120)}); ask the admin for a new identity") \
            from None


def _bucket_policy() -> dict:
    resources = [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Resource": resources,
        "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject",
                   "s3:DeleteObject", "s3:AbortMultipartUpload"]}]}


def _role(auth):
    """Role `colleagues` of the default workspace, made with its grants the first time."""
    found = [role for role in auth.list_roles("default") if role.name == ROLE]
    if found:
        return found[0]
    role = auth.create_role("default", ROLE, "every colleague: logs and registers, deletes nothing")
    for resource in GRANTS:
        auth.add_role_permission(role.id, resource, "*", "EDIT")
    return role


def _exists(lookup) -> bool:
    """Whether `lookup` finds its user (MLflow's and the IAM API's not-found errors are False)."""
    from botocore.exceptions import ClientError
    from mlflow.exceptions import MlflowException

    try:
        lookup()
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"NoSuchEntity", "NoSuchEntityException"}:
            return False
        raise
    return True


class _AdminClient:
    """mlflow's AuthServiceClient, every request sent as the team's admin."""

    def __init__(self, team: Team):
        with warnings.catch_warnings():  # mlflow.server's import of Starlette's WSGI middleware
            warnings.simplefilter("ignore")
            from mlflow.server.auth.client import AuthServiceClient

        self.client, self.password = (AuthServiceClient(team.tracking_uri),
                                      team.credentials()["MLFLOW_TRACKING_PASSWORD"])

    def __getattr__(self, method: str):
        def call(*args, **kwargs):
            with _logged_in(ADMIN, self.password):
                return getattr(self.client, method)(*args, **kwargs)
        return call


def _mlflow_admin(team: Team) -> _AdminClient:
    from dlprojects.core.tracking import check_reachable

    admin = _AdminClient(team)
    with _logged_in(ADMIN, admin.password):
        check_reachable(team.tracking_uri)
    return admin


@contextlib.contextmanager
def _logged_in(user: str, password: str):
    """MLflow's clients read the login from the environment: `user`'s, for this block."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(zip(names, (user, password)))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _iam(team: Team):
    values = team.credentials()
    return _client("iam", team.s3_endpoint, values)


def _client(service: str, endpoint: str, keys: dict[str, str]):
    import botocore.session

    return botocore.session.get_session().create_client(
        service, endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])


def print_identity(identity: dict[str, str], name: str) -> None:
    print(f"# {name}'s identity: hand these lines to {name} privately (they hold a password and "
          f"S3 keys); in {name}'s clone `python -m dlprojects.team join` reads them from standard "
          f"input", file=sys.stderr)
    for key, value in identity.items():
        print(f"{key}={value}")
