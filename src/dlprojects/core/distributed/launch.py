"""Starting a stage as torchrun processes: on one node by itself, across nodes from the same
three environment variables on every node (see `dlprojects.core.distributed`)."""

from __future__ import annotations

import os
import socket
import sys
import time

from dlprojects.core.distributed import ENDPOINT, World, processes_per_node
from dlprojects.core.errors import UserError

NNODES, NODE_RANK = "DLPROJECTS_NNODES", "DLPROJECTS_NODE_RANK"
TIMEOUT = "DLPROJECTS_RDZV_TIMEOUT"  # seconds to wait for the other nodes (default 600)


def _topology() -> tuple[int, int, str]:
    try:
        nodes, node_rank = int(os.environ.get(NNODES, "1")), int(os.environ.get(NODE_RANK, "0"))
    except ValueError:
        raise UserError(f"{NNODES} and {NODE_RANK} must be whole numbers") from None
    endpoint = os.environ.get(ENDPOINT, "")
    if nodes < 1 or not 0 <= node_rank < nodes:
        raise UserError(f"{NODE_RANK}={node_rank} is not a node of {NNODES}={nodes}; number "
                        f"the nodes 0 to {nodes - 1}")
    if nodes > 1 and ":" not in endpoint:
        raise UserError(f"{NNODES}={nodes} needs {ENDPOINT}=host:port of node 0 on every node")
    return nodes, node_rank, endpoint


def torchrun_arguments(processes: int, argv: list[str]) -> list[str]:
    """The `torchrun` command line (without `torchrun`) that runs `argv` as this node's share."""
    nodes, node_rank, endpoint = _topology()
    if nodes == 1:
        placement = ["--standalone"]
    else:
        placement = ["--node-rank", str(node_rank), "--rdzv-endpoint", endpoint,
                     "--rdzv-conf", f"timeout={os.environ.get(TIMEOUT, '600')}"]
    return ["--nnodes", str(nodes), "--nproc-per-node", str(processes), "--max-restarts", "0",
            *placement, *argv]


def _this_command() -> list[str]:
    """This process's command line as torchrun's script and arguments: `-m module ...` when it
    was started as `python -m module`, so each rank imports its package as this process did."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None and spec.name:
        return ["-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    return list(sys.argv)


def _wait_for_node_0(endpoint: str, timeout: float) -> None:
    """Until node 0's launcher listens at `endpoint`, or a clear line after `timeout` seconds."""
    host, port = endpoint.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise UserError(f"node 0 did not answer at {ENDPOINT}={endpoint} within "
                                f"{timeout:.0f} s ({error.strerror or error}); start node 0 "
                                f"first, with the same {NNODES} and {ENDPOINT}") from None
            time.sleep(1)


def launch(setting: int | str) -> None:
    """Run this stage under torchrun when `distributed.processes` (`setting`) or the nodes ask for
    more than this one process; exits with the launched run's status. Returns at once in a
    process torchrun started, and when one process is all there is to run."""
    if World.from_environment().size > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        return
    processes = processes_per_node(setting)
    if processes == 1 and _topology()[0] == 1:
        return
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError

    nodes, node_rank, endpoint = _topology()
    if nodes == 1:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one node: the loopback interface
    elif node_rank > 0:
        _wait_for_node_0(endpoint, float(os.environ.get(TIMEOUT, "600")))
    command = _this_command()
    args = torchrun.parse_args(torchrun_arguments(processes, command))
    print(f"{command[1] if command[0] == '-m' else os.path.basename(command[0])}: {processes} "
          f"processes on this node "
          f"(torchrun {' '.join(torchrun_arguments(processes, ['...']))})", file=sys.stderr)
    try:
        torchrun.run(args)
    except SignalException:  # Ctrl-C or a kill: the ranks were stopped, the checkpoint stays
        print("error: interrupted; run the stage again to resume", file=sys.stderr)
        raise SystemExit(130) from None
    except ChildFailedError as failure:  # each rank has already said why, in one line
        _, first = failure.get_first_failure()
        raise SystemExit(first.exitcode if first.exitcode > 0 else 1) from None
    except (RendezvousError, RuntimeError, OSError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise UserError(f"the rendezvous at {os.environ.get(ENDPOINT) or 'localhost'} failed "
                        f"({reason}); start every node with the same {NNODES} and {ENDPOINT}, "
                        f"with node 0 reachable there") from None
    raise SystemExit(0)


