"""A RabbitMQ cluster of a test run's own: three nodes on loopback ports, one Erlang cookie.

``OwnCluster(base).start()`` launches the nodes together (8-10 s), joins the second and third
to the first and returns once all three run as one cluster; ``url(vhost)`` names every node
(``amqp://...;amqp://...;amqp://...``) as a bus_tasks process is given it. ``kill(node)`` is
kill -9; ``restart(node)`` starts it again on its own files, and it rejoins. About 385 MB.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from support.own_rabbit import CTL_TIMEOUT_S, OwnRabbit

JOIN_TIMEOUT_S = 60.0


class OwnCluster:
    """Three (``size``) nodes under ``base``, stopped by :meth:`stop`."""

    def __init__(self, base: Path, size: int = 3) -> None:
        cookie = uuid.uuid4().hex.upper()
        self.nodes = [
            OwnRabbit(base / f"node{n}", prefix=f"bt-c{n}", cookie=cookie) for n in range(1, size + 1)
        ]

    def start(self) -> None:
        for node in self.nodes:
            node.launch()
        try:
            for node in self.nodes:
                node.await_started()
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.name)
                node.ctl("start_app")
            self.await_running(*self.nodes)
        except BaseException:
            self.stop()
            raise

    def running_nodes(self, asked: OwnRabbit | None = None) -> set[str]:
        """The names of the nodes the cluster counts as running, as one running node sees it."""
        node = asked or next(n for n in self.nodes if n.running)
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def await_running(self, *nodes: OwnRabbit) -> None:
        """Return once every one of ``nodes`` runs in the cluster (a restarted one has rejoined)."""
        wanted = {node.name for node in nodes}
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while True:
            seen: set[str] = set()
            try:
                seen = self.running_nodes()
            except Exception:  # a node on its way up may not answer yet
                seen = set()
            if wanted <= seen:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {sorted(wanted - seen)} not running after {JOIN_TIMEOUT_S} s")
            time.sleep(0.2)  # polling rabbitmqctl, within the deadline

    def url(self, vhost: str, nodes: list[OwnRabbit] | None = None, *, password: str = "guest") -> str:
        """A bus_tasks broker URL naming ``nodes`` (all of them by default), in that order."""
        chosen = self.nodes if nodes is None else nodes
        return ";".join(f"amqp://guest:{password}@127.0.0.1:{node.port}/{vhost}" for node in chosen)

    def node_at(self, url: str) -> OwnRabbit:
        """The node a one-node URL (a link's ``node_url``) points at."""
        port = int(url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        return next(node for node in self.nodes if node.port == port)

    def add_vhost(self, vhost: str) -> None:
        ctl = self.nodes[0].ctl
        ctl("add_vhost", vhost)
        ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def queue_info(self, vhost: str, *items: str) -> dict[str, list[str]]:
        """``list_queues name ITEMS`` on a running node: name -> the items' values, as text."""
        node = next(n for n in self.nodes if n.running)
        output = node.ctl("list_queues", "-q", "--no-table-headers", "-p", vhost, "name", *items)
        rows = [line.split("\t") for line in output.splitlines() if line.strip()]
        return {row[0]: row[1:] for row in rows}

    def kill(self, node: OwnRabbit) -> None:
        node.kill()

    def restart(self, node: OwnRabbit) -> None:
        """Start a killed node again and return once it has rejoined the cluster."""
        node.relaunch()
        node.await_started()
        self.await_running(*self.nodes)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


__all__ = ["CTL_TIMEOUT_S", "OwnCluster"]
