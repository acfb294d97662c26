"""Never dies on restart: SIGKILL of ``serve`` in every phase, each kill set off by what is observed.

The kills are triggered from outside, as an operator's supervisor would see the process: its
log lines (loading, loaded, ready), the broker's queue depth, an RPC answer, a subsystem's
log line. Each kill checks afterwards that it landed where it meant to (the next phase's line
was not logged, the backlog was not yet drained); a kill that came too late is tried again.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.brokers import Broker, admin_of
from support.processes import Process, start_serve
from support.streams import SUBSYSTEMS, expected_view, hurry, start_stream, visible

from bus_tasks import names, transport
from bus_tasks.client import TasksClient
from bus_tasks.core.view import Tombstone
from bus_tasks.errors import BusTasksError, UnknownTask
from bus_tasks.store.sqlite import SqliteStore
from bus_tasks.testing import wait_until
from bus_tasks.transport import Bus, BusOptions, TopologyOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

# These tests watch the depth of the aggregator's events queue (a backlog building, draining,
# held while the store fails): they run the queue layout (event_log = "queue"), every process
# of them; the stream layout's restarts and kills are test_replicas.py's and test_durability.py's.
QUEUE_LAYOUT = TopologyOptions(event_log="queue")


@pytest.fixture(autouse=True)
def queue_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_TASKS_EVENT_LOG", "queue")  # serve and the publisher processes


UPDATES = 3  # created + 3 updates + finished: 5 events per task
FILLER_TOMBSTONES = 300_000  # loading them takes about a second: a phase a kill can land in
POISON_EVENTS = 50
ATTEMPTS = 25  # tries per phase kill before the test gives up on hitting it


def _seed_filler(data_dir: Path) -> None:
    """Tombstones of long-gone tasks: they make loading the store take a while, list nothing."""
    store = SqliteStore(data_dir / "view.sqlite3")
    now = time.time()
    for _ in range(FILLER_TOMBSTONES):
        store.bury(str(uuid.uuid4()), Tombstone(subsystem="filler", seq=1, cleared_at=now))
    store.commit()
    store.close()


@dataclass
class Run:
    """One ``serve`` at a time on one data directory, with what its kills observed."""

    url: str
    data_dir: Path
    publishers: list[Process]
    serve: Process | None = None
    kills: list[str] = field(default_factory=list)
    probe: Bus = field(init=False)

    def __post_init__(self) -> None:
        self.probe = transport.open(self.url, BusOptions(confirm_publish=False, topology=QUEUE_LAYOUT))

    def start(self) -> Process:
        """``serve``, started now; not waiting for it to be ready."""
        self.serve = Process(
            [str(Path(sys.executable).parent / "bus-tasks"), "serve", "--broker", self.url,
             "--data-dir", str(self.data_dir)],
            env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO"},
        )  # fmt: skip
        return self.serve

    def depth(self) -> int:
        """Events ready in the aggregator's queue (unacked ones not counted)."""
        return admin_of(self.probe).queue_size(names.EVENTS_QUEUE)

    def depth_at_most(self, limit: int, *, timeout_s: float) -> int:
        """Poll the queue depth until it is ``limit`` or less; returns the depth seen."""
        deadline = time.monotonic() + timeout_s
        while (depth := self.depth()) > limit:
            assert time.monotonic() < deadline, f"queue depth still {depth} > {limit} after {timeout_s}s"
        return depth

    def publishing(self) -> bool:
        return all(p.popen.poll() is None and not _done(p) for p in self.publishers)

    def kill(self, phase: str, *, mid_stream: bool = True) -> None:
        assert self.serve is not None
        still_publishing = self.publishing()
        self.serve.kill()
        if mid_stream:
            assert still_publishing, f"the publishers had finished before the kill {phase!r} landed"
        self.kills.append(phase)

    def kill_on_line(self, text: str, not_yet: str, phase: str) -> int:
        """Start serve and kill it as soon as it logs ``text``, before it logs ``not_yet``.

        Returns the number of attempts it took.
        """
        for attempt in range(1, ATTEMPTS + 1):
            serve = self.start()
            serve.wait_for_line(text, timeout_s=60)
            self.kill(phase)
            if not any(not_yet in line for line in serve.lines):
                return attempt
        raise AssertionError(f"no kill landed {phase} in {ATTEMPTS} attempts")


