"""Fast, precise failures: events kept before any aggregator, unroutable events reported, no
aggregator, a refused login and an unreachable broker told at once and in few lines, one
exclusive consumer per queue."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.brokers import RABBITMQ, Broker, System, admin_of, require_service
from support.cli_helpers import run_cli
from support.deliveries import collect_into
from support.ports import free_port
from support.processes import start_serve, without_start_warnings
from support.timing import Stopwatch, assert_ended_by
from support.vhosts import VhostPool

from bus_tasks import codec, names, transport
from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.errors import BrokerRefused, BrokerUnavailable, NoAggregator, PublishError
from bus_tasks.protocol import jsonrpc
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.transport import Bus, BusOptions, Delivery, QueueInUse

NO_AGGREGATOR_BY_S = 2.0  # "within a second or two"; assert_ended_by adds its margin


def transport_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("bus_tasks")]


@pytest.fixture
def fresh_vhost(rabbitmq_vhosts: VhostPool) -> Iterator[str]:
    """The URL of a vhost no aggregator (nor any other test) ever touched: not even an exchange."""
    vhost = rabbitmq_vhosts.take()
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmq_vhosts.done(vhost)


# -- publishers declare the events queue ---------------------------------------------------


@pytest.mark.integration
def test_events_injected_before_any_aggregator_ran_are_in_the_view_once_serve_starts(
    fresh_vhost: str, tmp_path: Path
) -> None:
    injected = run_cli("inject", "--broker", fresh_vhost, "--count", "3", "--tag", "spm", cwd=tmp_path)
    assert (injected.returncode, injected.stderr) == (0, "")
    ids = set(injected.stdout.split())
    assert len(ids) == 3

    serve = start_serve(fresh_vhost, tmp_path / "data")
    try:
        with TasksClient(transport.open(fresh_vhost), timeout_s=10) as client:
            wait_until(lambda: set(client.get_all_tasks()) == ids, timeout_s=30, what="the injected tasks")
    finally:
        assert serve.terminate() == 0, serve.log


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["redis", "rabbitmq"])
def test_a_publisher_that_starts_first_keeps_its_events_for_the_aggregator_that_comes_later(
    transport: str, request: pytest.FixtureRequest
) -> None:
    broker: Broker = request.getfixturevalue(f"{transport}_broker")
    publisher = TaskPublisher(broker.connection(), "vdsm")
    task = publisher.create("copyImage", ["spm"], state=State.RUNNING)
    publisher.update(task.id, progress=40)
    publisher.flush(10.0)

    with RunningAggregator(Aggregator(broker.connection())):
        client = TasksClient(broker.connection(confirm_publish=False), timeout_s=10)
        wait_until(
            lambda: client.get_all_tasks().get(task.id, {}).get("progress") == 40,
            timeout_s=30,
            what="the events published before the aggregator",
        )
    publisher.close()


# -- unroutable events are reported --------------------------------------------------------


@pytest.mark.integration
def test_an_event_the_broker_cannot_route_makes_flush_raise_publish_error_naming_it(
    rabbitmq_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bus_tasks.transport")
    publisher = TaskPublisher(rabbitmq_broker.connection(), "vdsm")
    publisher.create("copyImage", ["spm"])
    publisher.flush(10.0)  # routed: the publisher declared the event log
    admin_of(rabbitmq_broker.connection()).delete_queues(
        [names.EVENT_LOG]
    )  # the exchange is left without any binding

    publisher.create("copyImage", ["spm"])
    with pytest.raises(PublishError) as caught:
        publisher.flush(10.0)

    assert caught.value.message == (
        "General Exception: the broker returned 1 message as unroutable: task.vdsm.created (312 NO_ROUTE)"
    )
    returned = [line for line in transport_lines(caplog) if "returned" in line]
    assert len(returned) == 1, returned  # logged once
    publisher.flush(10.0)  # reported once: nothing new since
    publisher.close()


# -- no aggregator -------------------------------------------------------------------------


@pytest.mark.integration
def test_a_call_where_the_rpc_queue_does_not_exist_raises_no_aggregator_at_once(
    rabbitmq_broker: Broker,
) -> None:
    client = TasksClient(rabbitmq_broker.connection(confirm_publish=False), timeout_s=10)
    with Stopwatch() as watch, pytest.raises(NoAggregator) as caught:
        client.get_all_tasks()
    assert_ended_by(watch, NO_AGGREGATOR_BY_S)
    vhost = rabbitmq_broker.url.rsplit("/", 1)[1]
    assert caught.value.message == (
        f"General Exception: no aggregator serving on amqp://guest:***@127.0.0.1:5672/{vhost}:"
        " the queue bus_tasks.rpc does not exist on this broker and vhost"
        " (no aggregator ever ran here: start bus-tasks serve)"
    )
    assert (
        admin_of(rabbitmq_broker.connection()).queue_exists(names.RPC_QUEUE) is False
    )  # the check made none
    client.close()


@pytest.mark.integration
def test_a_call_while_nothing_consumes_the_rpc_queue_raises_no_aggregator_within_two_seconds(
    rabbitmq_broker: Broker,
) -> None:
    rabbitmq_broker.connection().topology.declare_queue(names.RPC_QUEUE)  # left by an aggregator now gone
    client = TasksClient(rabbitmq_broker.connection(confirm_publish=False), timeout_s=10)
    with Stopwatch() as watch, pytest.raises(NoAggregator, match=r"nothing consumes bus_tasks\.rpc"):
        client.get_all_tasks()
    assert_ended_by(watch, NO_AGGREGATOR_BY_S, not_before_s=1.0)  # it asked after a second
    client.close()


@pytest.mark.integration
def test_a_client_told_no_aggregator_answers_once_one_serves(rabbitmq_broker: Broker) -> None:
    client = TasksClient(rabbitmq_broker.connection(confirm_publish=False), timeout_s=10)
    with pytest.raises(NoAggregator):
        client.get_all_tasks()
    with RunningAggregator(Aggregator(rabbitmq_broker.connection())):
        assert client.get_all_tasks() == {}  # the same client: checked again, now it is there
    client.close()


class SlowResponder:
    """A stand-in aggregator: consumes the RPC queue and answers each request 1.5 s late."""

    DELAY_S = 1.5

    def __init__(self, broker: Broker) -> None:
        self.connection = broker.connection(confirm_publish=False)
        self.connection.topology.declare_queue(names.RPC_QUEUE)
        self.connection.consume(names.RPC_QUEUE, self._on_request)
        self._waiting: list[tuple[float, Delivery]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_request(self, delivery: Delivery) -> None:
        self._waiting.append((time.monotonic() + self.DELAY_S, delivery))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.connection.drain(0.05)
            while self._waiting and self._waiting[0][0] <= time.monotonic():
                _, delivery = self._waiting.pop(0)
                assert delivery.reply_to is not None
                body = jsonrpc.result_body(codec.loads(delivery.body)["id"], {"late": True})
                self.connection.publish(
                    body, routing_key=delivery.reply_to, correlation_id=delivery.correlation_id
                )
                delivery.ack()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


@pytest.mark.integration
def test_a_call_answered_later_than_the_consumer_check_is_answered_not_refused(
    rabbitmq_broker: Broker,
) -> None:
    responder = SlowResponder(rabbitmq_broker)
    try:
        client = TasksClient(rabbitmq_broker.connection(confirm_publish=False), timeout_s=10)
        with Stopwatch() as watch:
            answers = [client.call("Host.getAllTasks") for _ in range(2)]
        assert answers == [{"late": True}, {"late": True}]
        assert watch.elapsed_s >= 2 * SlowResponder.DELAY_S  # each waited past the check
        client.close()
    finally:
        responder.close()


@pytest.mark.integration
def test_with_an_aggregator_serving_every_kind_of_call_still_works(rabbitmq_system: System) -> None:
    publisher = rabbitmq_system.publisher("vdsm")
    task = publisher.create("copyImage", ["spm"], state=State.RUNNING)
    client = rabbitmq_system.client(timeout_s=10)
    wait_until(lambda: task.id in client.get_all_tasks(), timeout_s=10, what="the task listed")
    assert client.get_task_status(task.id)["taskState"] == "running"
    assert [o.result() for o in client.batch([("Host.getAllTasksInfo", None)])] == [
        {task.id: {"id": task.id, "verb": "copyImage"}}
    ]
    client.close()


@pytest.mark.integration
def test_the_cli_says_no_aggregator_in_one_line(rabbitmq_broker: Broker, tmp_path: Path) -> None:
    with Stopwatch() as start:  # a process start on this machine now (slow when it is loaded)
        assert run_cli("tasks", "--help", cwd=tmp_path).returncode == 0
    with Stopwatch() as watch:
        done = run_cli("tasks", "--broker", rabbitmq_broker.url, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.count("\n") == 1, done.stderr
    assert "no aggregator serving on amqp://guest:***@127.0.0.1:5672/" in done.stderr
    assert "the queue bus_tasks.rpc does not exist" in done.stderr
    # Not the 10 s deadline waited out: its process start, then at most 6 s + LATE_S.
    assert_ended_by(watch, start.elapsed_s + 6.0)


# -- a refused login -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("userinfo", "vhost", "reason"),
    [
        ("guest:wrong", "", "403 ACCESS_REFUSED - Login was refused"),
        ("guest:guest", "no_such_vhost", "530 NOT_ALLOWED - vhost no_such_vhost not found"),
    ],
    ids=["wrong-password", "no-such-vhost"],
)
def test_a_refused_login_raises_broker_refused_at_once_without_retrying(
    userinfo: str, vhost: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    require_service("RabbitMQ", RABBITMQ)
    caplog.set_level(logging.DEBUG, logger="bus_tasks")
    client = TasksClient(transport.open(f"amqp://{userinfo}@127.0.0.1:5672/{vhost}"), timeout_s=10)
    with Stopwatch() as watch, pytest.raises(BrokerRefused) as caught:
        client.get_all_tasks()
    assert watch.elapsed_s < 2.0
    assert caught.value.message.startswith(
        f"General Exception: broker amqp://guest:***@127.0.0.1:5672/{vhost} refused the connection: {reason}"
    )
    assert "wrong" not in caught.value.message
    assert [line for line in transport_lines(caplog) if "unreachable" in line or "retry" in line] == []
    client.close()


@pytest.mark.integration
def test_a_publisher_with_a_refused_login_raises_broker_refused_from_its_first_publish() -> None:
    require_service("RabbitMQ", RABBITMQ)
    connection = transport.open("amqp://guest:wrong@127.0.0.1:5672//", BusOptions(confirm_publish=True))
    publisher = TaskPublisher(connection, "vdsm")
    with Stopwatch() as watch, pytest.raises(BrokerRefused, match="403 ACCESS_REFUSED"):
        publisher.create("copyImage", ["spm"])
    assert watch.elapsed_s < 2.0
    connection.close(flush_timeout_s=0.5)


@pytest.mark.integration
@pytest.mark.parametrize("command", ["tasks", "inject", "serve"])
def test_the_cli_with_a_wrong_password_says_so_in_one_line_and_exits_1(command: str, tmp_path: Path) -> None:
    require_service("RabbitMQ", RABBITMQ)
    args = ["--data-dir", str(tmp_path / "data")] if command == "serve" else []
    with Stopwatch() as start:  # a process start on this machine now (slow when it is loaded)
        assert run_cli(command, "--help", cwd=tmp_path).returncode == 0
    with Stopwatch() as watch:
        done = run_cli(command, "--broker", "amqp://guest:wrong@127.0.0.1:5672//", *args, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    *logged, said = done.stderr.splitlines()
    assert said.startswith(
        f"bus-tasks {command}: broker amqp://guest:***@127.0.0.1:5672//"
        " refused the connection: 403 ACCESS_REFUSED"
    ), done.stderr
    # Not retried: nothing but serve's own progress lines (INFO) and its start-up warnings that
    # identity and authorization are off (SPEC 15, 16) before it.
    assert [line for line in without_start_warnings(logged) if " INFO " not in line] == [], done.stderr
    assert_ended_by(watch, 2.0 + start.elapsed_s)  # its process start, then nothing retried


# -- an unreachable broker ------------------------------------------------------------------


def test_inject_against_a_closed_port_ends_in_few_lines_naming_the_broker(tmp_path: Path) -> None:
    url = f"amqp://guest:s3cret@127.0.0.1:{free_port()}//"
    with Stopwatch() as watch:
        done = run_cli("inject", "--broker", url, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    lines = done.stderr.splitlines()
    assert len(lines) <= 10, done.stderr  # it was 50 (and 600 without a retry bound)
    assert lines[-1] == (
        f"bus-tasks inject: broker {url.replace('s3cret', '***')}"
        " unreachable: [Errno 111] Connection refused (1 message not sent)"
    )
    assert "not confirmed" not in done.stderr
    assert "s3cret" not in done.stderr
    assert_ended_by(watch, 10.0)  # within inject's deadline (rpc_timeout_s), not twice it


def test_a_call_to_a_closed_port_fails_at_its_deadline_in_few_log_lines_naming_the_broker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bus_tasks")
    url = f"amqp://guest:s3cret@127.0.0.1:{free_port()}//"
    client = TasksClient(transport.open(url), timeout_s=4.0)  # retries until the deadline
    with Stopwatch() as watch, pytest.raises(BrokerUnavailable) as caught:
        client.get_all_tasks()
    assert_ended_by(watch, 4.0, not_before_s=4.0)
    assert caught.value.message == (
        f"General Exception: broker {url.replace('s3cret', '***')} unreachable: [Errno 111] Connection refused"
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(warnings) <= 5, warnings  # 7 attempts in 4 s: lines at attempts 1, 2 and 4
    client.close()


# -- one exclusive consumer per queue ---------------------------------------------------------


def test_a_second_exclusive_consumer_of_a_queue_gets_queue_in_use_until_the_first_closes(
    broker: Broker,
) -> None:
    got: list[bytes] = []
    first = broker.connection()
    queue = first.topology.declare_control_queue("vdsm")
    first.consume(queue, collect_into(got), exclusive=True)
    second = broker.connection()
    second.topology.declare_control_queue("vdsm")

    with pytest.raises(QueueInUse) as caught:
        second.consume(queue, lambda d: d.ack(), exclusive=True)
    assert caught.value.queue == queue

    # The refused connection stays usable, and the first one still gets the queue's messages.
    second.publish(b'{"n": 1}', routing_key=queue)
    second.flush(10.0)
    wait_until(lambda: first.drain(0.05) and got == [b'{"n": 1}'], timeout_s=10, what="the first consumer")

    first.close()
    taken: list[bytes] = []
    wait_until(lambda: _consumed(second, queue, taken), timeout_s=15, what="the queue taken over")
    second.publish(b'{"n": 2}', routing_key=queue)
    wait_until(lambda: second.drain(0.05) and taken == [b'{"n": 2}'], timeout_s=10, what="the new consumer")
    second.close()


def _consumed(connection: Bus, queue: str, into: list[bytes]) -> bool:
    try:
        connection.consume(queue, collect_into(into), exclusive=True)
    except QueueInUse:  # RabbitMQ may take a moment to forget the first consumer
        return False
    return True
