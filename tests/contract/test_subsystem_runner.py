"""The one subsystem runner (simulate, plugins and tests run it): the claim at open, before
anything is published, the announce once the process is ready, control served with heartbeats,
turns until the stop, a clean close that frees the name. On every transport."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.brokers import System, admin_of

from bus_tasks import names
from bus_tasks.core.model import State
from bus_tasks.errors import BusTasksError, ShutdownRequested, SubsystemTaken
from bus_tasks.protocol import control
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.subsystem.runner import SubsystemRunner
from bus_tasks.testing import wait_until

TIMEOUT_S = 10.0


@pytest.fixture
def runners(system: System) -> Iterator[list[SubsystemRunner]]:
    """Every runner a test opens (append it), closed at the end."""
    opened: list[SubsystemRunner] = []
    yield opened
    for runner in reversed(opened):
        runner.close()


def open_runner(system: System, runners: list[SubsystemRunner], name: str = "vdsm") -> SubsystemRunner:
    runner = SubsystemRunner.open(name, system.broker.connect, heartbeat_s=0.5)
    runners.append(runner)
    return runner


def state_of(system: System, name: str) -> str | None:
    state: str | None = system.client().subsystems().get(name, {}).get("state")
    return state


def event_tap(system: System) -> str:
    """A queue of every task event and announce marker from now on (an aggregator's events queue
    that no aggregator reads); its name."""
    queue = names.events_queue("tap")
    system.broker.connection().topology.declare_queue(queue)
    return queue


def test_open_claims_the_name_the_announce_publishes_the_tasks_and_a_close_says_stopped_and_frees_it(
    system: System, runners: list[SubsystemRunner]
) -> None:
    first = open_runner(system, runners)
    assert (first.serving, first.announced) == (True, False)
    task = first.publisher.create("copyImage", ["spm"], state=State.RUNNING).id

    assert first.announce() == 1

    assert first.announced
    wait_until(lambda: state_of(system, "vdsm") == "alive", timeout_s=TIMEOUT_S, what="alive")
    assert task in system.client().get_all_tasks()
    assert first.close() is True
    wait_until(lambda: state_of(system, "vdsm") == "stopped", timeout_s=TIMEOUT_S, what="stopped")
    second = open_runner(system, runners)  # the name is free again
    assert second.serving


def test_a_second_open_of_a_live_name_is_refused_before_it_publishes_anything_and_the_owner_keeps_its_tasks(
    system: System, runners: list[SubsystemRunner]
) -> None:
    owner = open_runner(system, runners)
    stopped: list[str] = []
    owner.publisher.on_stop(stopped.append)
    task = owner.publisher.create("copyImage", ["spm"], state=State.RUNNING).id
    owner.announce()
    client = system.client()
    before = wait_until(lambda: client.get_all_tasks().get(task), timeout_s=TIMEOUT_S, what="task applied")
    tap = event_tap(system)

    with pytest.raises(SubsystemTaken, match="'vdsm' is already owned by a live process"):
        open_runner(system, runners)

    # A refused open closed its publisher (flushed): anything it had published would be here.
    assert admin_of(system.broker.connection()).queue_size(tap) == 0
    assert client.get_all_tasks() == {task: before}
    assert client.stop_task(task) is True
    assert (stopped, owner.publisher.get(task).state) == ([task], State.ABORTING)


def test_before_the_announce_a_resync_announces_nothing_and_a_stop_is_refused_as_starting(
    system: System, runners: list[SubsystemRunner]
) -> None:
    gone = TaskPublisher(system.broker.connection(), "vdsm")  # a previous process of the name
    task = gone.create("copyImage", ["spm"], state=State.RUNNING).id
    gone.close()
    client = system.client()
    before = wait_until(lambda: client.get_all_tasks().get(task), timeout_s=TIMEOUT_S, what="task applied")
    runner = open_runner(system, runners)
    stopped: list[str] = []
    runner.publisher.on_stop(stopped.append)
    tap = event_tap(system)

    asking = system.broker.connection()
    asking.publish(
        control.resync_notice(), exchange=names.CONTROL_EXCHANGE, routing_key=names.CONTROL_BROADCAST
    )
    asking.flush()
    with pytest.raises(BusTasksError) as caught:  # answered after the resync: one queue, in order
        client.stop_task(task)

    assert (caught.value.code, caught.value.message) == (
        100,
        f"General Exception: vdsm is starting, its tasks not known yet: stop {task}",
    )
    assert admin_of(system.broker.connection()).queue_size(tap) == 0
    assert (client.get_all_tasks(), stopped) == ({task: before}, [])
    runner.publisher.adopt(gone.get(task))
    runner.announce()
    taps = admin_of(system.broker.connection())
    wait_until(lambda: taps.queue_size(tap) == 2, timeout_s=TIMEOUT_S, what="the task and the marker")
    assert client.stop_task(task) is True
    assert stopped == [task]


def test_a_claim_refused_on_the_control_thread_sets_the_stop_and_keeps_the_reason(
    system: System, runners: list[SubsystemRunner]
) -> None:
    open_runner(system, runners)
    second = SubsystemRunner(TaskPublisher(system.broker.connection(), "vdsm"), system.broker.connect)
    runners.append(second)

    second.serve_control()

    assert second.stop.wait(TIMEOUT_S), "the refused claim did not stop the runner"
    assert isinstance(second.taken, SubsystemTaken)
    assert "'vdsm' is already owned by a live process" in second.taken.message


def test_run_takes_turns_until_the_stop_and_a_stop_while_the_broker_is_away_ends_it_quietly(
    system: System, runners: list[SubsystemRunner]
) -> None:
    runner = open_runner(system, runners)
    turns: list[int] = []

    def turn() -> None:
        turns.append(len(turns))
        if len(turns) == 3:
            runner.stop.set()

    runner.run(turn, 0.001)
    assert turns == [0, 1, 2]

    runner.stop.clear()

    def away() -> None:
        turns.append(len(turns))
        raise ShutdownRequested("stopping while the broker is away")

    runner.run(away, 0.001)
    assert turns == [0, 1, 2, 3]
