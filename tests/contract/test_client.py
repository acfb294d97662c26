"""TasksClient: every call has a real deadline, also while the broker is away; stale replies dropped."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support.brokers import RABBITMQ, Broker, System
from support.faultproxy import FaultProxy
from support.timing import EARLY_S, Stopwatch, assert_ended_at

from bus_tasks import codec, names, transport
from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.errors import BrokerUnavailable, DeadlineExceeded
from bus_tasks.protocol import jsonrpc
from bus_tasks.testing import drain, wait_until
from bus_tasks.transport import BusOptions, Delivery
from bus_tasks.transport.kombu import BusConnection

REFUSED_URL = "amqp://guest:s3cret@127.0.0.1:1//"  # nothing listens on port 1: refused at once


class Responder:
    """A stand-in aggregator on memory://: answers each request with a stale reply, then its own."""

    def __init__(self, broker: Broker) -> None:
        self.connection = broker.connection(confirm_publish=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_request(self, delivery: Delivery) -> None:
        assert delivery.reply_to is not None
        request = codec.loads(delivery.body)
        for correlation_id, request_id, result in (
            ("an-earlier-call", "an-earlier-call", {"stale": True}),  # e.g. a call that timed out
            (delivery.correlation_id, request["id"], {"fresh": True}),
        ):
            body = jsonrpc.result_body(request_id, result)
            self.connection.publish(body, routing_key=delivery.reply_to, correlation_id=correlation_id)
        delivery.ack()

    def _run(self) -> None:
        while not self._stop.is_set():
            drain(self.connection, timeout_s=60.0, quiet_s=0.05)

    def __enter__(self) -> Responder:
        self.connection.topology.declare_queue(names.RPC_QUEUE)
        self.connection.consume(names.RPC_QUEUE, self._on_request)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)


def test_a_call_nobody_answers_raises_deadline_exceeded(memory_broker: Broker) -> None:
    client = TasksClient(memory_broker.connection(confirm_publish=False), timeout_s=0.3)
    with Stopwatch() as watch, pytest.raises(DeadlineExceeded) as caught:
        client.get_all_tasks()
    assert_ended_at(watch, 0.3)
    assert caught.value.to_wire() == {
        "code": 100,
        "message": "General Exception: no reply to Host.getAllTasks within 0.3s",
    }


def test_a_reply_to_another_call_is_dropped(memory_broker: Broker) -> None:
    with Responder(memory_broker):
        client = TasksClient(memory_broker.connection(confirm_publish=False), timeout_s=10.0)
        assert client.call("Host.getAllTasks") == {"fresh": True}
        assert client.call("Host.getAllTasks") == {"fresh": True}


def test_a_call_to_an_unreachable_broker_fails_at_its_deadline_not_later() -> None:
    client = TasksClient(transport.open(REFUSED_URL), timeout_s=1.0)
    with Stopwatch() as watch, pytest.raises(BrokerUnavailable) as caught:
        client.get_all_tasks()  # without the deadline, kombu would retry the connect forever
    assert_ended_at(watch, 1.0)  # refused at once, it retries until the deadline
    assert caught.value.code == 100
    assert caught.value.message.startswith(
        "General Exception: broker amqp://guest:***@127.0.0.1:1// unreachable: "
    )
    assert "s3cret" not in caught.value.message


def test_inside_a_deadline_one_connection_attempt_is_no_longer_than_the_time_left() -> None:
    # A host that drops SYNs (or a broker that never finishes the handshake) would otherwise
    # hold one attempt for connect_timeout_s, past the call's deadline.
    connection = transport.open("memory://", BusOptions(connect_timeout_s=5.0))
    assert isinstance(connection, BusConnection)  # the attempt's timeout is the kombu link's
    with connection.bounded(time.monotonic() + 0.5):
        connection.connect()
        assert 0 < connection.connect_timeout_s <= 0.5
    connection.close()
    connection.connect()  # no deadline: the configured timeout again
    assert connection.connect_timeout_s == 5.0
    connection.close()

    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the TCP connection, never speaks
        silent_url = f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}//"
        connection = transport.open(silent_url, BusOptions(connect_timeout_s=5.0))
        with (
            Stopwatch() as watch,
            pytest.raises(connection.errors),
            connection.bounded(time.monotonic() + 0.5),
        ):
            connection.connect()
        assert_ended_at(watch, 0.5)  # not the 5 s of connect_timeout_s
        connection.close()


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(RABBITMQ) as proxy:
        yield proxy


def client_through(proxy: FaultProxy, system: System, timeout_s: float) -> tuple[str, TasksClient]:
    """A task in the view, and a client that reaches the broker through ``proxy`` and sees it."""
    task = system.publisher("vdsm").create("copyImage", ["spm"])
    client = TasksClient(transport.open(system.broker.via(proxy.port)), timeout_s=timeout_s)
    assert set(client.get_all_tasks()) == {task.id}
    return task.id, client


@pytest.mark.integration
def test_a_call_while_the_broker_is_away_fails_at_its_deadline_and_the_next_one_recovers(
    rabbitmq_system: System, proxy: FaultProxy
) -> None:
    task_id, client = client_through(proxy, rabbitmq_system, timeout_s=2.0)

    proxy.refuse(True)
    proxy.drop_all()
    with Stopwatch() as watch, pytest.raises(BrokerUnavailable):
        client.get_all_tasks()  # reconnecting is bounded by the call's deadline
    assert_ended_at(watch, 2.0)

    proxy.refuse(False)
    assert set(client.get_all_tasks()) == {task_id}  # the same client reconnects
    client.close()


@pytest.mark.integration
def test_a_stop_whose_connection_is_cut_under_it_is_sent_again_on_a_new_one_and_answers_true(
    rabbitmq_system: System, proxy: FaultProxy
) -> None:
    # A change is sent again like a read (SPEC 17): its call key makes a repeat harmless.
    publisher = rabbitmq_system.publisher("vdsm", listen=True)
    stopped: list[str] = []
    publisher.on_stop(stopped.append)
    task = publisher.create("copyImage", ["spm"], state=State.RUNNING)
    client = TasksClient(transport.open(rabbitmq_system.broker.via(proxy.port)), timeout_s=5.0)
    wait_until(lambda: task.id in client.get_all_tasks(), timeout_s=10.0)

    def cut() -> None:  # the connection is cut under the waiting call; the broker is there again
        proxy.drop_all()
        proxy.resume()

    proxy.stall()  # the request goes nowhere
    timer = threading.Timer(0.5, cut)
    timer.start()
    try:
        with Stopwatch() as watch:
            assert client.stop_task(task.id) is True
    finally:
        timer.join()
        proxy.resume()
    # Answered after the cut, on a new connection, within its 5 s deadline.
    assert 0.5 - EARLY_S <= watch.elapsed_s < 5.0, watch.elapsed_s
    assert stopped == [task.id]
    client.close()
