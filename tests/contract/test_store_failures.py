"""A store that fails pauses ingest, acks nothing it did not store, and the aggregator lives on.

In process, on memory:// and on the real RabbitMQ, with a store that fails on command (the
public ``Store`` seam). ``tests/test_store_faults.py`` does the same with real disks and a real
Redis under ``bus-tasks serve``.
"""

from __future__ import annotations

import logging

import pytest
from support.brokers import Broker, SystemFactory, admin_of
from support.stores import SwitchableStore

from bus_tasks import names
from bus_tasks.aggregator import Aggregator
from bus_tasks.core.model import State
from bus_tasks.errors import GeneralError
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until

TIMEOUT_S = 10.0


def _store_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and ("ingest paused" in r.getMessage() or "ingest resumed" in r.getMessage())
    ]


def test_a_failing_store_pauses_ingest_keeps_answering_and_resumes_by_itself(
    memory_broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _pause_and_resume(memory_broker, start_system, caplog)


@pytest.mark.integration
def test_a_failing_store_on_rabbitmq_pauses_ingest_keeps_answering_and_resumes_by_itself(
    rabbitmq_broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _pause_and_resume(rabbitmq_broker, start_system, caplog)


def _pause_and_resume(broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bus_tasks.aggregator")
    store = SwitchableStore()
    system = start_system(broker, store=store)
    pub = system.publisher("vdsm")
    client = system.client()
    done = pub.create("createVolume", ["spm"]).id
    pub.finish(done)
    wait_until(lambda: done in store.tasks, timeout_s=TIMEOUT_S, what="first task stored")

    store.broken = True
    during = [pub.create("copyImage", ["spm"], state=State.RUNNING).id for _ in range(20)]
    wait_until(lambda: store.failed_commits >= 3, timeout_s=TIMEOUT_S, what="commits retried")

    # RPC answers from the view meanwhile; a clear is refused, as it could not be stored.
    assert done in client.get_all_tasks()
    with pytest.raises(GeneralError, match="cannot be changed now"):
        client.clear_task(done)
    assert not set(during) & set(store.tasks), "nothing written while the store fails"
    if broker.transport == "rabbitmq":
        probe = broker.connection(confirm_publish=False)
        assert admin_of(probe).queue_size(names.EVENTS_QUEUE) == 0  # delivered, held unacked, not dropped
    [paused] = _store_lines(caplog)  # one line for the change of state, not one per try
    assert paused.startswith(
        "store switchable test store unavailable: commit: database or disk is full; ingest paused"
    )
    assert paused.endswith("events not stored (none acked), retrying")

    store.broken = False
    wait_until(lambda: set(during) <= set(store.tasks), timeout_s=TIMEOUT_S, what="held events stored")
    # The line is logged once the commit that stored them returned: a moment after they show.
    wait_until(lambda: len(_store_lines(caplog)) >= 2, timeout_s=TIMEOUT_S, what="the store's back line")
    lines = _store_lines(caplog)
    assert len(lines) == 2, lines
    assert lines[1].startswith("store switchable test store is back after ")
    assert lines[1].endswith("failed tries: ingest resumed")
    assert client.clear_task(done) is True
    wait_until(lambda: done in store.tombstones, timeout_s=TIMEOUT_S, what="clear stored")


@pytest.mark.integration
def test_events_held_by_a_failing_store_are_not_acked_and_come_again_to_the_next_aggregator(
    rabbitmq_broker: Broker,
) -> None:
    store = SwitchableStore()
    store.broken = True
    pub = TaskPublisher(rabbitmq_broker.connection(), "vdsm")
    first = Aggregator(rabbitmq_broker.connection(), store=store)
    with RunningAggregator(first):
        ids = [pub.create("copyImage", ["spm"]).id for _ in range(5)]
        wait_until(lambda: all(i in first.view for i in ids), timeout_s=TIMEOUT_S, what="events applied")
        wait_until(lambda: store.failed_commits >= 2, timeout_s=TIMEOUT_S, what="commits retried")
    assert store.tasks == {}

    # Stopped with its store failing, it acked nothing: the events come again, and are stored.
    second_store = SwitchableStore()
    with RunningAggregator(Aggregator(rabbitmq_broker.connection(), store=second_store)):
        wait_until(lambda: set(ids) <= set(second_store.tasks), timeout_s=TIMEOUT_S, what="redelivered")
