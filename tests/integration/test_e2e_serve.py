"""``bus-tasks serve`` as a separate process on the real RabbitMQ: ready, queried, stopped cleanly."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.brokers import Broker
from support.cli_helpers import BusTasksProcess, cli_env, details, run_cli, without_times

from bus_tasks import names
from bus_tasks.client import TasksClient
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0

Serve = Callable[[], BusTasksProcess]


@pytest.fixture
def serve(rabbitmq_broker: Broker, tmp_path: Path) -> Iterator[Serve]:
    """Start ``bus-tasks serve`` on the test's vhost (not yet waiting for it); killed at teardown."""
    started: list[BusTasksProcess] = []

    def start() -> BusTasksProcess:
        data_dir = tmp_path / "data"
        data_dir.mkdir(exist_ok=True)
        process = BusTasksProcess(
            "serve",
            "--broker",
            rabbitmq_broker.url,
            cwd=tmp_path,
            env=cli_env(BUS_TASKS_DATA_DIR=str(data_dir), BUS_TASKS_LOG_LEVEL="INFO"),
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def _inject(url: str, cwd: Path, *args: str) -> list[str]:
    """Task ids published by ``bus-tasks inject ARGS``, a process of its own."""
    done = run_cli("inject", "--broker", url, *args, cwd=cwd)
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout.split()


def test_serve_answers_every_query_over_tasks_injected_by_other_processes_and_stops_on_sigterm(
    rabbitmq_broker: Broker, serve: Serve, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    aggregator = serve()
    aggregator.wait_for_line("aggregator ready", timeout_s=READY_TIMEOUT_S)

    spm = _inject(
        url, tmp_path, "--subsystem", "vdsm", "--verb", "createVolume", "--tag", "spm", "--count", "3"
    )
    hsm = _inject(url, tmp_path, "--subsystem", "vdsm", "--verb", "downloadImage", "--tag", "hsm")
    gluster = _inject(
        url,
        tmp_path,
        "--subsystem",
        "gluster",
        "--verb",
        "rebalance",
        "--tag",
        "gluster",
        "--tag",
        "volume:gv1",
    )
    expected = {
        **{i: details(i, subsystem="vdsm", verb="createVolume", tags=["spm"]) for i in spm},
        **{i: details(i, subsystem="vdsm", verb="downloadImage", tags=["hsm"]) for i in hsm},
        **{
            i: details(i, subsystem="gluster", verb="rebalance", tags=["gluster", "volume:gv1"])
            for i in gluster
        },
    }

    with TasksClient(rabbitmq_broker.connection(confirm_publish=False), timeout_s=10.0) as client:
        wait_until(lambda: len(client.get_all_tasks()) == 5, timeout_s=10, what="five tasks in the view")
        assert without_times(client.get_all_tasks()) == expected
        assert without_times(client.get_all_tasks(["gluster"])) == {i: expected[i] for i in gluster}
        assert without_times(client.get_all_tasks(["spm", "hsm"])) == {i: expected[i] for i in spm + hsm}
        assert client.get_all_tasks_info() == {i: {"id": i, "verb": "createVolume"} for i in spm}
        assert client.get_all_tasks_statuses() == {
            i: {"taskID": i, "taskState": "running", "taskResult": "", "code": 0, "message": ""} for i in spm
        }

    assert aggregator.terminate(timeout_s=STOP_TIMEOUT_S) == 0
    ready = aggregator.wait_for_line("aggregator ready", timeout_s=0)
    stopped = aggregator.wait_for_line("aggregator stopped", timeout_s=0)
    assert ready < stopped
    assert [line for line in aggregator.lines if "aggregator ready" in line] == [aggregator.lines[ready]]
    assert "Traceback" not in aggregator.log


def _queues(vhost: str) -> list[str]:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def test_an_event_published_right_after_the_ready_line_is_in_the_view(
    rabbitmq_broker: Broker, serve: Serve
) -> None:
    # The event queue does not exist yet: only the aggregator's start creates and binds it.
    assert names.EVENT_LOG not in _queues(rabbitmq_broker.url.rsplit("/", 1)[1])
    # The publisher is connected beforehand, so its event leaves the moment the line is read.
    connection = rabbitmq_broker.connection()
    connection.topology.declare_exchanges()
    publisher = TaskPublisher(connection, "vdsm")

    aggregator = serve()
    aggregator.wait_for_line("aggregator ready", timeout_s=READY_TIMEOUT_S)
    task_id = publisher.create("copyImage", ["spm"], state="running").id
    publisher.flush(10.0)

    with TasksClient(rabbitmq_broker.connection(confirm_publish=False), timeout_s=10.0) as client:
        # An event published before the queue was bound would be dropped: this wait would fail.
        seen = wait_until(client.get_all_tasks, timeout_s=10, what="the event in the view")
        assert without_times(seen) == {
            task_id: details(task_id, subsystem="vdsm", verb="copyImage", tags=["spm"])
        }
    assert aggregator.terminate(timeout_s=STOP_TIMEOUT_S) == 0
