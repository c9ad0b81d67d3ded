"""`genlab train|resume ... --nproc-per-node N`: genlab's launcher for several processes.

It wraps torchrun's elastic agent (`torch.distributed.launcher.api.elastic_launch`, the code
behind the `torchrun` command; c10d rendezvous at --master-addr:--master-port, hosted by node
0) and adds what torchrun cannot know:

- the config and the run directory are checked in the launching process, before any worker
  starts, so a bad config is one line and exit 2 with no worker started (the run directory on
  node 0, where it is written; the others only check the config);
- the workers' exit codes keep genlab's meaning: every worker that stops on a user error
  exits 2 (a guard abort 3), and the launcher returns that code instead of torchrun's 1 and
  its `ChildFailedError` traceback. Only rank 0 prints genlab's one-line message;
- `--max-restarts K`: when a worker dies, the agent brings the group down and back up to K
  times, and the restarted workers resume the run by themselves (training/elastic.py). A
  user error or guard abort is not retried: the restarted workers repeat its exit code.

Plain `torchrun ... -m genlab.cli train ...` keeps working (the README shows it for clusters
that already launch with torchrun); its exit code is then torchrun's: 0 or 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Sequence

from genlab.errors import EXIT_GUARD_ABORT, EXIT_UNEXPECTED, EXIT_USER_ERROR, ConfigError

LAUNCH_FLAGS = (
    "--nproc-per-node",
    "--nnodes",
    "--node-rank",
    "--master-addr",
    "--master-port",
    "--max-restarts",
)


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The multi-process options of `genlab train` and `genlab resume`."""
    group = parser.add_argument_group("several processes (DDP/FSDP/pipeline; see train.strategy)")
    group.add_argument(
        "--nproc-per-node", type=int, default=1, help="worker processes on this machine"
    )
    group.add_argument("--nnodes", type=int, default=1, help="machines taking part")
    group.add_argument("--node-rank", type=int, default=0, help="this machine's index")
    group.add_argument(
        "--master-addr", default="127.0.0.1", help="address of node 0 (rendezvous host)"
    )
    group.add_argument(
        "--master-port", type=int, default=None, help="rendezvous port (one node: a free one)"
    )
    group.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="restart the group up to K times when a worker dies; the run resumes by itself",
    )


def wants_launch(args: argparse.Namespace) -> bool:
    return args.nproc_per_node != 1 or args.nnodes != 1 or args.max_restarts != 0


def check_launch_arguments(args: argparse.Namespace) -> None:
    if args.nproc_per_node < 1 or args.nnodes < 1:
        raise ConfigError(
            f"--nproc-per-node and --nnodes must be >= 1, got {args.nproc_per_node} and "
            f"{args.nnodes}; use e.g. --nproc-per-node 2"
        )
    if not 0 <= args.node_rank < args.nnodes:
        raise ConfigError(
            f"--node-rank must be in [0, {args.nnodes - 1}] for --nnodes {args.nnodes}, got "
            f"{args.node_rank}; number the machines 0..{args.nnodes - 1}"
        )
    if args.nnodes > 1 and args.master_port is None:
        raise ConfigError(
            f"--nnodes {args.nnodes} needs --master-port (and --master-addr, node 0's address) "
            "so the machines meet; use the same values on every node, e.g. --master-port 29500"
        )
    if args.max_restarts < 0:
        raise ConfigError(
            f"--max-restarts must be >= 0, got {args.max_restarts}; use e.g. --max-restarts 2"
        )
    if args.master_port is not None and not 0 < args.master_port < 65536:
        raise ConfigError(
            f"--master-port must be a port number in 1..65535, got {args.master_port}"
        )


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line each worker runs: this one without the launch options."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCH_FLAGS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def launch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run `genlab <argv without launch options>` in nproc_per_node worker processes on this
    node (joining `nnodes` nodes through a c10d rendezvous at master_addr:master_port, which
    node 0 hosts), restarting the group up to max_restarts times, and return genlab's exit
    code for the group."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from genlab.training.elastic import LAUNCH_STATE

    # torchrun's agent logs every failed worker with a traceback; genlab's workers already
    # said what went wrong in one line.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    port = args.master_port if args.master_port is not None else free_port(args.master_addr)
    config = LaunchConfig(
        min_nodes=args.nnodes,
        max_nodes=args.nnodes,
        nproc_per_node=args.nproc_per_node,
        # Every node of one run must name the same rendezvous; one node: a fresh name.
        run_id=f"genlab-{uuid.uuid4().hex[:8]}" if args.nnodes == 1 else f"genlab-{port}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"{args.master_addr}:{port}",
        rdzv_configs={"is_host": args.node_rank == 0},
        max_restarts=args.max_restarts,
        monitor_interval=0.1,
        start_method="spawn",
    )
    child = ["-m", "genlab.cli", *worker_argv(argv)]
    # This node's workers record there an exit code that a restart would only repeat.
    state = tempfile.mkdtemp(prefix="genlab-launch-")
    env = {
        LAUNCH_STATE: state,
        # The workers' process group gets a store of its own each attempt: with the store
        # the rendezvous shares by default, a restarted group can read the previous
        # attempt's addresses and fail to connect (pytorch/pytorch#135712).
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        elastic_launch(config, entrypoint=sys.executable)(*child)
    except ChildFailedError as exc:
        return group_exit_code([f.exitcode for f in exc.failures.values()])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(state, ignore_errors=True)
    return 0


def free_port(host: str) -> int:
    """A port nothing listens on now (one node: the rendezvous stays on this machine)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def group_exit_code(codes: Sequence[int]) -> int:
    """One exit code for a group of failed workers. Once a worker fails, the agent stops the
    others with SIGTERM (a negative code), so the workers that exited by themselves decide: a
    user error (2) or guard abort (3) when they agree on it (they meet the same input, and the
    guard decides alike on every rank), else 1 (a crash, or ranks disagreeing)."""
    distinct = {c for c in codes if c >= 0}
    if distinct in ({EXIT_USER_ERROR}, {EXIT_GUARD_ABORT}):
        return distinct.pop()
    print(
        f"genlab: error: worker processes failed with exit codes {sorted(distinct)}; "
        "see their output above",
        file=sys.stderr,
    )
    return EXIT_UNEXPECTED
