"""The engine's poll-and-clear loop against separate aggregator and subsystem processes."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from support.brokers import Broker
from support.processes import start_serve, start_subsystem

from bus_tasks import transport
from bus_tasks.client import TasksClient
from bus_tasks.errors import TaskAborted, TaskStateError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STORAGE_TASKS = 120
GLUSTER_TASKS = 80
POLL_DEADLINE_S = 240.0


def test_engine_poller_clears_200_tasks_run_to_completion_by_two_subsystems(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    serve = start_serve(url, tmp_path / "data")
    storage = start_subsystem(url, "vdsm", "--tag", "spm", "--tasks", str(STORAGE_TASKS), "--seed", "1")
    gluster = start_subsystem(
        url,
        "gluster",
        "--verb",
        "rebalance",
        "--tag",
        "gluster",
        "--tasks",
        str(GLUSTER_TASKS),
        "--seed",
        "2",
    )
    client = TasksClient(transport.open(url), timeout_s=10.0)
    seen: set[str] = set()
    cleared: set[str] = set()
    stopped: set[str] = set()
    not_yet = 0  # 410 answers, each retried on a later poll
    outcomes: dict[str, str] = {}
    deadline = time.monotonic() + POLL_DEADLINE_S
    try:
        while len(cleared) < STORAGE_TASKS + GLUSTER_TASKS:
            assert time.monotonic() < deadline, f"poller deadline: {len(seen)} seen, {len(cleared)} cleared"
            tasks = client.get_all_tasks()
            seen.update(tasks)
            for task_id, task in tasks.items():
                if task_id in cleared:
                    continue
                if task["taskState"] == "running" and task_id not in stopped and _chosen_to_stop(task_id):
                    with contextlib.suppress(TaskAborted):  # already aborting: on its way
                        assert client.stop_task(task_id) is True
                    stopped.add(task_id)
                if task["taskState"] == "finished" or task_id in stopped:
                    # The engine clears what it saw finish; for stopped tasks it tries eagerly.
                    try:
                        assert client.clear_task(task_id) is True
                        cleared.add(task_id)
                        outcomes[task_id] = "stopped" if task_id in stopped else task["taskResult"]
                    except TaskStateError:
                        not_yet += 1
            assert storage.popen.poll() in (None, 0), storage.log
            assert gluster.popen.poll() in (None, 0), gluster.log
            time.sleep(0.05)  # the engine's poll interval, not synchronisation

        assert len(seen) == STORAGE_TASKS + GLUSTER_TASKS
        assert client.get_all_tasks() == {}
        assert client.get_all_tasks_info() == {}
        assert client.get_all_tasks_statuses() == {}
        assert stopped, "the poller stopped some tasks"
        assert {"success", "cleanFailure", "stopped"} <= set(outcomes.values())
        # Every subsystem learned of every clear of its tasks, then exited by itself.
        assert storage.popen.wait(60) == 0, storage.log
        assert gluster.popen.wait(60) == 0, gluster.log
    finally:
        client.close()
        for process in (storage, gluster):
            process.kill()
        assert serve.terminate() == 0, serve.log
    assert serve.wait_for_line("aggregator stopped", timeout_s=5)
    print(f"cleared {len(cleared)} tasks; {len(stopped)} stopped; {not_yet} clears answered 410 and retried")


def _chosen_to_stop(task_id: str) -> bool:
    """About one task in eight, chosen by its id so the choice does not depend on timing."""
    return int(task_id[:8], 16) % 8 == 0
