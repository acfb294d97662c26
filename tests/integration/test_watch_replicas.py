"""A watcher across replicas on the real RabbitMQ (SPEC 12, 13): the aggregator it follows is
killed mid-stream; it goes on with the survivor and ends with the survivor's view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.brokers import Broker
from support.processes import Process
from support.replicas import replica, rpc_queues
from support.streams import SUBSYSTEMS, expected_view, start_stream, visible
from support.watchers import Watcher

from bus_tasks import transport
from bus_tasks.client import TasksClient
from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TASKS_PER_PUBLISHER = 1000
UPDATES = 3  # created + 3 updates + finished: 5 events a task, 10,000 events from two publishers
EVENTS_PER_S = 1500.0  # each publisher: the stream lasts a few seconds, long enough to kill in


def test_a_watcher_whose_aggregator_is_killed_mid_stream_goes_on_with_the_survivor(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    started: list[Process] = []
    follower = None
    try:
        replicas = {name: replica(url, tmp_path, name) for name in ("a", "b")}
        started += replicas.values()
        with TasksClient(transport.open(url), timeout_s=10.0) as client:
            rpc_queues(client, "a", "b")
            watching = TasksClient(transport.open(url), timeout_s=10.0)
            # A listing from the survivor may start lower than where the killed one was.
            follower = Watcher(watching, watching.watch(), forward_only=False)
            wait_until(follower.kinds, timeout_s=30, what="the listing")
            followed = follower.following()
            assert followed in replicas
            publishers = [
                start_stream(
                    url,
                    name,
                    tasks=TASKS_PER_PUBLISHER,
                    updates=UPDATES,
                    events_per_s=EVENTS_PER_S,
                    listen=True,
                )
                for name in SUBSYSTEMS
            ]
            started += publishers
            wait_until(lambda: follower.revision > 2000, timeout_s=60, what="the watcher mid-stream")
            assert all(p.popen.poll() is None for p in publishers), "the kill must land mid-stream"
            replicas[followed].kill()

            survivor = "b" if followed == "a" else "a"
            wait_until(lambda: follower.following() == survivor, timeout_s=60, what="the watcher moved on")
            for p in publishers:
                p.wait_for_line("events published and confirmed", timeout_s=120)
            want = expected_view(TASKS_PER_PUBLISHER)

            def same() -> bool:
                assert follower.error is None, follower.error
                answer: dict[str, Any] = client.get_all_tasks(options={"revision": True})
                return bool(answer["tasks"] == follower.tasks and follower.revision >= answer["revision"])

            wait_until(same, timeout_s=120, interval_s=0.5, what="the watcher's view equals the survivor's")
            assert {i: visible(t) for i, t in follower.tasks.items()} == want
            assert follower.kinds().count("listing") <= 2, "replayed from the survivor, or listed once more"
    finally:
        if follower is not None:
            follower.stop()
        for process in started:
            process.kill()
