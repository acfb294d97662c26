"""``bus-tasks health``: does one named aggregator answer on its own RPC queue (a container's or
a unit's health check)? An answer through the shared queue could come from any replica."""

from __future__ import annotations

import argparse
import socket
import sys

from bus_tasks.client import TasksClient
from bus_tasks.config import Settings
from bus_tasks.protocol.methods import MethodName
from bus_tasks.workers import wiring

SUMMARY = "exit 0 if the aggregator NAME answers on its own RPC queue (a per-replica health check)"
EXIT_UNHEALTHY = 1
CONNECT_RETRIES = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--aggregator",
        metavar="NAME",
        help="the aggregator to ask (default: setting aggregator_name, else the host's name: "
        "in an aggregator's own container or unit, itself)",
    )


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    """Find NAME's own queue in ``Host.getAggregators``, then ask it there: it must answer first."""
    name = args.aggregator or settings.aggregator_name or socket.gethostname()
    timeout_s = args.timeout if args.timeout is not None else settings.rpc_timeout_s
    connection = wiring.connect(settings, connect_retries=CONNECT_RETRIES)
    with TasksClient(connection, timeout_s=timeout_s, trust=settings.trust) as client:
        rows = {row["name"]: row for row in client.aggregators()}
        if name not in rows:
            serving = ", ".join(sorted(rows)) or "none"
            return _unhealthy(f"aggregator {name!r} is not serving (serving: {serving})")
        answer = client.call(MethodName.GET_AGGREGATORS, rpc_queue=rows[name]["rpcQueue"])
    if not answer or answer[0]["name"] != name:
        return _unhealthy(f"aggregator {name!r}'s own queue was answered by another")
    if args.json:
        print('{"healthy": true}')
    return 0


def _unhealthy(reason: str) -> int:
    print(f"bus-tasks health: {reason}", file=sys.stderr)
    return EXIT_UNHEALTHY
