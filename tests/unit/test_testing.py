"""The library's own test helpers: drain until quiet, re-raise handler errors, fail at deadlines."""

from __future__ import annotations

import re

import pytest
from support.brokers import Broker
from support.timing import Stopwatch, assert_ended_at

from bus_tasks import names
from bus_tasks.testing import drain, wait_until
from bus_tasks.transport import Delivery


def test_drain_processes_every_waiting_delivery_then_returns(memory_broker: Broker) -> None:
    conn = memory_broker.connection()
    conn.topology.declare_queue(names.DEAD_QUEUE)
    seen: list[bytes] = []

    def handle(delivery: Delivery) -> None:
        seen.append(delivery.body)
        delivery.ack()

    conn.consume(names.DEAD_QUEUE, handle)
    for n in range(3):
        conn.publish(b'{"n": %d}' % n, routing_key=names.DEAD_QUEUE)

    rounds = drain(conn, timeout_s=5.0)

    assert seen == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert rounds >= 1


def test_drain_re_raises_the_first_handler_error(memory_broker: Broker) -> None:
    conn = memory_broker.connection()
    conn.topology.declare_queue(names.DEAD_QUEUE)

    def handle(delivery: Delivery) -> None:
        raise RuntimeError(f"handler failed on {delivery.body!r}")

    conn.consume(names.DEAD_QUEUE, handle)
    conn.publish(b"{}", routing_key=names.DEAD_QUEUE)

    with pytest.raises(RuntimeError, match=re.escape("handler failed on b'{}'")):
        drain(conn, timeout_s=5.0)


def test_drain_fails_at_its_deadline_while_the_bus_stays_busy(memory_broker: Broker) -> None:
    conn = memory_broker.connection()
    conn.topology.declare_queue(names.DEAD_QUEUE)

    def echo(delivery: Delivery) -> None:  # every delivery makes another: never quiet
        delivery.ack()
        conn.publish(delivery.body, routing_key=names.DEAD_QUEUE)

    conn.consume(names.DEAD_QUEUE, echo)
    conn.publish(b"{}", routing_key=names.DEAD_QUEUE)

    with Stopwatch() as watch, pytest.raises(TimeoutError, match=re.escape("bus still busy after 0.3s")):
        drain(conn, timeout_s=0.3)
    assert_ended_at(watch, 0.3)


def test_wait_until_returns_the_first_truthy_value_or_fails_at_its_deadline() -> None:
    values = iter([0, None, "ready"])
    assert wait_until(lambda: next(values), timeout_s=5.0, interval_s=0.0) == "ready"
    with Stopwatch() as watch, pytest.raises(TimeoutError, match=re.escape("never not reached within 0.05s")):
        wait_until(lambda: False, timeout_s=0.05, what="never")
    assert_ended_at(watch, 0.05)
