"""A drain without waiting on a real RabbitMQ (the STOMP door's, each time its socket is
readable): it reads what has arrived in chunks, not through py-amqp's reads, and says whether
anything came."""

from __future__ import annotations

from typing import Any

import pytest
from support.brokers import Broker

from bus_tasks import names
from bus_tasks.testing import wait_until
from bus_tasks.transport import Delivery
from bus_tasks.transport.kombu.connection import BusConnection

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_drain_without_waiting_handles_what_arrived_without_py_amqps_reads(
    rabbitmq_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = rabbitmq_broker.connection(confirm_publish=False)
    assert isinstance(bus, BusConnection)
    got: list[bytes] = []

    def on_message(delivery: Delivery) -> None:
        got.append(delivery.body)
        delivery.ack()

    bus.topology.declare_queue(names.RPC_QUEUE)
    bus.consume(names.RPC_QUEUE, on_message)
    assert bus.drain(0) is False  # nothing there yet
    py_amqp_reads: list[float] = []
    real_drain_events = bus.link.drain_events

    def drain_events(timeout_s: float) -> Any:
        py_amqp_reads.append(timeout_s)
        return real_drain_events(timeout_s)

    monkeypatch.setattr(bus.link, "drain_events", drain_events)
    bodies = [b'{"n": %d}' % n for n in range(3)]
    for body in bodies:
        bus.publish(body, routing_key=names.RPC_QUEUE)
    drained: list[bool] = []

    def all_handled() -> bool:
        drained.append(bus.drain(0))
        return len(got) == len(bodies)

    wait_until(all_handled, timeout_s=10, what="3 messages handled")
    assert got == bodies
    assert True in drained  # the drain that brought them said so
    assert py_amqp_reads == []
    assert bus.drain(0) is False
    bus.close()
