"""A connection lost while a process starts (its node killed between connect and consume) is
recovered by the declare or consume that met it, never raised to the process (issue 25)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from amqp.exceptions import AccessRefused  # a channel-level refusal
from support.brokers import Broker

from bus_tasks import names, transport
from bus_tasks.config import redact_url
from bus_tasks.transport import BusOptions, Delivery
from bus_tasks.transport.kombu.connection import BusConnection
from bus_tasks.transport.kombu.declaring import Declarations


def lose_once(
    monkeypatch: pytest.MonkeyPatch, owner: type, method: str, error: type[BaseException]
) -> list[int]:
    """``owner.method`` raises ``error`` at its first call, then does its job; counts the calls."""
    calls: list[int] = []
    real = getattr(owner, method)

    def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise error("connection lost while starting")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, method, flaky)
    return calls


@pytest.fixture
def bus(memory_broker: Broker) -> BusConnection:
    """A connection on the memory broker, without confirms (not connected yet)."""
    connection = memory_broker.connection(confirm_publish=False)
    assert isinstance(connection, BusConnection)
    return connection


def test_a_declare_that_meets_a_lost_connection_reconnects_and_declares_again(
    bus: BusConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus.connect()
    calls = lose_once(monkeypatch, Declarations, "declare", bus.link.lost_errors[0])
    bus.topology.declare_queue(names.RPC_QUEUE)
    assert (len(calls), bus.reconnects) == (2, 1)
    bus.publish(b'{"n": 1}', routing_key=names.RPC_QUEUE)
    assert bus.admin().queue_size(names.RPC_QUEUE) == 1  # the queue was declared on the new connection


def test_a_consume_that_meets_a_lost_connection_is_started_by_the_reconnect_once(
    bus: BusConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus.topology.declare_queue(names.RPC_QUEUE)
    calls = lose_once(monkeypatch, BusConnection, "_start", bus.link.lost_errors[0])
    got: list[bytes] = []

    def on_request(delivery: Delivery) -> None:
        got.append(delivery.body)
        delivery.ack()

    bus.consume(names.RPC_QUEUE, on_request)
    assert (len(calls), bus.reconnects) == (2, 1)  # started by the reconnect, not again by consume
    bus.publish(b'{"n": 1}', routing_key=names.RPC_QUEUE)
    for _ in range(50):
        if got:
            break
        bus.drain(0.05)
    assert got == [b'{"n": 1}']  # one consumer: delivered once


def test_a_publish_whose_declare_meets_a_lost_connection_is_sent_on_the_new_one(
    bus: BusConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first publish to the events exchange declares it (and the events queue) after the
    # producer was made: the recovery replaced the producer's connection (it went to None).
    bus.connect()
    calls = lose_once(monkeypatch, Declarations, "declare", bus.link.lost_errors[0])
    bus.publish(b'{"n": 1}', exchange=names.EVENTS_EXCHANGE, routing_key="task.vdsm.created")
    assert (len(calls), bus.reconnects) == (3, 1)  # the exchange, again on the new connection, the queue
    assert bus.admin().queue_size(names.EVENTS_QUEUE) == 1  # sent once, on the new connection


def test_a_channel_refused_while_declaring_is_raised_not_retried(
    bus: BusConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus.connect()
    calls = lose_once(monkeypatch, Declarations, "declare", AccessRefused)
    with pytest.raises(AccessRefused):
        bus.topology.declare_queue(names.RPC_QUEUE)
    assert (len(calls), bus.reconnects) == (1, 0)


def test_restoring_that_fails_right_after_each_connect_backs_off_and_logs_at_its_doublings_only(
    memory_broker: Broker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A consumer refused right after every connect (a queue whose node is down): the outage
    # goes on, so the back-off grows and lines come at 1, 2, 4, 8 failures, not two per attempt.
    bus = transport.open(memory_broker.url, BusOptions(reconnect_max_s=0.05))
    assert isinstance(bus, BusConnection)
    bus.connect()
    refusals = 8
    real = BusConnection._restore
    calls: list[int] = []

    def refused_at_first(self: BusConnection) -> None:
        calls.append(1)
        if len(calls) <= refusals:
            raise bus.link.lost_errors[0]("consumer refused right after the connect")
        real(self)

    monkeypatch.setattr(BusConnection, "_restore", refused_at_first)
    caplog.set_level(logging.INFO, logger="bus_tasks.transport")
    bus.recover()
    lines = [r.getMessage() for r in caplog.records if r.name == "bus_tasks.transport"]
    failures = [line for line in lines if "unreachable" in line]
    assert len(calls) == refusals + 1
    assert len(failures) == 4, lines  # at 1, 2, 4 and 8 failures
    assert [line for line in lines if "reachable again" in line] == [
        f"broker {redact_url(memory_broker.url)} reachable again after {refusals} failed attempts"
    ]
    bus.close()
