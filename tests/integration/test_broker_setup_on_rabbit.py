"""``bus-tasks broker-setup`` for real: its document imported into a RabbitMQ node of the test's
own, then every user tried with real connections, what it may do and what the broker refuses."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import amqp
import pytest
from kombu.connection import Connection
from support.brokers import CI
from support.cli_helpers import run_cli
from support.own_rabbit import OwnRabbit, available

from bus_tasks import names

pytestmark = pytest.mark.integration

VHOST = "bus"
CONFIRM_TIMEOUT_S = 10.0
OWN = "0123456789abcdef" * 2  # a private queue's uuid part


@dataclass
class Deployment:
    node: OwnRabbit
    document: dict[str, Any]
    passwords: dict[str, str]

    def connect(self, user: str) -> Connection:
        password = self.passwords[user]
        url = f"amqp://{user}:{password}@127.0.0.1:{self.node.port}/{VHOST}"
        return Connection(url, connect_timeout=10)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRabbit]:
    if not available():
        message = "no RabbitMQ server installed to start a node of our own"
        if CI:
            pytest.fail(f"{message} (CI is set: real-service tests must run)")
        pytest.skip(message)
    rabbit = OwnRabbit(tmp_path_factory.mktemp("rabbit"))
    rabbit.start()
    try:
        yield rabbit
    finally:
        rabbit.stop()


@pytest.fixture(scope="module")
def deployment(node: OwnRabbit, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    where = tmp_path_factory.mktemp("setup")
    done = run_cli(
        "broker-setup",
        "--vhost",
        VHOST,
        *("--subsystem", "vdsm", "--subsystem", "gluster", "--aggregator", "agg1"),
        *("--reader", "reader1", "--admin", "ops", "--passwords"),
        cwd=where,
    )
    assert done.returncode == 0, done.stderr
    path = where / "definitions.json"
    path.write_text(done.stdout)
    passwords = dict(line.split(" ") for line in done.stderr.splitlines())
    node.import_definitions(path, vhost=VHOST, users=set(passwords))
    return Deployment(node, json.loads(done.stdout), passwords)


def test_the_broker_holds_the_permissions_of_the_document(deployment: Deployment) -> None:
    listed = deployment.node.ctl("list_permissions", "-s", "-p", VHOST).splitlines()
    rows = {tuple(line.split("\t")) for line in listed}
    expected = {
        (p["user"], p["configure"], p["write"], p["read"]) for p in deployment.document["permissions"]
    }
    assert rows == expected
    topics = deployment.node.ctl("list_topic_permissions", "-s", "-p", VHOST).splitlines()
    assert {tuple(line.split("\t")) for line in topics} == {
        (t["user"], t["exchange"], t["write"], t["read"]) for t in deployment.document["topic_permissions"]
    }


def test_the_topology_exists_as_the_processes_declare_it(deployment: Deployment) -> None:
    listed = deployment.node.ctl("list_queues", "-s", "-p", VHOST, "name", "type", "durable").splitlines()
    assert sorted(tuple(line.split("\t")) for line in listed) == sorted(
        [
            (names.EVENT_LOG, "stream", "true"),
            (names.RPC_QUEUE, "classic", "true"),
            (names.DEAD_QUEUE, "classic", "true"),
            *[(f"bus_tasks.control.{s}", "classic", "true") for s in ("vdsm", "gluster", "test")],
        ]
    )


Action = Callable[[Any], object]


def publish(exchange: str, key: str, user_id: str | None) -> Action:
    """A confirmed publish (a refusal is then an error of this call, not of a later one)."""

    def act(channel: Any) -> object:
        channel.confirm_select()
        properties = {"user_id": user_id} if user_id is not None else {}
        message = amqp.Message(b'{"forged": true}', content_type=names.CONTENT_TYPE, **properties)
        channel.basic_publish(message, exchange=exchange, routing_key=key, confirm_timeout=CONFIRM_TIMEOUT_S)
        return None

    return act


def consume(queue: str) -> Action:
    def act(channel: Any) -> object:
        channel.basic_qos(0, 10, False)
        arguments = {"x-stream-offset": "first"} if queue == names.EVENT_LOG else {}
        return channel.basic_consume(queue, callback=lambda message: None, arguments=arguments)

    return act


def own_exchange_bound_to_ours(channel: Any) -> object:
    channel.exchange_declare("mine", "topic", durable=False, auto_delete=True)
    return channel.exchange_bind("mine", names.EVENTS_EXCHANGE, "task.#")


def private_queue(prefix: str, *, bind_to: str | None = None) -> Action:
    def act(channel: Any) -> object:
        name = f"{prefix}{OWN}"
        channel.queue_declare(name, exclusive=True, auto_delete=True)
        if bind_to is not None:
            channel.queue_bind(name, bind_to, "#")
        return None

    return act


def exclusive_queue(name: str) -> Action:
    return lambda channel: channel.queue_declare(name, exclusive=True, auto_delete=True)


ALLOWED = "ok"
# Each row: who, what, and the broker's answer (ok, or the AMQP reply code of the refusal).
TABLE: list[tuple[str, str, Action, object]] = [
    # The legitimate path of each identity.
    ("vdsm", "publishes its own event", publish(names.EVENTS_EXCHANGE, "task.vdsm.created", "vdsm"), ALLOWED),
    ("vdsm", "beats as itself", publish(names.EVENTS_EXCHANGE, "subsystem.vdsm.heartbeat", "vdsm"), ALLOWED),
    ("vdsm", "reads its control queue", consume("bus_tasks.control.vdsm"), ALLOWED),
    ("vdsm", "claims its name", exclusive_queue("bus_tasks.claim.bus_tasks.control.vdsm"), ALLOWED),
    ("agg1", "reads the log", consume(names.EVENT_LOG), ALLOWED),
    ("agg1", "reads the RPC queue", consume(names.RPC_QUEUE), ALLOWED),
    ("agg1", "clears another's task", publish(names.EVENTS_EXCHANGE, "task.vdsm.cleared", "agg1"), ALLOWED),
    (
        "agg1",
        "binds its presence queue",
        private_queue(names.PRESENCE_QUEUE_PREFIX, bind_to="bus_tasks.events"),
        ALLOWED,
    ),
    ("agg1", "commands a subsystem", publish(names.CONTROL_EXCHANGE, "vdsm", "agg1"), ALLOWED),
    ("reader1", "calls", publish("", names.RPC_QUEUE, "reader1"), ALLOWED),
    ("reader1", "makes its reply queue", private_queue(names.REPLY_QUEUE_PREFIX), ALLOWED),
    ("reader1", "watches", private_queue(names.WATCH_QUEUE_PREFIX, bind_to=names.CHANGES_EXCHANGE), ALLOWED),
    ("ops", "injects a test task", publish(names.EVENTS_EXCHANGE, "task.test.created", "ops"), ALLOWED),
    ("ops", "reads the dead letters", consume(names.DEAD_QUEUE), ALLOWED),
    # Forgeries the broker refuses.
    ("vdsm", "another subsystem's key", publish(names.EVENTS_EXCHANGE, "task.gluster.created", "vdsm"), 403),
    ("vdsm", "a forged user_id", publish(names.EVENTS_EXCHANGE, "task.vdsm.created", "gluster"), 406),
    (
        "vdsm",
        "another's heartbeat",
        publish(names.EVENTS_EXCHANGE, "subsystem.gluster.heartbeat", "vdsm"),
        403,
    ),
    ("vdsm", "an aggregator's beat", publish(names.EVENTS_EXCHANGE, "aggregator.agg1.beat", "vdsm"), 403),
    ("vdsm", "a control command", publish(names.CONTROL_EXCHANGE, "gluster", "vdsm"), 403),
    ("vdsm", "a change feed", publish(names.CHANGES_EXCHANGE, "changes.agg1", "vdsm"), 403),
    ("vdsm", "an exchange of its own bound to ours", own_exchange_bound_to_ours, 403),
    (
        "vdsm",
        "a queue of its own on our events",
        private_queue("bus_tasks.reply.", bind_to="bus_tasks.events"),
        403,
    ),
    ("vdsm", "claims another's name", exclusive_queue("bus_tasks.claim.bus_tasks.control.gluster"), 403),
    ("vdsm", "reads the RPC queue", consume(names.RPC_QUEUE), 403),
    ("vdsm", "reads the log", consume(names.EVENT_LOG), 403),
    ("vdsm", "reads another's control queue", consume("bus_tasks.control.gluster"), 403),
    ("vdsm", "deletes the log", lambda channel: channel.queue_delete(names.EVENT_LOG), 403),
    ("vdsm", "purges the log", lambda channel: channel.queue_purge(names.EVENT_LOG), 403),
    ("vdsm", "purges the RPC queue", lambda channel: channel.queue_purge(names.RPC_QUEUE), 403),
    (
        "vdsm",
        "deletes the events exchange",
        lambda channel: channel.exchange_delete(names.EVENTS_EXCHANGE),
        403,
    ),
    ("agg1", "deletes the RPC queue", lambda channel: channel.queue_delete(names.RPC_QUEUE), 403),
    ("agg1", "deletes the log", lambda channel: channel.queue_delete(names.EVENT_LOG), 403),
    (
        "agg1",
        "publishes a subsystem's event",
        publish(names.EVENTS_EXCHANGE, "task.vdsm.created", "agg1"),
        403,
    ),
    ("reader1", "publishes an event", publish(names.EVENTS_EXCHANGE, "task.vdsm.created", "reader1"), 403),
    ("reader1", "reads the RPC queue", consume(names.RPC_QUEUE), 403),
    ("reader1", "reads a control queue", consume("bus_tasks.control.vdsm"), 403),
    ("reader1", "reads the dead letters", consume(names.DEAD_QUEUE), 403),
    ("ops", "publishes a subsystem's event", publish(names.EVENTS_EXCHANGE, "task.vdsm.created", "ops"), 403),
    # What the broker lets through, and the receiver's check of user_id (identity = "broker")
    # dead-letters: no user_id, and a write straight into a queue through the default exchange.
    ("vdsm", "no user_id", publish(names.EVENTS_EXCHANGE, "task.vdsm.created", None), ALLOWED),
    ("vdsm", "the default exchange into the log", publish("", names.EVENT_LOG, "vdsm"), ALLOWED),
]


def outcome(deployment: Deployment, user: str, action: Action) -> object:
    with deployment.connect(user) as connection:
        channel = connection.channel()
        try:
            action(channel)
            channel.basic_qos(0, 10, False)  # a round trip: an asynchronous refusal shows here
        except (amqp.exceptions.AccessRefused, amqp.exceptions.PreconditionFailed) as exc:
            return exc.reply_code
        return ALLOWED


@pytest.mark.parametrize(
    ("user", "what", "action", "expected"), TABLE, ids=[f"{user} {what}" for user, what, _, _ in TABLE]
)
def test_each_identity_may_do_what_its_role_needs_and_nothing_else(
    deployment: Deployment, user: str, what: str, action: Action, expected: object
) -> None:
    assert outcome(deployment, user, action) == expected


def test_an_event_reaches_the_log_with_the_user_id_the_broker_vouched_for(deployment: Deployment) -> None:
    key = "task.gluster.updated"
    assert outcome(deployment, "gluster", publish(names.EVENTS_EXCHANGE, key, "gluster")) == ALLOWED
    with deployment.connect("agg1") as connection:
        channel = connection.channel()
        channel.basic_qos(0, 100, False)
        seen: list[amqp.Message] = []
        channel.basic_consume(names.EVENT_LOG, callback=seen.append, arguments={"x-stream-offset": "first"})
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        while not any(m.delivery_info["routing_key"] == key for m in seen):
            assert time.monotonic() < deadline, f"{key} not read from the log in {CONFIRM_TIMEOUT_S} s"
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.5)
    (message,) = [m for m in seen if m.delivery_info["routing_key"] == key]
    assert message.properties["user_id"] == "gluster"
