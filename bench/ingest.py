"""Figure 1, ingest: events per second through the running aggregator, against a raw kombu consumer.

Each repetition publishes the same persistent event messages to the aggregator's durable queue,
twice: once drained by the aggregator (validated, applied, stored in its default store, acked
after the store's commit), once by a raw kombu consumer that only acks, with the same prefetch.
Both are timed from their first event to their last (committed, or acked), so that starting up
(connecting, declaring, opening the store) is not counted as ingest on either side.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kombu.connection import Connection
from kombu.message import Message
from kombu.messaging import Consumer, Producer

from bench import workload
from bench.harness import (
    Figure,
    Sizes,
    at_least,
    check,
    fmt_rate,
    median,
    rabbitmq_vhost,
    rate,
    say,
    side_by_side,
    wait_for,
)
from bus_tasks import names
from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.config import Settings
from bus_tasks.core.view import Entry, TaskView, Tombstone
from bus_tasks.store import NullStore, Store
from bus_tasks.testing import RunningAggregator
from bus_tasks.transport import BusConnection
from bus_tasks.transport.topology import events_queue

TASKS = Sizes(full=4_000, quick=300)  # three events each
REPS = Sizes(full=9, quick=2)  # the most load-sensitive figure: 5 gave medians 0.78..0.98
DRAIN_TIMEOUT_S = 180.0


def default_store(data_dir: Path) -> tuple[Store, str]:
    """The store a deployed aggregator gets by default (``open_store``), if this bus_tasks has one."""
    import bus_tasks.store

    open_store = getattr(bus_tasks.store, "open_store", None)
    if open_store is None:
        return NullStore(), "NullStore: bus_tasks.store.open_store does not exist yet"
    settings = Settings(data_dir=data_dir)
    store = open_store(settings)
    return store, f"{type(store).__name__} (the default, from open_store)"


class CountingStore:
    """Passes everything to the real store; tells when ``expected`` events are committed (then acked)."""

    def __init__(self, inner: Store, processed: Callable[[], int], expected: int) -> None:
        self.inner = inner
        self.done = threading.Event()
        self.first_at = 0.0  # the first event's put: the aggregator is running from here
        self.done_at = 0.0
        self._processed = processed
        self._expected = expected

    def __str__(self) -> str:
        return str(self.inner)

    def load(self, view: TaskView) -> int:
        return self.inner.load(view)

    def put(self, entry: Entry) -> None:
        if not self.first_at:
            self.first_at = time.perf_counter()
        self.inner.put(entry)

    def bury(self, task_id: str, tombstone: Tombstone) -> None:
        self.inner.bury(task_id, tombstone)

    def forget(self, task_id: str) -> None:
        self.inner.forget(task_id)

    def mark(self, revision: int) -> None:
        self.inner.mark(revision)

    def commit(self) -> None:
        self.inner.commit()
        if not self.done.is_set() and self._processed() >= self._expected:
            self.done_at = time.perf_counter()
            self.done.set()

    def close(self) -> None:
        self.inner.close()


def fill(url: str, bodies: list[tuple[str, bytes]]) -> None:
    """Publish ``bodies`` as persistent messages to the events exchange; wait until all are queued."""
    with Connection(url) as conn:
        producer = Producer(conn.channel())
        for key, body in bodies:
            producer.publish(
                body,
                exchange=names.EVENTS_EXCHANGE,
                routing_key=key,
                content_type=names.CONTENT_TYPE,
                content_encoding="utf-8",
                delivery_mode=2,
            )
        queue = events_queue().bind(conn.default_channel)
        wait_for(
            lambda: queue.queue_declare(passive=True).message_count >= len(bodies),
            timeout_s=60.0,
            what=f"{len(bodies)} events queued",
        )


def queued(url: str) -> int:
    with Connection(url) as conn:
        return int(events_queue().bind(conn.default_channel).queue_declare(passive=True).message_count)


def through_aggregator(url: str, count: int, prefetch: int) -> tuple[float, str]:
    """Events per second through a fresh aggregator with its default store; and what that store is."""
    with tempfile.TemporaryDirectory(prefix="bus_tasks_bench_") as data_dir:
        inner, described = default_store(Path(data_dir))
        aggregator: Aggregator

        def processed() -> int:
            counts = aggregator.counts
            return sum(counts[k] for k in ("events_applied", "events_stale", "events_cleared", "events_dead"))

        store = CountingStore(inner, processed, count)
        aggregator = Aggregator(
            BusConnection(url), store=store, policy=AggregatorPolicy(prefetch_count=prefetch)
        )
        with RunningAggregator(aggregator) as running:
            if not store.done.wait(DRAIN_TIMEOUT_S):
                raise TimeoutError(f"the aggregator processed {processed()} of {count} events")
            seconds = store.done_at - store.first_at
            counts = dict(running.counts)
    check(counts.get("events_applied") == count, f"expected {count} events applied, got {counts}")
    return rate(count, seconds), described


def through_raw_consumer(url: str, count: int, prefetch: int) -> float:
    """Events per second through a kombu consumer that acks each message and does nothing else."""
    acked = 0
    first_at = 0.0
    done = threading.Event()

    def on_message(message: Message) -> None:
        nonlocal acked, first_at
        if not first_at:
            first_at = time.perf_counter()
        message.ack()
        acked += 1
        if acked >= count:
            done.set()

    with Connection(url) as conn:
        channel = conn.channel()
        with Consumer(channel, [events_queue()], on_message=on_message, prefetch_count=prefetch):
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while not done.is_set():
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the raw consumer acked {acked} of {count} events")
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=1.0)
            seconds = time.perf_counter() - first_at
    return rate(count, seconds)


def run(quick: bool) -> list[Figure]:
    n_tasks, reps = TASKS.pick(quick), REPS.pick(quick)
    count = 3 * n_tasks
    prefetch = AggregatorPolicy().prefetch_count
    store_note = ""
    with rabbitmq_vhost("ingest") as url:
        with BusConnection(url) as setup:
            setup.declare_exchanges()
            setup.declare_queue(names.EVENTS_QUEUE)
        salt = 0

        def fresh_bodies() -> list[tuple[str, bytes]]:
            # New task ids every run, so that no run sees another run's tasks.
            nonlocal salt
            salt += 1
            return list(workload.bodies(n_tasks, salt=salt))

        def ours() -> float:
            nonlocal store_note
            fill(url, fresh_bodies())
            per_s, store_note = through_aggregator(url, count, prefetch)
            return per_s

        def baseline() -> float:
            fill(url, fresh_bodies())
            return through_raw_consumer(url, count, prefetch)

        speed = side_by_side(ours, baseline, reps)
        left = queued(url)
        check(left == 0, f"{left} events left in the queue after the runs")
    say(f"  ingest: ours {median(speed.ours):,.0f} ev/s, raw {median(speed.baseline):,.0f} ev/s")
    return [
        Figure(
            "ingest",
            fmt_rate(median(speed.ours), "ev"),
            fmt_rate(median(speed.baseline), "ev"),
            speed.ratio,
            at_least(0.8),
            f"{count:,} events ({n_tasks:,} tasks), prefetch {prefetch}, {reps} reps",
            note=f"aggregator on RabbitMQ with {store_note} vs raw kombu consumer; {speed.spread()}",
        )
    ]
