"""Broker connections cut or stalled mid-stream, on both sides: both recover, nothing is lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.brokers import RABBITMQ, Broker
from support.faultproxy import FaultProxy
from support.processes import start_serve
from support.timing import Stopwatch, assert_ended_by

from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.errors import PublishError
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.transport import BusConnection

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TASKS = 1500
LONG_STALL_S = 6.0  # longer than two heartbeats: the stalled side must notice and reconnect


@pytest.fixture
def proxies() -> Iterator[tuple[FaultProxy, FaultProxy]]:
    """One proxy in front of the broker for the aggregator, one for the publisher."""
    with FaultProxy(RABBITMQ) as aggregator_side, FaultProxy(RABBITMQ) as publisher_side:
        yield aggregator_side, publisher_side


def test_drops_and_stalls_on_both_sides_lose_no_event(
    rabbitmq_broker: Broker, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    to_aggregator, to_publisher = proxies
    aggregator = Aggregator(BusConnection(rabbitmq_broker.via(to_aggregator.port), heartbeat_s=2.0))
    publisher = TaskPublisher(
        BusConnection(rabbitmq_broker.via(to_publisher.port), confirm_publish=True, heartbeat_s=2.0), "vdsm"
    )
    ids = [str(uuid.uuid4()) for _ in range(TASKS)]
    faults = {
        300: to_publisher.drop_all,
        600: to_aggregator.drop_all,
        800: to_aggregator.stall,
        1000: to_aggregator.resume,
        1100: to_publisher.stall,
        1150: to_publisher.resume,
        1300: lambda: (to_publisher.drop_all(), to_aggregator.drop_all()),
    }
    with RunningAggregator(aggregator):
        for index, task_id in enumerate(ids):
            if index in faults:
                faults[index]()
            publisher.create("copyImage", ["spm"], task_id=task_id, state=State.RUNNING)
            publisher.update(task_id, progress=50)
            publisher.finish(task_id, message=f"done {index}")
            if index == 1400:
                to_aggregator.stall()
        time.sleep(LONG_STALL_S)  # the length of the outage, not synchronisation
        to_aggregator.resume()
        publisher.flush(120.0)
        with TasksClient(BusConnection(rabbitmq_broker.url), timeout_s=10) as client:
            want = {task_id: ("finished", f"done {i}") for i, task_id in enumerate(ids)}
            wait_until(
                lambda: {i: (t["state"], t["message"]) for i, t in client.get_all_tasks().items()} == want,
                timeout_s=120,
                interval_s=0.5,
                what="every task finished in the view",
            )
        assert to_aggregator.accepted >= 3  # the aggregator reconnected
        assert to_publisher.accepted >= 3  # the publisher reconnected
        publisher.close()


def test_publisher_keeps_a_bounded_outbox_while_the_broker_is_away_and_resends_it(
    rabbitmq_broker: Broker, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    _, to_publisher = proxies
    connection = BusConnection(
        rabbitmq_broker.via(to_publisher.port), confirm_publish=True, max_unconfirmed=50, confirm_window=10
    )
    publisher = TaskPublisher(connection, "vdsm")
    with RunningAggregator(Aggregator(BusConnection(rabbitmq_broker.url))):
        first = publisher.create("copyImage", ["spm"]).id
        publisher.flush(10.0)
        to_publisher.refuse(True)
        to_publisher.drop_all()
        kept = [publisher.create("copyImage", ["spm"]).id for _ in range(49)]
        assert connection.pending == 49  # kept, in order, for when the broker is back

        publisher.create("copyImage", ["spm"])  # the 50th fits
        with (
            Stopwatch() as watch,
            pytest.raises(PublishError, match=r"wait for confirmation .* \(the bound is 50\)"),
        ):
            publisher.create("copyImage", ["spm"])
        # It waits a moment for a confirm to free a place (a second), then says so: no hang.
        assert_ended_by(watch, 1.0)

        to_publisher.refuse(False)
        publisher.flush(60.0)
        assert connection.pending == 0
        with TasksClient(BusConnection(rabbitmq_broker.url), timeout_s=10) as client:
            wait_until(
                lambda: {first, *kept} <= set(client.get_all_tasks()), timeout_s=30, what="outbox delivered"
            )
    publisher.close()


def test_serve_stops_on_sigterm_even_while_the_broker_is_away(
    rabbitmq_broker: Broker, proxies: tuple[FaultProxy, FaultProxy], tmp_path: Path
) -> None:
    to_aggregator, _ = proxies
    serve = start_serve(rabbitmq_broker.via(to_aggregator.port), tmp_path / "data", BUS_TASKS_HEARTBEAT_S="2")
    try:
        to_aggregator.refuse(True)
        to_aggregator.drop_all()
        serve.wait_for_line("reconnecting", timeout_s=30)

        status = serve.terminate(timeout_s=15.0)

        assert status == 0, serve.log
        serve.wait_for_line("stopped while waiting for", timeout_s=5)
    finally:
        serve.kill()
