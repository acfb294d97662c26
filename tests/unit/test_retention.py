"""Done tasks nobody clears, and tombstones, expire: memory stays bounded."""

from __future__ import annotations

from support.brokers import Broker, SystemFactory

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
