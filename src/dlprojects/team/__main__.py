"""python -m dlprojects.team up | down | env (see `dlprojects.team`)."""

import argparse
from pathlib import Path

from dlprojects.core.errors import run_main
from dlprojects.core.lineage import project_root
from dlprojects.team import Team
from dlprojects.team.servers import SERVERS, down, up


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dlprojects.team", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "env"])
    parser.add_argument("servers", nargs="*", metavar="server",
                        help=f"only these ({', '.join(SERVERS)}); default: all")
    args = parser.parse_args()
    unknown = sorted(set(args.servers) - set(SERVERS))
    if unknown:
        parser.error(f"no server {', '.join(unknown)}: choose from {', '.join(SERVERS)}")
    team, chosen = Team(Path(project_root())), args.servers or list(SERVERS)
    if args.command == "up":
        up(team, chosen)
        print(f"team servers up: MLflow {team.tracking_uri} (user admin), S3 {team.s3_endpoint}, "
              f"PostgreSQL 127.0.0.1:{team.port('postgres')}; `eval $(python -m dlprojects.team "
              f"env)` points this shell at them")
    elif args.command == "down":
        print("; ".join(down(team, chosen)) + "; the data stays in .team/")
    else:
        for name, value in team.client_env().items():
            print(f"export {name}={value}")


if __name__ == "__main__":
    run_main(main)
