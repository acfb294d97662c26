"""The one subsystem runner (simulate, plugins and tests run it): the claim, control served with
heartbeats, turns until the stop, a clean close that frees the name. On every transport."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.brokers import System

from bus_tasks.core.model import State
from bus_tasks.errors import ShutdownRequested, SubsystemTaken
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


def test_a_claim_announces_the_tasks_and_beats_and_a_close_says_stopped_and_frees_the_name(
    system: System, runners: list[SubsystemRunner]
) -> None:
    first = open_runner(system, runners)
    task = first.publisher.create("copyImage", ["spm"], state=State.RUNNING).id

    first.claim()

    assert first.serving
    wait_until(lambda: state_of(system, "vdsm") == "alive", timeout_s=TIMEOUT_S, what="alive")
    assert task in system.client().get_all_tasks()
    assert first.close() is True
    wait_until(lambda: state_of(system, "vdsm") == "stopped", timeout_s=TIMEOUT_S, what="stopped")
    second = open_runner(system, runners)
    second.claim()  # the name is free again
    assert second.serving


def test_a_claim_of_a_live_name_is_refused_at_once_serves_nothing_and_commands_reach_the_owner(
    system: System, runners: list[SubsystemRunner]
) -> None:
    owner = open_runner(system, runners)
    stopped: list[str] = []
    owner.publisher.on_stop(stopped.append)
    task = owner.publisher.create("copyImage", ["spm"], state=State.RUNNING).id
    owner.claim()
    wait_until(lambda: task in system.aggregator.view, timeout_s=TIMEOUT_S, what="task applied")
    second = open_runner(system, runners)

    with pytest.raises(SubsystemTaken, match="'vdsm' is already owned by a live process"):
        second.claim()

    assert not second.serving
    assert system.client().stop_task(task) is True
    assert (stopped, owner.publisher.get(task).state) == ([task], State.ABORTING)


def test_a_claim_refused_on_the_control_thread_sets_the_stop_and_keeps_the_reason(
    system: System, runners: list[SubsystemRunner]
) -> None:
    open_runner(system, runners).claim()
    second = open_runner(system, runners)

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
