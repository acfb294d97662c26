"""Several aggregators on one RabbitMQ, active-active (SPEC 12), as separate processes.

Every replica reads the whole event log (a stream) from its own offset: one killed mid-stream
costs no read, the survivors agree on one revision and one view, a clear answered by one is
gone from all within 2 s (and a repeat of that clear at another is answered as the first), and a
replica that was down or is new catches up from the log alone.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.brokers import Broker
from support.processes import Process
from support.procs.stream import task_id
from support.raw_rpc import RawCaller
from support.replicas import answer, replica, rpc_queues
from support.streams import SUBSYSTEMS, expected_view, start_stream, visible

from bus_tasks import transport
from bus_tasks.client import TasksClient
from bus_tasks.errors import BusTasksError
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TASKS_PER_PUBLISHER = 1000
UPDATES = 3  # created + 3 updates + finished: 5 events a task, 10,000 events from two publishers
EVENTS_PER_S = 1500.0  # each publisher: the stream lasts a few seconds, long enough to kill in
CLEAR_WITHIN_S = 2.0


class Reader:
    """A client that lists every task in a loop, as the engine polls; counts what failed."""

    def __init__(self, url: str) -> None:
        self.reads = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(url,), daemon=True)
        self._thread.start()

    def _loop(self, url: str) -> None:
        with TasksClient(transport.open(url), timeout_s=10.0) as client:
            while not self._stop.is_set():
                try:
                    client.get_all_tasks()
                    self.reads += 1
                except BusTasksError as exc:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.fixture
def started() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.kill()


def test_two_replicas_one_killed_mid_stream_lose_no_read_and_then_agree_on_one_revision(
    rabbitmq_broker: Broker, tmp_path: Path, started: list[Process]
) -> None:
    url = rabbitmq_broker.url
    a, b = replica(url, tmp_path, "a"), replica(url, tmp_path, "b")
    started += [a, b]
    reader = Reader(url)
    publishers = [
        start_stream(
            url, name, tasks=TASKS_PER_PUBLISHER, updates=UPDATES, events_per_s=EVENTS_PER_S, listen=True
        )
        for name in SUBSYSTEMS
    ]
    started += publishers
    with TasksClient(transport.open(url), timeout_s=10.0) as client:
        queues = rpc_queues(client, "a", "b")
        # Mid-stream: a has read part of the log, and both publishers are still publishing.
        wait_until(lambda: answer(url, queues["a"])["revision"] > 2000, timeout_s=60, what="a mid-stream")
        assert all(p.popen.poll() is None for p in publishers), "the kill must land mid-stream"
        a.kill()
        for p in publishers:
            p.wait_for_line("events published and confirmed", timeout_s=120)
        want = expected_view(TASKS_PER_PUBLISHER)
        wait_until(
            lambda: {i: visible(t) for i, t in client.get_all_tasks().items()} == want,
            timeout_s=120,
            interval_s=0.5,
            what="the survivor's view complete",
        )
        reader.stop()
        assert reader.failures == []
        assert reader.reads > 0

        a = replica(url, tmp_path, "a")  # back, from its own store and offset
        started.append(a)
        queues = rpc_queues(client, "a", "b")
        wait_until(
            lambda: answer(url, queues["a"]) == answer(url, queues["b"]),
            timeout_s=60,
            what="a caught up with b",
        )
        answers: list[dict[str, Any]] = [client.get_all_tasks(options={"revision": True}) for _ in range(20)]
        assert all(x == answers[0] for x in answers), "20 quiet queries, one revision, one view"
        assert {i: visible(t) for i, t in answers[0]["tasks"].items()} == want
        assert answers[0]["revision"] >= 2 * TASKS_PER_PUBLISHER * (UPDATES + 2)

        done = task_id("vdsm", 1)
        assert client.clear_task(done) is True
        cleared_at = time.monotonic()
        wait_until(
            lambda: all(done not in answer(url, q)["tasks"] for q in queues.values()),
            timeout_s=10,
            interval_s=0.05,
            what="the clear applied by every replica",
        )
        assert time.monotonic() - cleared_at < CLEAR_WITHIN_S

        c = replica(url, tmp_path, "c")  # new: an empty data directory
        started.append(c)
        queues = rpc_queues(client, "a", "b", "c")
        wait_until(
            lambda: answer(url, queues["c"]) == answer(url, queues["b"]),
            timeout_s=60,
            what="c caught up from the log",
        )
    for p in publishers:
        # The log held everything: nobody asked the subsystems to resync after the first start.
        assert p.log.count("resync requested") == 0, p.log


def test_a_second_replica_is_listed_by_bus_tasks_aggregators_and_no_warning_is_logged(
    rabbitmq_broker: Broker, tmp_path: Path, started: list[Process]
) -> None:
    url = rabbitmq_broker.url
    a, b = replica(url, tmp_path, "a"), replica(url, tmp_path, "b")
    started += [a, b]
    with TasksClient(transport.open(url), timeout_s=10.0) as client:
        rpc_queues(client, "a", "b")
        listed = {row["name"]: row for row in client.aggregators()}
    assert set(listed) == {"a", "b"}
    assert all(row["uptimeS"] >= 0 and row["revision"] >= 0 for row in listed.values())
    assert "another aggregator" not in a.log + b.log
    b.terminate()
    with TasksClient(transport.open(url), timeout_s=10.0) as client:
        wait_until(
            lambda: {row["name"] for row in client.aggregators()} == {"a"},
            timeout_s=10,
            what="b gone from the list once stopped",
        )


def test_a_clear_sent_again_to_the_other_replica_under_its_call_key_answers_true_a_new_one_401(
    rabbitmq_broker: Broker, tmp_path: Path, started: list[Process]
) -> None:
    # A client's clear answered by a whose reply went with a broker node goes again, marked
    # resent, and may reach b (SPEC 17): b knows from the cleared event which call buried it.
    url = rabbitmq_broker.url
    a, b = replica(url, tmp_path, "a"), replica(url, tmp_path, "b")
    started += [a, b]
    publisher = TaskPublisher(transport.open(url), "vdsm")
    bus = transport.open(url)
    try:
        task = publisher.create("copyImage", ["spm"])
        publisher.finish(task.id)
        publisher.flush(10.0)
        with TasksClient(transport.open(url), timeout_s=10.0) as client:
            queues = rpc_queues(client, "a", "b")

        def listed_by_both() -> bool:
            return all(task.id in answer(url, queues[name])["tasks"] for name in ("a", "b"))

        wait_until(listed_by_both, timeout_s=10, what="the task listed by both replicas")
        caller = RawCaller(bus)
        key = uuid.uuid4().hex
        params = {"taskID": task.id}
        assert caller.call(key, "Task.clear", params, rpc_queue=queues["a"])["result"] is True
        wait_until(lambda: task.id not in answer(url, queues["b"])["tasks"], timeout_s=CLEAR_WITHIN_S)
        again = caller.call(key, "Task.clear", params, resent=True, rpc_queue=queues["b"])
        assert again.get("result") is True, again
        other = caller.call(uuid.uuid4().hex, "Task.clear", params, rpc_queue=queues["b"])
        assert other["error"]["code"] == 401
    finally:
        bus.close()
        publisher.close()
