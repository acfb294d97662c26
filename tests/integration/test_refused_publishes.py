"""Messages a real RabbitMQ refuses for good (SPEC section 14): over its max_message_size, or to
an exchange the user may not write. Against a node of the tests' own with a small limit (the
machine's shared broker keeps its configuration): each refusal is logged once, never re-sent
in a loop, and the aggregator keeps answering other calls."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from support.brokers import Broker, System, SystemFactory
from support.own_rabbit import OwnRabbit, available
from support.vhosts import VhostPool

from bus_tasks import names, transport
from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.errors import DeadlineExceeded, GeneralError, PublishRefused, ReplyTooLarge
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until
from bus_tasks.transport import BusOptions
from bus_tasks.transport.kombu import BusConnection

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MAX_MESSAGE_SIZE = 65_536
SMALL_BROKER = f"max_message_size = {MAX_MESSAGE_SIZE}\n"  # the listener and users: OwnRabbit's own
REFUSED_LINE = "for good, not re-sent"


@pytest.fixture(scope="session")
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRabbit]:
    """A RabbitMQ node refusing messages over 64 KiB, for the session (one per xdist worker)."""
    if not available():
        if os.environ.get("CI"):
            pytest.fail("RabbitMQ is not installed (CI is set: real-service tests must run)")
        pytest.skip("RabbitMQ is not installed here")
    node = OwnRabbit(tmp_path_factory.mktemp("rabbit"), prefix="bt-small")
    try:
        node.start(config=SMALL_BROKER)
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def small_vhosts(small_node: OwnRabbit) -> Iterator[VhostPool]:
    pool = VhostPool(small_node.ctl, "bt_refused")
    yield pool
    pool.close()


@pytest.fixture
def small_broker(small_node: OwnRabbit, small_vhosts: VhostPool) -> Iterator[Broker]:
    """A vhost of this test alone on the small node."""
    vhost = small_vhosts.take()
    broker = Broker("rabbitmq", f"amqp://guest:guest@127.0.0.1:{small_node.port}/{vhost}")
    yield broker
    broker.close_all()
    small_vhosts.done(vhost)


def _reconnects(system: System) -> int:
    connection = system.aggregator.connection
    assert isinstance(connection, BusConnection)
    return int(connection.reconnects)


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if REFUSED_LINE in r.getMessage()]


def test_a_reply_over_the_brokers_limit_fails_the_call_once_and_the_aggregator_serves_on(
    small_broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    system = start_system(small_broker)  # max_reply_bytes at its default: far over the broker's
    pub = system.publisher("vdsm")
    ids = [pub.create("copyImage", ["spm"], state=State.RUNNING, message="m" * 300).id for _ in range(300)]
    pub.flush(10.0)
    wait_until(lambda: len(system.aggregator.view) == 300, timeout_s=30, what="300 tasks in the view")
    client = system.client(timeout_s=3.0)
    # The first reply over the limit is refused by the broker after it was sent: the call fails
    # (at its deadline, or at once); the broker's limit is known from then on.
    with pytest.raises((DeadlineExceeded, ReplyTooLarge)):
        client.call("Host.getAllTasks", {})
    with pytest.raises(ReplyTooLarge):
        client.call("Host.getAllTasks", {})  # refused before sending now: at once
    assert client.get_task_status(ids[0])["taskID"] == ids[0]
    assert set(client.get_all_tasks()) == set(ids)  # paged, pages halved until they pass
    assert len(_refusals(caplog)) == 1
    assert _reconnects(system) <= 1


def test_an_event_over_the_brokers_limit_fails_its_flush_once_and_the_publisher_goes_on(
    small_broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    system = start_system(small_broker)
    pub = TaskPublisher(transport.open(small_broker.url, BusOptions(confirm_publish=True)), "vdsm")
    try:
        big = pub.create("copyImage", ["spm"], data={"blob": "x" * (MAX_MESSAGE_SIZE + 1)})
        with pytest.raises(PublishRefused, match="message size"):
            pub.flush(10.0)
        small = pub.create("copyImage", ["spm"])
        pub.flush(10.0)
        client = system.client()
        wait_until(lambda: small.id in client.get_all_tasks(), timeout_s=20, what="the small task listed")
        assert big.id not in client.get_all_tasks()
        assert len(_refusals(caplog)) == 1
    finally:
        pub.close()


@pytest.fixture
def no_control_user(small_node: OwnRabbit, small_broker: Broker) -> Iterator[Broker]:
    """The test's vhost as a user who may write anywhere but to the control exchange (set up
    before the aggregator that uses it, so that it is deleted only after that one stopped)."""
    vhost = small_broker.url.rsplit("/", 1)[1]
    user, password = f"bt_agg_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    small_node.ctl("add_user", user, password)
    small_node.ctl("set_permissions", "-p", vhost, user, ".*", f"^(?!{names.CONTROL_EXCHANGE}$).*", ".*")
    yield Broker("rabbitmq", f"amqp://{user}:{password}@127.0.0.1:{small_node.port}/{vhost}")
    with contextlib.suppress(subprocess.CalledProcessError):
        small_node.ctl("delete_user", user)


def test_a_control_message_the_broker_refuses_answers_100_once_and_the_aggregator_serves_on(
    small_broker: Broker,
    no_control_user: Broker,
    start_system: SystemFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    system = start_system(no_control_user)  # each command it forwards is refused by the broker
    pub = TaskPublisher(transport.open(small_broker.url, BusOptions(confirm_publish=True)), "vdsm")
    try:
        task = pub.create("copyImage", ["spm"], state=State.RUNNING)
        pub.flush(10.0)
        client = TasksClient(small_broker.connection(confirm_publish=False), timeout_s=3.0)
        wait_until(lambda: task.id in client.get_all_tasks(), timeout_s=20, what="the task listed")
        with pytest.raises(GeneralError):
            client.stop_task(task.id)  # refused at the broker: the caller hears 100, no loop
        assert client.get_task_status(task.id)["taskState"] == "running"
        assert len(_refusals(caplog)) == 1
        assert "ACCESS_REFUSED" in _refusals(caplog)[0]
        assert _reconnects(system) <= 1
    finally:
        pub.close()
