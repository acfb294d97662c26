"""A client's call after a failover: a channel that reached a quorum queue while it elected a
leader may have its publishes dropped (RabbitMQ 3.10, issue 25); the call is sent again on a new
connection within its deadline instead of failing at it, a stop as a read (SPEC 17)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from support.brokers import Broker, System

from bus_tasks import client as client_module
from bus_tasks import names
from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.errors import DeadlineExceeded
from bus_tasks.testing import wait_until
from bus_tasks.transport.kombu.connection import BusConnection


def test_a_read_unanswered_after_a_failover_is_sent_again_on_a_new_connection(
    memory_system: System,
    memory_broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = memory_broker.connection(confirm_publish=False)
    assert isinstance(bus, BusConnection)
    client = TasksClient(bus, timeout_s=4.0)
    assert client.get_all_tasks() == {}  # started: reply queue, first call answered
    real_drain, real_publish = bus.drain, bus.publish
    lost: list[int] = []
    dropped: list[bytes] = []

    def drain_losing_once(timeout_s: float) -> bool:
        if not lost:
            lost.append(1)
            raise bus.link.lost_errors[0]("connection lost")
        return real_drain(timeout_s)

    def publish_dropping_two(body: bytes, **kwargs: Any) -> None:
        if kwargs.get("routing_key") == names.RPC_QUEUE and len(dropped) < 2:
            dropped.append(body)  # the one lost with its connection, then the one sent after it
            return
        real_publish(body, **kwargs)

    monkeypatch.setattr(bus, "drain", drain_losing_once)
    monkeypatch.setattr(bus, "publish", publish_dropping_two)
    caplog.set_level(logging.INFO, logger="bus_tasks.client")
    assert client.get_all_tasks() == {}  # within its 4 s: sent a third time, after 2 s unanswered
    assert len(dropped) == 2
    assert "getAllTasks unanswered after a failover: sent again on a new connection" in caplog.text
    assert bus.reconnects == 2
    client.close()


def test_a_read_long_after_any_failover_is_sent_once(
    memory_system: System, memory_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = memory_broker.connection(confirm_publish=False)
    client = TasksClient(bus, timeout_s=2.5)
    sent: list[bytes] = []
    real_publish = bus.publish

    def publish_recorded(body: bytes, **kwargs: Any) -> None:
        if kwargs.get("routing_key") == names.RPC_QUEUE:
            sent.append(body)
            if len(sent) == 1:
                return  # dropped, with no failover before it: the caller hears it at the deadline
        real_publish(body, **kwargs)

    monkeypatch.setattr(bus, "publish", publish_recorded)
    with pytest.raises(DeadlineExceeded):
        client.get_all_tasks()
    assert len(sent) == 1
    client.close()


def test_sending_a_read_again_does_not_reopen_the_failover_window(
    memory_system: System, memory_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a lost connection opens the window: were a read's own re-send to, replies slower
    than a quarter of their time would keep every later read being sent twice."""
    monkeypatch.setattr(client_module, "FAILOVER_WINDOW_S", 3.0)
    bus = memory_broker.connection(confirm_publish=False)
    assert isinstance(bus, BusConnection)
    client = TasksClient(bus, timeout_s=2.5)
    assert client.get_all_tasks() == {}
    real_drain, real_publish = bus.drain, bus.publish
    lost_at: list[float] = []
    drop = [2]  # the publish lost with the connection, then the one sent after it
    sent: list[bytes] = []

    def drain_losing_once(timeout_s: float) -> bool:
        if not lost_at:
            lost_at.append(time.monotonic())
            raise bus.link.lost_errors[0]("connection lost")
        return real_drain(timeout_s)

    def publish_dropping(body: bytes, **kwargs: Any) -> None:
        if kwargs.get("routing_key") == names.RPC_QUEUE:
            sent.append(body)
            if drop[0] > 0:
                drop[0] -= 1
                return
        real_publish(body, **kwargs)

    monkeypatch.setattr(bus, "drain", drain_losing_once)
    monkeypatch.setattr(bus, "publish", publish_dropping)
    assert client.get_all_tasks() == {}  # sent again at 2 s unanswered, on a new connection
    assert len(sent) == 3
    assert bus.reconnects == 2
    time.sleep(max(0.0, lost_at[0] + 3.5 - time.monotonic()))  # past the window from the loss
    sent.clear()
    drop[0] = 100
    with pytest.raises(DeadlineExceeded):
        client.get_all_tasks()
    assert len(sent) == 1  # the window closed 3 s after the loss, not after the re-send
    assert bus.reconnects == 2
    client.close()


def test_a_stop_whose_connection_is_lost_before_its_reply_is_sent_again_marked_resent_and_stops_once(
    memory_system: System, memory_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = memory_system.publisher("vdsm")
    stopped: list[str] = []
    publisher.on_stop(stopped.append)
    memory_system.listen(publisher)
    task = publisher.create("copyImage", state=State.RUNNING)
    bus = memory_broker.connection(confirm_publish=False)
    assert isinstance(bus, BusConnection)
    client = TasksClient(bus, timeout_s=10.0)
    wait_until(lambda: task.id in client.get_all_tasks(), timeout_s=10.0)
    real_drain, real_publish = bus.drain, bus.publish
    sent: list[tuple[str, bool]] = []  # (correlation id, marked resent) of each RPC publish

    def publish_recorded(body: bytes, **kwargs: Any) -> None:
        if kwargs.get("routing_key") == names.RPC_QUEUE:
            sent.append((kwargs["correlation_id"], bool(kwargs["headers"].get(names.HEADER_RESENT))))
        real_publish(body, **kwargs)

    def drain_losing_after_the_stop(timeout_s: float) -> bool:
        if len(sent) == 1:  # the stop went; its reply would come on the connection lost now
            sent.append(("lost", False))
            raise bus.link.lost_errors[0]("connection lost")
        return real_drain(timeout_s)

    monkeypatch.setattr(bus, "publish", publish_recorded)
    monkeypatch.setattr(bus, "drain", drain_losing_after_the_stop)
    assert client.stop_task(task.id) is True
    assert [marked for _, marked in sent] == [False, False, True]
    assert sent[0][0] == sent[2][0]  # the same call: its correlation id kept
    assert bus.reconnects == 1
    wait_until(lambda: memory_system.aggregator.counts["control_answered_stop"] == 2, timeout_s=10.0)
    assert stopped == [task.id]  # the owner answered the repeat from memory
    client.close()
