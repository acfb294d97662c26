"""``bus-tasks gluster`` against a real glusterd, with ``bus-tasks serve`` on the real RabbitMQ.

Each test makes its own volume (bricks in a temporary directory, FUSE-mounted, named ``bt...``)
and removes it; the glusterd is the machine's, or one these tests start and stop.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from support.brokers import Broker, admin_of
from support.gluster import FakeGluster, Glusterd, Volume, Volumes, gluster, glusterd_session
from support.processes import Process, start_serve

from bus_tasks import names
from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

BUS_TASKS = Path(sys.executable).parent / "bus-tasks"
INTERVAL_S = 1.0
MIGRATION_S = 180.0  # a small rebalance or remove-brick ends well within this on a loaded machine


@pytest.fixture(scope="session")
def glusterd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Glusterd]:
    yield from glusterd_session(tmp_path_factory.mktemp("glusterd"))


@pytest.fixture
def volumes(glusterd: Glusterd, tmp_path: Path) -> Iterator[Volumes]:
    made = Volumes(tmp_path / "gluster")
    yield made
    if glusterd.own and (glusterd.process is None or glusterd.process.poll() is not None):
        glusterd.start()  # a test killed it: cleaning up needs it
    made.remove_all()


@pytest.fixture
def plugin(
    glusterd: Glusterd, rabbitmq_broker: Broker, tmp_path: Path
) -> Iterator[tuple[Process, TasksClient]]:
    """``bus-tasks serve`` and ``bus-tasks gluster`` (on a glusterd that answers) as processes,
    and a client of theirs."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    serve = start_serve(rabbitmq_broker.url, data_dir)
    process = Process(
        [
            str(BUS_TASKS),
            "gluster",
            "--broker",
            rabbitmq_broker.url,
            "--interval-s",
            str(INTERVAL_S),
            "--timeout-s",
            "30",
        ],
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO"},
    )
    client = TasksClient(rabbitmq_broker.connection(confirm_publish=False), timeout_s=20.0)
    try:
        process.wait_for_line("listening for control commands", timeout_s=60.0)
        yield process, client
    finally:
        client.close()
        process.kill()
        serve.kill()


def _started_id(done_stdout: str) -> str:
    found = re.search(r"^ID: ([0-9a-f-]{36})$", done_stdout, re.MULTILINE)
    assert found, done_stdout
    return found.group(1)


def _wait_task(client: TasksClient, task_id: str, state: str, timeout_s: float) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        task = client.get_all_tasks(["gluster"]).get(task_id)
        return task if task is not None and task["state"] == state else None

    return wait_until(reached, timeout_s=timeout_s, interval_s=0.5, what=f"gluster task {task_id} {state}")


def _aggregate(xml_text: str) -> dict[str, Any]:
    """gluster's own ``<aggregate>`` of a status answer, read independently of the plugin."""
    aggregate = ElementTree.fromstring(xml_text).find(".//aggregate")
    assert aggregate is not None, xml_text
    names = {
        "lookups": "filesScanned",
        "files": "filesMoved",
        "failures": "filesFailed",
        "skipped": "filesSkipped",
        "size": "totalSizeMoved",
    }
    counts: dict[str, Any] = {vdsm: int(aggregate.findtext(gl) or "") for gl, vdsm in names.items()}
    counts["runtime"] = float(aggregate.findtext("runtime") or "")
    return counts


def _remove_brick_start(volume: Volume, brick: str) -> str:
    return _started_id(gluster("volume", "remove-brick", volume.name, brick, "start").stdout)


def test_a_rebalance_after_add_brick_appears_with_gluster_s_id_and_finishes_with_gluster_s_counters(
    volumes: Volumes, plugin: tuple[Process, TasksClient]
) -> None:
    _, client = plugin
    volume = volumes.create(files=300)
    volume.bricks.append(volume.brick(3))
    gluster("volume", "add-brick", volume.name, volume.bricks[-1], "force")

    task_id = _started_id(gluster("volume", "rebalance", volume.name, "start").stdout)

    task = _wait_task(client, task_id, "finished", MIGRATION_S)
    status = gluster("volume", "rebalance", volume.name, "status", "--xml").stdout
    assert (task["verb"], task["tags"], task["taskState"], task["taskResult"]) == (
        "rebalance",
        ["gluster", f"volume:{volume.name}", "type:REBALANCE"],
        "finished",
        "success",
    )
    assert {k: task["data"][k] for k in _aggregate(status)} == _aggregate(status)
    assert task["data"]["filesScanned"] >= 300
    assert [h["name"] for h in task["data"]["hosts"]] == ["localhost"]


