"""Fixtures: one broker per transport, each test isolated (own vhost queues, own Redis prefix)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
from support.brokers import (
    RABBITMQ,
    TRANSPORTS,
    Broker,
    System,
    SystemFactory,
    make_broker,
    rabbitmqctl,
    require_service,
)
from support.vhosts import VhostPool

from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.store import Store
from bus_tasks.testing import RunningAggregator
from bus_tasks.transport import TopologyOptions


@pytest.fixture(scope="session")
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this test run, deleted at the end."""
    require_service("RabbitMQ", RABBITMQ)
    vhost = f"bus_tasks_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def rabbitmq_vhosts() -> Iterator[VhostPool]:
    """Fresh vhosts on the machine's RabbitMQ, one per test that asks (see support/vhosts.py)."""
    require_service("RabbitMQ", RABBITMQ)
    pool = VhostPool(rabbitmqctl, f"bus_tasks_test_{os.getpid()}")
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def fakeredis_server() -> Iterator[tuple[str, int]]:
    """A fakeredis server on a free loopback port (kombu's redis transport needs a real socket)."""
    from fakeredis import TcpFakeServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", port)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=TRANSPORTS)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """An isolated broker, once per transport: memory, fakeredis, redis, rabbitmq."""
    yield from make_broker(request.param, request)


@pytest.fixture
def memory_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    yield from make_broker("memory", request)


@pytest.fixture
def rabbitmq_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    yield from make_broker("rabbitmq", request)


@pytest.fixture
def redis_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    yield from make_broker("redis", request)


@pytest.fixture
def start_system() -> Iterator[SystemFactory]:
    """Start an aggregator on a broker: ``start_system(broker, store=None, policy=None,
    options=None)`` (``options``: its topology, e.g. its replica name)."""
    started: list[tuple[System, RunningAggregator]] = []

    def start(
        broker: Broker,
        *,
        store: Store | None = None,
        policy: AggregatorPolicy | None = None,
        options: TopologyOptions | None = None,
    ) -> System:
        aggregator = Aggregator(broker.connection(options=options), store=store, policy=policy)
        running = RunningAggregator(aggregator)
        running.__enter__()
        system = System(broker, aggregator)
        started.append((system, running))
        return system

    yield start
    for system, running in reversed(started):
        system.stop_threads()
        running.__exit__(None, None, None)


@pytest.fixture
def system(broker: Broker, start_system: SystemFactory) -> System:
    """A running aggregator on each transport in turn."""
    return start_system(broker)


@pytest.fixture
def memory_system(memory_broker: Broker, start_system: SystemFactory) -> System:
    return start_system(memory_broker)


@pytest.fixture
def rabbitmq_system(rabbitmq_broker: Broker, start_system: SystemFactory) -> System:
    return start_system(rabbitmq_broker)


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the processes the tests start, however this run was started.

    A shell starting a command in the background without job control (``.ci/run &``, nohup)
    starts it with SIGINT ignored, and an ignored signal stays ignored across fork and exec:
    every ``bus-tasks`` a test interrupts (the watch's stop, Ctrl-C while it loads) would run
    on. The default handler here makes the children start with SIGINT at its default, which
    Python turns into KeyboardInterrupt as usual.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, hand out the longest modules first (``LONGEST_MODULES``), then the other
    integration modules: a module runs whole on one worker (``--dist loadfile
    --no-loadscope-reorder``), and a long one started last would end the run alone. A serial
    run keeps the collection order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    items.sort(key=_handed_out)


# The modules that take longest on one worker, longest first (their wall times in a CI run of
# 2026-12-07, 90 to 385 s): handed out before any other, so that none of them starts last.
LONGEST_MODULES = (
    "tests/integration/test_cluster.py",
    "tests/integration/test_cli.py",
    "tests/integration/test_restarts.py",
    "tests/integration/test_gluster.py",
    "tests/contract/test_watch.py",
    "tests/integration/test_cli_edges.py",
    "tests/integration/test_store_faults.py",
    "tests/integration/test_broker_tls.py",
    "tests/contract/test_bad_input.py",
)


def _handed_out(item: pytest.Item) -> tuple[int, int]:
    module = item.nodeid.split("::")[0]
    if module in LONGEST_MODULES:
        return (0, LONGEST_MODULES.index(module))
    return (1 if "integration" in module.split("/") else 2, 0)  # a stable sort keeps the rest's order
