"""Tasks as they really live (SPEC 11): resync that reconciles, retag through the owner, test
tasks the aggregator owns, forced clears of orphans, heartbeats. On every transport."""

from __future__ import annotations

from typing import Any

import pytest
from support.brokers import System

from bus_tasks.core.model import State
from bus_tasks.errors import (
    BrokerUnavailable,
    GeneralError,
    InvalidParameter,
    SubsystemTaken,
    TaskStateError,
    UnknownTask,
)
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

TIMEOUT_S = 10.0


def in_view(system: System, *tasks: str) -> None:
    wait_until(
        lambda: all(t in system.aggregator.view for t in tasks), timeout_s=TIMEOUT_S, what="tasks applied"
    )


def gone_from_view(system: System, *tasks: str) -> None:
    wait_until(
        lambda: not any(t in system.aggregator.view for t in tasks), timeout_s=TIMEOUT_S, what="tasks gone"
    )


def test_a_restarted_subsystem_announce_removes_the_tasks_it_lost_and_keeps_the_ones_it_kept(
    system: System,
) -> None:
    before = system.publisher("vdsm")
    kept = before.create("copyImage", ["spm"], state=State.RUNNING)
    lost = [before.create("createVolume", ["spm"], state=State.ACQUIRING).id for _ in range(2)]
    in_view(system, kept.id, *lost)
    before.close()  # killed: no goodbye, its tasks are still listed

    after = system.publisher("vdsm")
    after.adopt(kept)  # a task it persisted across the restart (VDSM's spm tasks)
    stop = system.serve(after)
    gone_from_view(system, *lost)

    client = system.client()
    assert set(client.get_all_tasks_statuses()) == {kept.id}
    assert set(system.aggregator.view.tombstones) >= set(lost)
    stop.set()


def test_an_announce_cut_short_before_its_end_marker_removes_nothing(system: System) -> None:
    before = system.publisher("vdsm")
    tasks = [before.create("copyImage", ["spm"]).id for _ in range(3)]
    in_view(system, *tasks)
    after = system.publisher("vdsm")
    after.create("copyImage", ["spm"])
    publish = after.connection.publish

    def broken_before_the_marker(body: bytes, **kwargs: Any) -> None:
        if kwargs["routing_key"].endswith(".announced"):
            raise after.connection.errors[0]("connection lost")
        publish(body, **kwargs)

    after.connection.publish = broken_before_the_marker  # type: ignore[method-assign]
    with pytest.raises(BrokerUnavailable):
        after.announce()
    after.connection.publish = publish  # type: ignore[method-assign]
    after.flush(TIMEOUT_S)
    marker = system.publisher("vdsm")
    marker.announce()  # an empty, complete announce after it: proves the queue was read past
    gone_from_view(system, *tasks)
    assert system.aggregator.counts["announces"] == 1


def test_retag_goes_through_the_owner_and_sticks_across_three_of_its_updates(system: System) -> None:
    pub = system.publisher("vdsm")
    task = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    stop = system.serve(pub)
    in_view(system, task)
    client = system.client()

    assert client.retag_task(task, ["retagged", "pool:1"]) == ["retagged", "pool:1"]

    assert pub.get(task).tags == ("retagged", "pool:1")  # the owner's own copy changed
    for progress in (10, 20, 30):
        pub.update(task, progress=progress)
        wait_until(
            lambda p=progress: client.get_task_details(task)["progress"] == p,  # type: ignore[misc]
            timeout_s=TIMEOUT_S,
            what=f"progress {progress}",
        )
        assert client.get_task_details(task)["tags"] == ["retagged", "pool:1"]
    assert set(client.get_all_tasks("retagged")) == {task}
    assert client.get_all_tasks("spm") == {}
    stop.set()


def test_retag_with_a_bad_tag_answers_1000_and_reaches_no_owner(memory_system: System) -> None:
    pub = memory_system.publisher("vdsm")
    task = pub.create("copyImage", ["spm"]).id
    in_view(memory_system, task)

    with pytest.raises(InvalidParameter, match="invalid tag 'a=b'"):
        memory_system.client().retag_task(task, ["a=b"])
    assert memory_system.aggregator.counts["control_retag"] == 0


