"""The aggregator's metrics over the real RabbitMQ (its event log a stream), read as a scrape
reads them: each moves by exactly what was published, called, reconnected; replicas' lag."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.brokers import RABBITMQ, Broker, System, SystemFactory
from support.faultproxy import FaultProxy
from support.metrics import Samples, metric, scrape, wait_metric

from bus_tasks import transport
from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.core.model import State
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator
from bus_tasks.transport import BusOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TIMEOUT_S = 30.0


def publish_tasks(pub: TaskPublisher, count: int) -> int:
    """``count`` tasks created, moved on and finished, confirmed by the broker; returns the events."""
    for _ in range(count):
        task_id = pub.create("copyImage", ["spm"], state=State.RUNNING).id
        pub.update(task_id, progress=50)
        pub.finish(task_id)
    pub.flush()
    return 3 * count


EVENTS = ("applied", "stale", "cleared", "dead")


def events(scraped: Samples) -> dict[str, float]:
    return {o: scraped["bus_tasks_events_total", frozenset({("outcome", o)})] for o in EVENTS}


def test_event_and_call_metrics_move_by_exactly_what_was_published_and_called(
    rabbitmq_system: System,
) -> None:
    aggregator = rabbitmq_system.aggregator
    vdsm, gluster = rabbitmq_system.publisher("vdsm"), rabbitmq_system.publisher("gluster")
    first = publish_tasks(vdsm, 100) + publish_tasks(gluster, 50)
    wait_metric(aggregator, "bus_tasks_events_total", first, outcome="applied", timeout_s=TIMEOUT_S)
    before = scrape(aggregator)
    assert events(before) == {"applied": first, "stale": 0, "cleared": 0, "dead": 0}
    assert before["bus_tasks_revision", frozenset()] == first  # the stream's offsets, from 1
    for subsystem, tasks in (("vdsm", 100), ("gluster", 50)):
        states = {
            s.value: before["bus_tasks_tasks", frozenset({("subsystem", subsystem), ("state", s.value)})]
            for s in State
        }
        assert states == {s.value: tasks if s is State.FINISHED else 0 for s in State}

    second = publish_tasks(vdsm, 40)
    client = rabbitmq_system.client()
    calls = 7
    for _ in range(calls):
        client.get_all_tasks("spm")
    wait_metric(aggregator, "bus_tasks_events_total", first + second, outcome="applied", timeout_s=TIMEOUT_S)
    listing = frozenset({("method", "Host.getAllTasks")})
    wait_metric(
        aggregator,
        "bus_tasks_rpc_requests_total",
        calls,
        method="Host.getAllTasks",
        outcome="ok",
        timeout_s=TIMEOUT_S,
    )
    after = scrape(aggregator)
    assert events(after) == {"applied": first + second, "stale": 0, "cleared": 0, "dead": 0}
    assert after["bus_tasks_revision", frozenset()] - before["bus_tasks_revision", frozenset()] == second
    finished = frozenset({("subsystem", "vdsm"), ("state", "finished")})
    assert after["bus_tasks_tasks", finished] - before["bus_tasks_tasks", finished] == 40
    assert after["bus_tasks_rpc_duration_seconds_count", listing] == calls
    assert after["bus_tasks_store_commit_duration_seconds_count", frozenset()] >= 1
    assert after["bus_tasks_store_commit_failures_total", frozenset()] == 0
    assert after["bus_tasks_broker_reconnects_total", frozenset()] == 0


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(RABBITMQ) as proxied:
        yield proxied


def test_a_dropped_connection_counts_one_reconnect_and_no_event_twice(
    rabbitmq_broker: Broker, proxy: FaultProxy
) -> None:
    aggregator = Aggregator(transport.open(rabbitmq_broker.via(proxy.port), BusOptions(heartbeat_s=2.0)))
    pub = TaskPublisher(rabbitmq_broker.connection(), "vdsm")
    with RunningAggregator(aggregator):
        first = publish_tasks(pub, 50)
        wait_metric(aggregator, "bus_tasks_events_total", first, outcome="applied", timeout_s=TIMEOUT_S)
        assert metric(aggregator, "bus_tasks_broker_reconnects_total") == 0

        assert proxy.drop_all() >= 1
        wait_metric(aggregator, "bus_tasks_broker_reconnects_total", 1, timeout_s=TIMEOUT_S)
        second = publish_tasks(pub, 50)
        wait_metric(
            aggregator, "bus_tasks_events_total", first + second, outcome="applied", timeout_s=TIMEOUT_S
        )
        scraped = scrape(aggregator)
        assert events(scraped) == {"applied": first + second, "stale": 0, "cleared": 0, "dead": 0}
        assert scraped["bus_tasks_revision", frozenset()] == first + second
        assert scraped["bus_tasks_broker_reconnects_total", frozenset()] == 1


def test_replicas_on_one_stream_report_each_others_lag_down_to_zero(
    rabbitmq_broker: Broker, start_system: SystemFactory
) -> None:
    a, b = (
        start_system(rabbitmq_broker, policy=AggregatorPolicy(name=name, beat_s=0.5)).aggregator
        for name in ("east", "west")
    )
    published = publish_tasks(TaskPublisher(rabbitmq_broker.connection(), "vdsm"), 100)
    for here, there in ((a, "west"), (b, "east")):
        wait_metric(here, "bus_tasks_revision", published, timeout_s=TIMEOUT_S)
        # The other's beat after it read the same log: no lag, and no series for itself.
        wait_metric(here, "bus_tasks_replica_lag", 0, replica=there, timeout_s=TIMEOUT_S)
        replicas = {
            dict(labels)["replica"] for name, labels in scrape(here) if name == "bus_tasks_replica_lag"
        }
        assert replicas == {there}
