"""Nothing lost: kill -9 of the aggregator mid-stream, and a store deleted while it is down."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from support.brokers import Broker
from support.processes import start_serve, start_subsystem
from support.streams import SUBSYSTEMS, expected_view, start_stream, visible

from bus_tasks import transport
from bus_tasks.client import TasksClient
from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TASKS_PER_PUBLISHER = 2000
UPDATES = 3  # created + 3 updates + finished = 5 events per task: 20,000 events in all
KILLS = 3


def test_kill_9_of_the_aggregator_during_a_20000_event_stream_loses_nothing(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    data_dir = tmp_path / "data"
    serve = start_serve(url, data_dir)
    publishers = [start_stream(url, name, tasks=TASKS_PER_PUBLISHER, updates=UPDATES) for name in SUBSYSTEMS]
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
        want = expected_view(TASKS_PER_PUBLISHER)
        with TasksClient(transport.open(url), timeout_s=30) as client:
            wait_until(
                lambda: {i: visible(t) for i, t in client.get_all_tasks().items()} == want,
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
