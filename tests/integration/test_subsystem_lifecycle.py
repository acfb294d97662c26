"""Subsystem processes on the real RabbitMQ, as they really live (SPEC 11): killed and restarted,
started twice, stopped; each against ``bus-tasks serve`` as a process of its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.brokers import Broker
from support.cli_helpers import BusTasksProcess, cli_env
from support.processes import Process, start_serve

from bus_tasks.client import TasksClient
from bus_tasks.errors import UnknownTask
from bus_tasks.testing import wait_until

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0
TASKS = 3

Simulate = Callable[[], BusTasksProcess]


@pytest.fixture
def served(rabbitmq_broker: Broker, tmp_path: Path) -> Iterator[Process]:
    process = start_serve(rabbitmq_broker.url, tmp_path / "data")
    yield process
    process.kill()


@pytest.fixture
def simulate(rabbitmq_broker: Broker, tmp_path: Path, served: Process) -> Iterator[Simulate]:
    """Start ``bus-tasks simulate storage`` as subsystem ``vdsm``, its tasks steady (slow steps)."""
    started: list[BusTasksProcess] = []

    def start() -> BusTasksProcess:
        process = BusTasksProcess(
            "simulate",
            "storage",
            "--subsystem",
            "vdsm",
            "--tasks",
            str(TASKS),
            "--interval",
            "60",
            "--broker",
            rabbitmq_broker.url,
            cwd=tmp_path,
            env=cli_env(BUS_TASKS_LOG_LEVEL="INFO"),
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def client(rabbitmq_broker: Broker) -> Iterator[TasksClient]:
    with TasksClient(rabbitmq_broker.url, timeout_s=10.0) as client:
        yield client


def vdsm_tasks(client: TasksClient) -> set[str]:
    return {i for i, t in client.get_all_tasks().items() if t["subsystem"] == "vdsm"}


def listed(client: TasksClient, count: int) -> set[str]:
    wait_until(lambda: len(vdsm_tasks(client)) == count, timeout_s=TIMEOUT_S, what=f"{count} vdsm tasks")
    return vdsm_tasks(client)


def test_a_subsystem_killed_and_restarted_takes_its_lost_tasks_out_of_the_view(
    simulate: Simulate, client: TasksClient
) -> None:
    first = simulate()
    before = listed(client, TASKS)
    assert {client.get_task_status(t)["taskState"] for t in before} <= {"running", "init"}
    first.kill()  # SIGKILL: no goodbye, its tasks still look alive

    simulate()

    wait_until(lambda: not (vdsm_tasks(client) & before), timeout_s=TIMEOUT_S, what="the lost tasks gone")
    after = listed(client, TASKS)
    assert not after & before
    assert set(client.get_all_tasks_statuses()) & before == set()  # the engine's listing too
    for task in before:
        with pytest.raises(UnknownTask):
            client.get_task_status(task)


def test_a_second_process_claiming_a_live_subsystem_name_is_refused_at_start_and_the_first_keeps_its_commands(
    simulate: Simulate, client: TasksClient
) -> None:
    first = simulate()
    first.wait_for_line("listening for control commands", timeout_s=TIMEOUT_S)
    tasks = listed(client, TASKS)

    began = time.monotonic()
    second = simulate()
    status = second.popen.wait(TIMEOUT_S)

    assert status == 1
    assert "subsystem 'vdsm' is already owned by a live process" in second.log
    assert time.monotonic() - began < TIMEOUT_S
    running = next(t for t in tasks if client.get_task_status(t)["taskState"] == "running")
    assert client.stop_task(running) is True  # answered by the owner, not stolen by the second
    wait_until(
        lambda: client.get_task_status(running)["taskState"] in ("aborting", "finished"),
        timeout_s=TIMEOUT_S,
        what="the stop carried out",
    )


def test_a_subsystem_stopped_with_sigterm_shows_stopped_and_its_orphans_can_be_force_cleared(
    simulate: Simulate, client: TasksClient
) -> None:
    first = simulate()
    first.wait_for_line("listening for control commands", timeout_s=TIMEOUT_S)
    tasks = listed(client, TASKS)
    wait_until(
        lambda: client.subsystems().get("vdsm", {}).get("state") == "alive", timeout_s=TIMEOUT_S, what="alive"
    )

    assert first.terminate() == 0

    wait_until(lambda: client.subsystems()["vdsm"]["state"] == "stopped", timeout_s=TIMEOUT_S, what="stopped")
    assert client.subsystems()["vdsm"]["tasks"] == TASKS
    for task in tasks:
        assert client.clear_task(task, force=True) is True
    assert vdsm_tasks(client) == set()
    assert client.subsystems()["vdsm"]["tasks"] == 0