def test_a_remove_brick_runs_with_its_bricks_and_task_stop_through_the_rpc_queue_stops_it_in_gluster(
    volumes: Volumes, plugin: tuple[Process, TasksClient]
) -> None:
    _, client = plugin
    volume = volumes.create(files=2000)
    brick = volume.bricks[-1]
    task_id = _remove_brick_start(volume, brick)
    running = _wait_task(client, task_id, "running", 60.0)
    assert (running["verb"], running["data"]["bricks"], running["data"]["commitPending"]) == (
        "removeBrick",
        [brick],
        False,
    )

    assert client.stop_task(task_id) is True

    stopped = _wait_task(client, task_id, "failed", 60.0)
    assert (stopped["code"], stopped["message"]) == (411, "Task is aborted: stopped by request")
    listing = gluster("volume", "status", volume.name, "tasks", "--xml").stdout
    assert task_id not in listing
    after = gluster("volume", "remove-brick", volume.name, brick, "status", "--xml", check=False).stdout
    assert "remove-brick not started" in after


def test_glusterd_killed_and_restarted_mid_way_the_plugin_survives_and_catches_up(
    glusterd: Glusterd, volumes: Volumes, plugin: tuple[Process, TasksClient]
) -> None:
    if not glusterd.own:
        pytest.skip("the machine's glusterd was not started by these tests: it is not killed here")
    process, client = plugin
    volume = volumes.create(files=2000)
    task_id = _remove_brick_start(volume, volume.bricks[-1])
    _wait_task(client, task_id, "running", 60.0)

    glusterd.kill()
    failed_at = process.wait_for_line("gluster tasks listing failed", timeout_s=30.0)
    assert client.get_all_tasks(["gluster"])[task_id]["state"] == "running"  # last known state kept
    glusterd.start()

    done = _wait_task(client, task_id, "finished", MIGRATION_S)
    process.wait_for_line("gluster CLI answers again", timeout_s=30.0, after=failed_at)
    assert process.popen.poll() is None
    assert (done["data"]["commitPending"], done["message"]) == (
        True,
        "completed: migration complete, commit pending",
    )
    failures = [line for line in process.lines if "gluster tasks listing failed" in line]
    assert len(failures) == 1, failures  # one line per failure state change, not per poll


@pytest.mark.parametrize("second_gluster", ["glusterd answers", "gluster CLI fails"])
def test_a_second_plugin_exits_1_with_one_line_saying_the_name_is_taken_and_publishes_nothing(
    rabbitmq_broker: Broker, plugin: tuple[Process, TasksClient], tmp_path: Path, second_gluster: str
) -> None:
    _, client = plugin
    # A task of the owner that gluster does not list (a second plugin that polled before its
    # claim published such tasks as "no longer listed: failed": issue 27).
    injected = TaskPublisher(rabbitmq_broker.connection(), "gluster")
    task_id = injected.create(
        "rebalance", ["gluster", "volume:gone"], state=State.RUNNING, data={"volume": "gone"}
    ).id
    injected.close()
    before = _wait_task(client, task_id, "running", 30.0)
    tap = names.events_queue("tap")  # every task event and marker from now on, read by nobody
    rabbitmq_broker.connection().topology.declare_queue(tap)
    down = ["--gluster-bin", str(FakeGluster(tmp_path / "down").binary)]  # answers as a down glusterd
    second = Process(
        [
            str(BUS_TASKS),
            "gluster",
            "--broker",
            rabbitmq_broker.url,
            "--interval-s",
            str(INTERVAL_S),
            *(down if second_gluster == "gluster CLI fails" else []),
        ],
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "WARNING"},
    )
    try:
        status = second.popen.wait(60.0)
    finally:
        second.kill()

    assert status == 1
    taken = [line for line in second.lines if line.startswith("bus-tasks gluster:")]
    assert taken == [
        "bus-tasks gluster: General Exception: subsystem 'gluster' is already owned by a live process "
        "(it consumes the control queue bus_tasks.control.gluster): run one publisher process per subsystem name"
    ]
    assert admin_of(rabbitmq_broker.connection()).queue_size(tap) == 0
    assert client.get_all_tasks(["gluster"])[task_id] == before
