"""python -m dlprojects.team up | down | env | add NAME | remove NAME | join (see
`dlprojects.team` and `dlprojects.team.people`)."""

import argparse
import sys
from pathlib import Path

from dlprojects.core.errors import run_main
from dlprojects.core.lineage import project_root
from dlprojects.team import Team, people
from dlprojects.team.servers import SERVERS, down, up


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dlprojects.team", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, says in (("up", "start (or check) the servers"), ("down", "stop them")):
        commands.add_parser(command, help=says).add_argument(
            "servers", nargs="*", metavar="server",
            help=f"only these ({', '.join(SERVERS)}); default: all")
    commands.add_parser("env", help="the variables that point a shell at the servers")
    for command, says in (("add", "make a colleague's login and S3 keys; print them"),
                          ("remove", "revoke a colleague's login and S3 keys")):
        commands.add_parser(command, help=says).add_argument("name")
    commands.add_parser("join", help="keep in this clone the identity `add` printed (stdin)")
    args = parser.parse_args()
    unknown = sorted(set(getattr(args, "servers", [])) - set(SERVERS))
    if unknown:
        parser.error(f"no server {', '.join(unknown)}: choose from {', '.join(SERVERS)}")
    team = Team(Path(project_root()))
    if args.command == "up":
        up(team, args.servers or list(SERVERS))
        print(f"team servers up: MLflow {team.tracking_uri} (user admin), S3 {team.s3_endpoint}, "
              f"PostgreSQL 127.0.0.1:{team.port('postgres')}; `eval $(python -m dlprojects.team "
              f"env)` points this shell at them")
    elif args.command == "down":
        print("; ".join(down(team, args.servers or list(SERVERS))) + "; the data stays in .team/")
    elif args.command == "env":
        for name, value in team.client_env().items():
            print(f"export {name}={value}")
    elif args.command == "add":
        with people.servers_answer(f"adding {args.name}"):
            people.print_identity(people.add(team, args.name), args.name)
    elif args.command == "remove":
        with people.servers_answer(f"removing {args.name}"):
            print(f"{args.name}: revoked {', '.join(people.remove(team, args.name))}")
    else:
        identity = people.join(team, sys.stdin.read())
        print(f"this clone is {identity['MLFLOW_TRACKING_USERNAME']}'s on the team's servers; "
              f"`eval $(python -m dlprojects.team env)` points a shell at them")


if __name__ == "__main__":
    run_main(main)