def test_retag_of_a_task_whose_owner_is_offline_answers_100_before_the_deadline(
    memory_system: System,
) -> None:
    pub = memory_system.publisher("vdsm")  # not listening
    task = pub.create("copyImage", ["spm"]).id
    in_view(memory_system, task)

    with pytest.raises(GeneralError, match=r"did not answer Task\.retag in time"):
        memory_system.client(timeout_s=1.0).retag_task(task, ["x"])


def test_injected_test_tasks_are_owned_by_the_aggregator_so_retag_and_stop_are_answered(
    system: System,
) -> None:
    injector = system.publisher("test")  # as `bus-tasks inject`: publishes, then is gone
    task = injector.create("testTask", ["spm"], state=State.RUNNING).id
    injector.flush(TIMEOUT_S)
    injector.close()
    in_view(system, task)
    client = system.client()

    assert client.retag_task(task, ["retagged"]) == ["retagged"]
    wait_until(
        lambda: client.get_task_details(task)["tags"] == ["retagged"], timeout_s=TIMEOUT_S, what="retag"
    )
    assert client.stop_task(task) is True
    wait_until(
        lambda: client.get_task_details(task)["state"] == "recovered", timeout_s=TIMEOUT_S, what="stopped"
    )
    details = client.get_task_details(task)
    assert (details["code"], details["tags"]) == (411, ["retagged"])  # the retag stuck through the stop


def test_clear_force_removes_a_running_orphan_and_its_owner_drops_its_copy_when_it_comes_back(
    system: System,
) -> None:
    pub = system.publisher("vdsm")  # not listening: its owner is away
    task = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    in_view(system, task)
    client = system.client()
    with pytest.raises(TaskStateError):
        client.clear_task(task)

    assert client.clear_task(task, force=True) is True

    assert task not in client.get_all_tasks()
    with pytest.raises(UnknownTask):
        client.get_task_status(task)
    stop = system.serve(pub)  # the owner is back: the clear waited in its control queue
    wait_until(lambda: task not in pub, timeout_s=TIMEOUT_S, what="the owner dropped its copy")
    with pytest.raises(UnknownTask):
        pub.update(task, progress=50)  # the owner no longer has it to publish
    with pytest.raises(UnknownTask):
        client.get_task_status(task)
    stop.set()


def test_subsystems_lists_a_serving_subsystem_alive_and_stopped_once_it_stopped(system: System) -> None:
    pub = TaskPublisher(system.broker.connection(), "vdsm", heartbeat_s=0.2)
    task = pub.create("copyImage", ["spm"]).id
    stop = system.serve(pub)
    in_view(system, task)
    client = system.client()

    wait_until(
        lambda: client.subsystems().get("vdsm", {}).get("state") == "alive", timeout_s=TIMEOUT_S, what="alive"
    )
    listed = client.subsystems()["vdsm"]
    assert (listed["tasks"], listed["instance"], listed["heartbeatS"]) == (1, pub.instance, 0.2)
    assert listed["lastSeen"].endswith("Z")
    assert client.subsystems()["test"]["state"] == "alive"  # the aggregator's own test tasks

    stop.set()
    wait_until(lambda: client.subsystems()["vdsm"]["state"] == "stopped", timeout_s=TIMEOUT_S, what="stopped")


def test_a_second_publisher_claiming_a_live_subsystem_name_is_refused_and_commands_still_reach_the_first(
    system: System,
) -> None:
    first = system.publisher("vdsm")
    first.on_stop(lambda task_id: None)
    task = first.create("copyImage", ["spm"], state=State.RUNNING).id
    first.listen(control := system.broker.connection())
    stop = system.serve(first, control)
    in_view(system, task)

    second = system.publisher("vdsm")
    with pytest.raises(SubsystemTaken, match="'vdsm' is already owned by a live process"):
        second.listen(system.broker.connection())

    assert system.client().stop_task(task) is True
    assert first.get(task).state is State.ABORTING  # the command went to the owner
    stop.set()