class Pollers:
    """Clients that poll getAllTasksStatuses in threads of their own, as the engine does."""

    def __init__(self, url: str, *, count: int) -> None:
        self.answered = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(url,), daemon=True) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _poll(self, url: str) -> None:
        # While serve restarts, nothing consumes the RPC queue: these wait for it, as the engine would.
        with TasksClient(
            transport.open(url, BusOptions(topology=QUEUE_LAYOUT)), timeout_s=60, wait_for_aggregator=True
        ) as client:
            while not self._stop.is_set():
                try:
                    client.get_all_tasks_statuses()
                    self.answered += 1
                except BusTasksError as exc:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(70)


def _done(publisher: Process) -> bool:
    return any("events published and confirmed" in line for line in publisher.lines)


@contextmanager
def _stopping(run: Run) -> Iterator[None]:
    try:
        yield
    finally:
        for publisher in run.publishers:
            if publisher.popen.poll() is None:
                publisher.terminate()
        if run.serve is not None and run.serve.popen.poll() is None:
            run.serve.terminate()
        run.probe.close()


def _view(client: TasksClient) -> dict[str, dict[str, Any]]:
    return {i: visible(t) for i, t in client.get_all_tasks().items()}


def test_sigkill_of_serve_in_every_phase_while_publishers_publish_loses_and_resurrects_nothing(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    # 2,000 tasks per publisher (20,000 events in all), paced so that every kill lands mid-stream:
    # 100 s of stream leaves room for the seven phases (and their retries) on a loaded machine.
    tasks = 2000
    data_dir = tmp_path / "data"
    _seed_filler(data_dir)
    url = rabbitmq_broker.url
    run = Run(url, data_dir, publishers=[])
    cleared: set[str] = set()
    with _stopping(run):
        serve = run.start()
        serve.wait_for_line("aggregator ready", timeout_s=60)  # the queues exist from here
        run.publishers = [
            start_stream(url, name, tasks=tasks, updates=UPDATES, events_per_s=100, listen=True)
            for name in SUBSYSTEMS
        ]
        client = TasksClient(transport.open(url, BusOptions(topology=QUEUE_LAYOUT)), timeout_s=10)

        # 1. Mid-stream, once the view holds part of the stream.
        wait_until(lambda: len(client.get_all_tasks()) >= 200, timeout_s=60, what="200 tasks listed")
        run.kill("while publishers publish")

        # 2. While it loads its store (300,000 tombstones take about a second).
        run.kill_on_line("loading the view from", "loaded", "while loading the store")

        # 3. Between the store loaded and ready (declaring, binding, starting consumers).
        run.kill_on_line("loaded", "aggregator ready", "between store load and ready")

        # 4. In the middle of ingesting a backlog: let one build while serve is down.
        wait_until(lambda: run.depth() >= 2500, timeout_s=60, what="a backlog of 2,500 events")
        for _ in range(ATTEMPTS):
            backlog = run.depth()
            run.start().wait_for_line("aggregator ready", timeout_s=60)
            left = run.depth_at_most(backlog // 2, timeout_s=60)
            run.kill("in the middle of ingesting a backlog")
            if left > 0:
                break
            wait_until(lambda: run.depth() >= 2500, timeout_s=60, what="a backlog of 2,500 events")
        else:
            raise AssertionError("every backlog kill came after the backlog was drained")

        # 5. During a resync: the subsystems announce every task on the aggregator's request.
        for _ in range(ATTEMPTS):
            seen = [len(p.lines) for p in run.publishers]
            serve = run.start()
            serve.wait_for_line("aggregator ready", timeout_s=60)
            run.publishers[0].wait_for_line("resync requested", timeout_s=30, after=seen[0])
            announced = run.depth()
            run.kill("during a resync")
            if announced > 0:
                break
        else:
            raise AssertionError("every resync kill came after the announced events were taken")

        # 6. Right after an RPC clear answered true: the clear must survive the kill.
        run.start().wait_for_line("aggregator ready", timeout_s=60)
        finished = wait_until(
            lambda: [i for i, t in client.get_all_tasks().items() if t["state"] in ("finished", "failed")],
            timeout_s=60,
            what="a done task to clear",
        )
        assert client.clear_task(finished[0]) is True
        run.kill("right after an RPC clear")
        cleared.add(finished[0])

        # 7. Once more mid-stream, right after it is ready again.
        run.start().wait_for_line("aggregator ready", timeout_s=60)
        run.kill("right after ready, mid-stream")

        assert run.publishing(), "the stream ended before the last kill: pace it slower"
        assert len(run.kills) >= 7
        for publisher in run.publishers:
            hurry(publisher)  # every kill landed mid-stream: the rest need not be paced

        serve = run.start()
        serve.wait_for_line("aggregator ready", timeout_s=60)
        for publisher in run.publishers:
            publisher.wait_for_line("events published and confirmed", timeout_s=240)
        want = expected_view(tasks, cleared=cleared)
        wait_until(lambda: _view(client) == want, timeout_s=120, interval_s=0.5, what="the expected view")
        with pytest.raises(UnknownTask):
            client.get_task_status(finished[0])  # cleared stays cleared: nothing resurrected
        client.close()
        assert "Traceback" not in serve.log, serve.log
    assert all("Traceback" not in p.log for p in run.publishers)


def test_serve_restarted_under_a_backlog_of_tens_of_thousands_becomes_ready_and_ends_exact(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    tasks = 4000  # per publisher: 40,000 events in all
    url = rabbitmq_broker.url
    data_dir = tmp_path / "data"
    run = Run(url, data_dir, publishers=[])
    with _stopping(run):
        first = start_serve(url, data_dir)
        client = TasksClient(transport.open(url, BusOptions(topology=QUEUE_LAYOUT)), timeout_s=10)
        wait_until(lambda: client.get_all_tasks() == {}, timeout_s=10, what="an empty view")
        assert first.terminate() == 0, first.log

        run.publishers = [
            start_stream(url, name, tasks=tasks, updates=UPDATES, events_per_s=3000, listen=True)
            for name in SUBSYSTEMS
        ]
        # The engine keeps polling while serve is down: its requests wait in the RPC queue, and
        # with them poison events in the backlog; both make serve publish (replies, dead letters)
        # while it starts, which is where handlers used to run nested inside its own publish.
        pollers = Pollers(url, count=4)
        poison = transport.open(url, BusOptions(confirm_publish=True, topology=QUEUE_LAYOUT))
        for index in range(POISON_EVENTS):
            poison.publish(
                b"not json %d" % index, exchange=names.EVENTS_EXCHANGE, routing_key="task.vdsm.updated"
            )
        poison.flush(30)
        poison.close()
        wait_until(lambda: run.depth() >= 20_000, timeout_s=120, what="a backlog of 20,000 events")
        wait_until(
            lambda: admin_of(run.probe).queue_size(names.RPC_QUEUE) >= 4,
            timeout_s=30,
            what="requests waiting",
        )
        serve = run.start()
        serve.wait_for_line("aggregator ready", timeout_s=60)
        assert run.publishing(), "the publishers must still publish while serve starts"
        wait_until(lambda: pollers.answered >= 20, timeout_s=60, what="the waiting pollers answered")
        pollers.stop()
        assert pollers.failures == [], pollers.failures
        for publisher in run.publishers:
            publisher.wait_for_line("events published and confirmed", timeout_s=240)
        want = expected_view(tasks)
        wait_until(lambda: _view(client) == want, timeout_s=120, interval_s=0.5, what="the expected view")
        dead = 0
        while admin_of(run.probe).get(names.DEAD_QUEUE) is not None:
            dead += 1
        assert dead == POISON_EVENTS
        client.close()
        assert serve.terminate() == 0, serve.log
        assert "Traceback" not in serve.log, serve.log


def test_sigterm_while_serve_loads_its_store_stops_it_cleanly_before_it_serves(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    _seed_filler(data_dir)
    run = Run(rabbitmq_broker.url, data_dir, publishers=[])
    with _stopping(run):
        for _ in range(ATTEMPTS):
            serve = run.start()
            serve.wait_for_line("loading the view from", timeout_s=60)
            status = serve.terminate()
            if not any(
                "loaded" in line for line in serve.lines[: serve.wait_for_line("signal", timeout_s=5)]
            ):
                break  # the signal came while it was loading
        else:
            raise AssertionError(f"no SIGTERM landed while loading in {ATTEMPTS} attempts")
        assert status == 0, serve.log
        assert not any("aggregator ready" in line for line in serve.lines), serve.log
        assert "aggregator stopped" in serve.log
        assert "Traceback" not in serve.log, serve.log
        # It left the data directory usable: the next one loads it and serves.
        run.start().wait_for_line("aggregator ready", timeout_s=60)
