"""Aggregator replicas as ``bus-tasks serve`` processes on one broker, and asking each of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bus_tasks import transport
from bus_tasks.client import TasksClient
from bus_tasks.testing import wait_until
from support.processes import Process, start_serve


def replica(url: str, tmp_path: Path, name: str) -> Process:
    """A replica named ``name``, its data under ``tmp_path / name``, once it is ready."""
    return start_serve(url, tmp_path / name, BUS_TASKS_AGGREGATOR_NAME=name)


def rpc_queues(client: TasksClient, *replicas: str) -> dict[str, str]:
    """Each named replica's own request queue, once every one of them is listed."""

    def listed() -> dict[str, str] | None:
        # Whichever replica answers lists them all: each has heard the others' heartbeats.
        answers = [{a["name"]: a["rpcQueue"] for a in client.aggregators()} for _ in range(2 * len(replicas))]
        ok = all(set(replicas) <= set(queues) for queues in answers)
        return answers[0] if ok else None

    return wait_until(listed, timeout_s=30, what=f"replicas {replicas} listed by each")


def answer(url: str, rpc_queue: str) -> dict[str, Any]:
    """The revision and the tasks of one replica, asked through its own queue."""
    with TasksClient(transport.open(url), timeout_s=10.0, rpc_queue=rpc_queue) as client:
        return client.get_all_tasks(options={"revision": True})
