"""Nothing lost: kill -9 of the aggregator mid-stream, and a store deleted while it is down."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.brokers import Broker
from support.processes import SUBSYSTEM_SCRIPT, Process, start_serve, start_subsystem
from support.procs.stream import expected, task_id

from bus_tasks import transport
from bus_tasks.client import TasksClient
from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

STREAM_SCRIPT = SUBSYSTEM_SCRIPT.parent / "stream.py"
TASKS_PER_PUBLISHER = 2000
UPDATES = 3  # created + 3 updates + finished = 5 events per task: 20,000 events in all
KILLS = 3


def _visible(task: dict[str, Any]) -> dict[str, Any]:
    return {key: task[key] for key in ("subsystem", "verb", "tags", "state", "code", "message", "progress")}


def _expected_view() -> dict[str, dict[str, Any]]:
    return {
        task_id(subsystem, index): expected(subsystem, index)
        for subsystem in ("vdsm", "gluster")
        for index in range(TASKS_PER_PUBLISHER)
    }


def test_kill_9_of_the_aggregator_during_a_20000_event_stream_loses_nothing(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    data_dir = tmp_path / "data"
    serve = start_serve(url, data_dir)
    publishers = [
        Process(
            [
                sys.executable,
                str(STREAM_SCRIPT),
                "--broker",
                url,
                "--subsystem",
                name,
                "--tasks",
                str(TASKS_PER_PUBLISHER),
                "--updates",
                str(UPDATES),
            ]
        )
        for name in ("vdsm", "gluster")
    ]
    kills = 0
    try:
        for _ in range(KILLS):
            serve.wait_for_line("aggregator ready", timeout_s=30)
            time.sleep(0.8)  # let it apply part of the stream: the kill lands mid-stream
            serve.kill()  # SIGKILL: no flush, no goodbye
            kills += 1
            serve = start_serve(url, data_dir)
        for publisher in publishers:
            assert publisher.popen.wait(240) == 0, publisher.log
        want = _expected_view()
        with TasksClient(transport.open(url), timeout_s=30) as client:
            wait_until(
                lambda: {i: _visible(t) for i, t in client.get_all_tasks().items()} == want,
                timeout_s=120,
                interval_s=0.5,
                what="the view of an aggregator that never died",
            )
            assert len(client.get_all_tasks()) == 2 * TASKS_PER_PUBLISHER
    finally:
        for publisher in publishers:
            publisher.kill()
        assert serve.terminate() == 0, serve.log
    assert kills == KILLS


def test_store_deleted_while_the_aggregator_is_down_is_rebuilt_by_resync(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    data_dir = tmp_path / "data"
    serve = start_serve(url, data_dir)
    subsystem = start_subsystem(url, "vdsm", "--tag", "spm", "--tasks", "50", "--deadline", "120")
    try:
        with TasksClient(transport.open(url), timeout_s=10) as client:
            wait_until(lambda: len(client.get_all_tasks()) == 50, timeout_s=60, what="50 tasks listed")
            assert serve.terminate() == 0, serve.log
            shutil.rmtree(data_dir)

            serve = start_serve(url, data_dir)
            # The new aggregator starts empty and asks for a resync; the subsystem re-announces.
            wait_until(lambda: len(client.get_all_tasks()) == 50, timeout_s=60, what="view rebuilt by resync")
            assert all(t["subsystem"] == "vdsm" for t in client.get_all_tasks().values())
    finally:
        subsystem.kill()
        assert serve.terminate() == 0, serve.log
