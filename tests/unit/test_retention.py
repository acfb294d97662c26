"""Done tasks nobody clears, and tombstones, expire: memory stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from support.brokers import Broker, SystemFactory
from support.factories import make_event, task_id

from bus_tasks import names
from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.core.model import State
from bus_tasks.testing import wait_until


def test_done_tasks_past_retention_leave_the_view_and_their_subsystem(
    memory_broker: Broker, start_system: SystemFactory
) -> None:
    policy = AggregatorPolicy(done_ttl_s=0.3, tombstone_ttl_s=3600.0, expire_every_s=0.05)
    system = start_system(memory_broker, policy=policy)
    pub = system.publisher("vdsm", listen=True)
    done = pub.create("createVolume", ["spm"]).id
    running = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    pub.finish(done)
    client = system.client()

    wait_until(lambda: done not in client.get_all_tasks(), timeout_s=10, what="done task expired")
    wait_until(lambda: done not in pub, timeout_s=10, what="subsystem dropped the expired task")

    assert set(client.get_all_tasks()) == {running}
    assert done in system.aggregator.view.tombstones
    pub.announce()  # a resync cannot bring it back
    pub.update(running, message="later")
    wait_until(
        lambda: client.get_all_tasks()[running]["message"] == "later", timeout_s=10, what="later event"
    )
    assert set(client.get_all_tasks()) == {running}


def test_tombstones_past_their_ttl_are_forgotten(memory_broker: Broker, start_system: SystemFactory) -> None:
    policy = AggregatorPolicy(done_ttl_s=None, tombstone_ttl_s=0.3, expire_every_s=0.05)
    system = start_system(memory_broker, policy=policy)
    pub = system.publisher("vdsm", listen=True)
    task_id = pub.create("createVolume", ["spm"]).id
    pub.finish(task_id)
    client = system.client()
    wait_until(lambda: task_id in client.get_all_tasks(), timeout_s=10, what="task listed")

    assert client.clear_task(task_id) is True

    wait_until(
        lambda: task_id not in system.aggregator.view.tombstones, timeout_s=10, what="tombstone forgotten"
    )
    assert client.get_all_tasks() == {}


def test_expiry_counts_age_in_the_time_of_the_log_not_in_this_process_clock(
    memory_broker: Broker, start_system: SystemFactory
) -> None:
    # Replicas at one position of the log must decide alike: ages count in the events' own time.
    policy = AggregatorPolicy(done_ttl_s=60.0, tombstone_ttl_s=3600.0, expire_every_s=0.05)
    system = start_system(memory_broker, policy=policy)
    connection = memory_broker.connection()
    old = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # years ago by this process's clock
    counts = system.aggregator.counts

    def publish(n: int, state: State, updated_at: datetime) -> None:
        created_at = old - timedelta(hours=1)
        event = make_event(n, seq=1, state=state, updated_at=updated_at, created_at=created_at)
        connection.publish(
            event.model_dump_json(by_alias=True).encode(),
            exchange=names.EVENTS_EXCHANGE,
            routing_key=names.event_routing_key("vdsm", "updated"),
        )

    # A witness done one second before task 1: it is 60 s old, and expires, in the first retention
    # round that sees the log at old + 59 s, the round in which task 1 is 59 s old and stays.
    witness = 4
    publish(witness, State.FINISHED, old - timedelta(seconds=1))
    publish(1, State.FINISHED, old)
    publish(2, State.RUNNING, old + timedelta(seconds=59))
    wait_until(lambda: counts["expired"] >= 1, timeout_s=10, what="a retention round at old + 59 s")
    assert task_id(witness) in system.aggregator.view.tombstones
    assert task_id(1) in system.aggregator.view  # 59 s old in the log's time: kept
    assert task_id(2) in system.aggregator.view
    assert counts["expired"] == 1

    publish(3, State.RUNNING, old + timedelta(seconds=61))

    wait_until(lambda: task_id(1) not in system.aggregator.view, timeout_s=10, what="expired")
    assert task_id(1) in system.aggregator.view.tombstones
    assert counts["expired"] == 2
