"""Isolated brokers for tests: a URL per transport, own vhost or key prefix, and a running system."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from bus_tasks import transport
from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.subsystem.runner import SubsystemRunner
from bus_tasks.testing import reset_memory_transport
from bus_tasks.transport import BrokerAdmin, Bus, BusOptions, TopologyOptions

CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
RABBITMQ = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)


def admin_of(bus: Bus) -> BrokerAdmin:
    """The broker admin on ``bus``'s connection (every transport under test offers one)."""
    admin = transport.admin(bus)
    assert admin is not None, f"{bus!r} offers no BrokerAdmin"
    return admin


def _reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, address: tuple[str, int]) -> None:
    """Skip without the service on a laptop; fail when CI is set."""
    if _reachable(address):
        return
    message = f"{name} is not reachable on {address[0]}:{address[1]}"
    if CI:
        pytest.fail(f"{message} (CI is set: real-service tests must run)")
    pytest.skip(message)


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


@dataclass
class Broker:
    """One isolated broker namespace: a URL plus, for Redis, a key prefix of its own."""

    transport: str
    url: str
    redis_key_prefix: str = ""
    _opened: list[Bus] = field(default_factory=list)

    def connection(
        self,
        *,
        confirm_publish: bool = True,
        options: TopologyOptions | None = None,
        connect_retries: int | None = None,
    ) -> Bus:
        conn = transport.open(
            self.url,
            BusOptions(
                confirm_publish=confirm_publish,
                redis_key_prefix=self.redis_key_prefix,
                connect_timeout_s=5.0,
                connect_retries=connect_retries,
                topology=options or TopologyOptions(),
            ),
        )
        self._opened.append(conn)
        return conn

    def connect(self, *, confirm_publish: bool = False, connect_retries: int | None = None) -> Bus:
        """A connection as a subsystem runner asks for one (``bus_tasks.subsystem.runner.Connect``)."""
        return self.connection(confirm_publish=confirm_publish, connect_retries=connect_retries)

    def via(self, port: int) -> str:
        """This broker's AMQP URL (same vhost) reached through a proxy on loopback ``port``."""
        vhost = self.url.rsplit("/", 1)[1]
        return f"amqp://guest:guest@127.0.0.1:{port}/{vhost}"

    def close_all(self) -> None:
        for conn in self._opened:
            with contextlib.suppress(Exception):  # already closed or broker gone: teardown goes on
                conn.close()
        self._opened.clear()


def purge_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (a test's own namespace on a shared Redis)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def delete_rabbitmq_queues(vhost: str) -> None:
    """Delete every queue of ``vhost`` on the machine's RabbitMQ (a shared vhost, emptied after a test)."""
    listed = rabbitmqctl("list_queues", "-p", vhost, "name", "--no-table-headers")
    queues = [line.strip() for line in listed.splitlines() if line.strip()]
    if not queues:
        return
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    for name in queues:
        # One connection per queue: deleting a queue another live connection holds exclusively
        # is refused and closes the channel; the other queues are deleted all the same.
        conn = transport.open(url, BusOptions(connect_retries=3))
        try:
            admin_of(conn).delete_queues([name])
        except conn.errors:
            pass
        finally:
            conn.close()


TRANSPORTS = [
    "memory",
    "fakeredis",
    pytest.param("redis", marks=pytest.mark.integration),
    pytest.param("rabbitmq", marks=pytest.mark.integration),
]


def make_broker(transport: str, request: pytest.FixtureRequest) -> Iterator[Broker]:
    if transport == "memory":
        reset_memory_transport()
        broker = Broker("memory", "memory://")
        yield broker
        broker.close_all()
        reset_memory_transport()
    elif transport in ("fakeredis", "redis"):
        if transport == "redis":
            require_service("Redis", REDIS)
            host, port = REDIS
        else:
            host, port = request.getfixturevalue("fakeredis_server")
        prefix = f"bus_tasks_test:{uuid.uuid4().hex[:12]}:"
        broker = Broker(transport, f"redis://{host}:{port}/0", redis_key_prefix=prefix)
        yield broker
        broker.close_all()
        purge_redis_prefix(broker.url, prefix)
    elif transport == "rabbitmq":
        # A vhost of this test alone (made in batches: support/vhosts.py), so nothing of an
        # earlier test is left in it and none of this test's queues needs deleting after it.
        pool = request.getfixturevalue("rabbitmq_vhosts")
        vhost = pool.take()
        broker = Broker("rabbitmq", f"amqp://guest:guest@127.0.0.1:5672/{vhost}")
        yield broker
        broker.close_all()
        pool.done(vhost)
    else:  # pragma: no cover - a typo in a parametrization
        raise ValueError(transport)


@dataclass
class System:
    """A running aggregator plus factories for publishers and clients on one broker."""

    broker: Broker
    aggregator: Aggregator
    _runners: list[SubsystemRunner] = field(default_factory=list)

    def publisher(self, subsystem: str, *, listen: bool = False) -> TaskPublisher:
        """A publisher; with ``listen``, it answers control commands in a thread of its own."""
        pub = TaskPublisher(self.broker.connection(), subsystem)
        if listen:
            self.listen(pub)
        return pub

    def listen(self, pub: TaskPublisher) -> None:
        """Let ``pub`` answer control commands from now on, in a thread of its own."""
        self.serve(pub)

    def serve(self, pub: TaskPublisher, control: Bus | None = None) -> threading.Event:
        """Let ``pub`` answer control commands and beat in a thread until the returned event is
        set (the system's stop sets it too); ``control``: a connection it already listens on."""
        runner = SubsystemRunner(pub, self.broker.connect)
        runner.serve_control(control)
        self._runners.append(runner)
        return runner.stop

    def client(self, timeout_s: float = 10.0) -> TasksClient:
        return TasksClient(self.broker.connection(confirm_publish=False), timeout_s=timeout_s)

    def stop_threads(self) -> None:
        for runner in self._runners:
            runner.stop.set()
        for runner in self._runners:
            runner.stop_serving(5.0)


SystemFactory = Callable[..., System]
