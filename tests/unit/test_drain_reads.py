"""How a drain reads (issue 28's round-trip costs): what a read brought is handled before reading
on, a Redis drain does not read on, and an AMQP process never loads redis-py."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from support.brokers import Broker

from bus_tasks import names, transport
from bus_tasks.transport import BusOptions, Delivery
from bus_tasks.transport.kombu.connection import BusConnection


def test_what_a_read_brought_is_handled_before_the_drain_reads_on(
    memory_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lone request was answered only after one more read of every queue.
    bus = memory_broker.connection(confirm_publish=False)
    assert isinstance(bus, BusConnection)
    order: list[str] = []

    def on_request(delivery: Delivery) -> None:
        order.append("handled")
        delivery.ack()

    bus.topology.declare_queue(names.RPC_QUEUE)
    bus.consume(names.RPC_QUEUE, on_request)
    real_drain_ready = bus.link.drain_ready

    def drain_ready(more: Any) -> bool:
        order.append("read on")
        return real_drain_ready(more)

    monkeypatch.setattr(bus.link, "drain_ready", drain_ready)
    bus.publish(b'{"n": 1}', routing_key=names.RPC_QUEUE)
    for _ in range(50):
        if "handled" in order:
            break
        bus.drain(0.05)
    assert order[:2] == ["handled", "read on"]
    bus.close()


def test_a_drain_on_redis_does_not_read_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # The read before took up to the prefetch room (RPOP after BRPOP); one more is a whole poll.
    bus = transport.open("redis://127.0.0.1:1/0", BusOptions())
    assert isinstance(bus, BusConnection)
    reads: list[float] = []

    def drain_events(timeout_s: float) -> bool:
        reads.append(timeout_s)
        return False  # nothing there: a read-on would stop after this one

    monkeypatch.setattr(bus.link, "drain_events", drain_events)
    bus.link.drain_ready(lambda: True)
    assert reads == []


def test_an_amqp_process_never_imports_redis_py() -> None:
    # 0.1-0.3 s of an AMQP serve's start went to importing redis-py, used by Redis claims only.
    script = """
import sys
from bus_tasks import transport
from bus_tasks.transport import BusOptions
import bus_tasks.workers.serve
bus = transport.open("memory://", BusOptions())
bus.topology.declare_queue("bus_tasks.rpc")
bus.consume("bus_tasks.rpc", lambda delivery: None)
bus.drain(0.01)
bus.close()
print("redis" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
