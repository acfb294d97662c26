"""Figure 1, ingest: events per second through the running aggregator, against a raw kombu consumer.

Measured on the default layout: the event log is a RabbitMQ stream (``bus_tasks.events.log``),
which every aggregator reads from its own offset. The stream is filled once with persistent
event messages (publisher-confirmed), and each repetition reads all of it from the first
offset, twice: once by a new aggregator (empty default store: validated, applied, stored,
acked after the store's commit, its revision reaching the end of the log), once by a raw kombu
consumer of the same stream from ``"first"``, with the same prefetch, that only acks each
message. A stream keeps what was read, so both sides read the very same messages. Both are
timed from their first event to their last (committed, or acked), so that starting up
(connecting, declaring, opening the store) is not counted as ingest on either side.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer

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
)
from bus_tasks import names, transport
from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.config import Settings
from bus_tasks.core.view import Entry, TaskView, Tombstone
from bus_tasks.store import NullStore, Store
from bus_tasks.testing import RunningAggregator
from bus_tasks.transport import BusOptions
from bus_tasks.transport.kombu.entities import queue as kombu_queue
from bus_tasks.transport.topology import event_log
from bus_tasks.workers import wiring

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
    return store, f"{type(store).__name__} (the default, from open_store, in a new temp dir)"


class CountingStore:
    """Passes everything to the real store; tells when the view's revision reaches ``end`` and
    that is committed (then acked)."""

    def __init__(self, inner: Store, revision: Callable[[], int], end: int) -> None:
        self.inner = inner
        self.done = threading.Event()
        self.first_at = 0.0  # the first event's put: the aggregator is running from here
        self.done_at = 0.0
        self._revision = revision
        self._end = end

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
        if not self.done.is_set() and self._revision() >= self._end:
            self.done_at = time.perf_counter()
            self.done.set()

    def close(self) -> None:
        self.inner.close()


def new_log(url: str) -> None:
    """An empty event log (the stream, as a deployment declares it): offsets start at 0 again."""
    with transport.open(url) as setup:
        setup.topology.declare_exchanges()
        admin = transport.admin(setup)
        assert admin is not None  # RabbitMQ's
        if admin.queue_exists(names.EVENT_LOG):
            admin.delete_queues([names.EVENT_LOG])
        setup.topology.declare_events()
        check(setup.topology.uses_stream, "the default event log is not a stream on RabbitMQ")


def fill(url: str, bodies: list[tuple[str, bytes]], *, settings: Settings | None = None) -> int:
    """Publish ``bodies`` as persistent messages to the events exchange, publisher-confirmed (so
    all are in the log on return); returns the log's end (its last offset + 1, a fresh log).

    ``settings``: publish as the process they describe (their broker, TLS login, identity)."""
    bus = (
        transport.open(url, BusOptions(confirm_publish=True))
        if settings is None
        else wiring.connect(settings, confirm_publish=True)
    )
    with bus as conn:
        for key, body in bodies:
            conn.publish(body, exchange=names.EVENTS_EXCHANGE, routing_key=key)
        conn.flush(timeout_s=120.0)
    return len(bodies)


def from_first() -> Queue:
    """The event log, read from its first offset (what a raw consumer of the stream asks)."""
    attributes = kombu_queue(event_log()).as_dict()
    attributes["consumer_arguments"] = {"x-stream-offset": "first"}
    return Queue(**attributes)


@dataclass(frozen=True, slots=True)
class Read:
    """One side's reading of the whole log: events/s, and when (``perf_counter``, the system's
    monotonic clock: comparable between processes) it read its first and its last."""

    per_s: float
    first_at: float
    done_at: float
    store: str = ""
    cpu_s: float = 0.0  # the reading process's CPU, start-up included (read by a :class:`Reader`)


def through_aggregator(
    url: str,
    end: int,
    prefetch: int,
    *,
    name: str = "",
    from_start: bool = False,
    settings: Settings | None = None,
) -> Read:
    """A new aggregator (empty default store) reads the log until its revision is ``end``.

    Timed from its first event to the commit that reaches ``end``; with ``from_start``, from
    before it is made (store opened, connected, declared: what a new replica takes to catch up).
    ``settings``: the aggregator of ``bus-tasks serve`` instead (``wiring.aggregator``: their
    broker, TLS login, identity, confirms, policy), whose prefetch must be ``prefetch``, run with
    serve's garbage collector thresholds (``wiring.serve_gc``, put back after).
    """
    with tempfile.TemporaryDirectory(prefix="bus_tasks_bench_") as data_dir:
        inner, described = default_store(Path(data_dir))
        aggregator: Aggregator
        store = CountingStore(inner, lambda: aggregator.view.revision, end)
        started_at = time.perf_counter()
        if settings is None:
            aggregator = Aggregator(
                transport.open(url),
                store=store,
                policy=AggregatorPolicy(prefetch_count=prefetch, name=name),
            )
        else:
            aggregator = wiring.aggregator(settings, store=store)
            check(aggregator.policy.prefetch_count == prefetch, "the prefetch differs from the raw side's")
        tuned = contextlib.nullcontext() if settings is None else wiring.serve_gc()
        with tuned, RunningAggregator(aggregator) as running:
            if not store.done.wait(DRAIN_TIMEOUT_S):
                raise TimeoutError(f"the aggregator reached revision {aggregator.view.revision} of {end}")
            counts = dict(running.counts)
            revision = running.view.revision
    check(revision == end, f"expected revision {end}, got {revision}")
    check(counts.get("events_applied") == end, f"expected {end} events applied, got {counts}")
    first_at = started_at if from_start else store.first_at
    return Read(rate(end, store.done_at - first_at), first_at, store.done_at, described)


def through_raw_consumer(
    url: str,
    end: int,
    prefetch: int,
    *,
    from_start: bool = False,
    settings: Settings | None = None,
    ack_batch: int = 1,
) -> Read:
    """A kombu consumer of the log from ``"first"`` that acks each message and does nothing else.

    Timed from its first message to its last ack; with ``from_start``, from before it connects.
    ``settings``: connect with their TLS files and login method to their broker, declaring
    nothing where the topology is predeclared (a least-privilege user may not). ``ack_batch``:
    ack every so many messages at once (``multiple=True``), and the last.
    """
    acked = 0
    first_at = 0.0
    last_offset = -1
    done = threading.Event()

    def on_message(message: Message) -> None:
        nonlocal acked, first_at, last_offset
        if not first_at:
            first_at = time.perf_counter()
        acked += 1
        if acked % ack_batch == 0 or acked >= end:
            message.ack(multiple=ack_batch > 1)
        if acked >= end:
            last_offset = int(message.headers[names.HEADER_STREAM_OFFSET])
            done.set()

    options: dict[str, Any] = {}
    declare = True
    if settings is not None:
        url = settings.broker
        login = settings.broker_login
        tls = login.ssl_options()
        options = {"login_method": login.method, **({"ssl": tls} if tls is not None else {})}
        declare = not wiring.topology_options(settings).predeclared
    started_at = time.perf_counter()
    with Connection(url, **options) as conn:
        channel = conn.channel()
        with Consumer(
            channel, [from_first()], on_message=on_message, prefetch_count=prefetch, auto_declare=declare
        ):
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while not done.is_set():
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the raw consumer acked {acked} of {end} events")
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=1.0)
            done_at = time.perf_counter()
    check(last_offset == end - 1, f"the raw consumer's last offset is {last_offset}, not {end - 1}")
    if from_start:
        first_at = started_at
    return Read(rate(end, done_at - first_at), first_at, done_at)


@dataclass(frozen=True, slots=True)
class Job:
    """One reading of the log by a :class:`Reader`: to ``end``, made at ``start_at``
    (``perf_counter``, system-wide), timed from its making with ``from_start``."""

    end: int
    prefetch: int
    name: str = ""
    from_start: bool = False
    start_at: float = 0.0

    def wait(self) -> None:
        time.sleep(max(0.0, self.start_at - time.perf_counter()))


class Reader:
    """A process that reads the log, as an aggregator or as a raw consumer (see ``Child``)."""

    def aggregator(self, url: str, job: Job) -> Read:
        job.wait()
        cpu_at = time.process_time()
        read = through_aggregator(url, job.end, job.prefetch, name=job.name, from_start=job.from_start)
        return replace(read, cpu_s=time.process_time() - cpu_at)

    def raw(self, url: str, job: Job) -> Read:
        job.wait()
        cpu_at = time.process_time()
        read = through_raw_consumer(url, job.end, job.prefetch, from_start=job.from_start)
        return replace(read, cpu_s=time.process_time() - cpu_at)


def run(quick: bool) -> list[Figure]:
    n_tasks, reps = TASKS.pick(quick), REPS.pick(quick)
    prefetch = AggregatorPolicy().prefetch_count
    store_note = ""
    with rabbitmq_vhost("ingest") as url:
        new_log(url)
        count = fill(url, list(workload.bodies(n_tasks)))

        def ours() -> float:
            nonlocal store_note
            read = through_aggregator(url, count, prefetch)
            store_note = read.store
            return read.per_s

        def baseline() -> float:
            return through_raw_consumer(url, count, prefetch).per_s

        speed = side_by_side(ours, baseline, reps)
    say(f"  ingest: ours {median(speed.ours):,.0f} ev/s, raw {median(speed.baseline):,.0f} ev/s")
    return [
        Figure(
            "ingest",
            fmt_rate(median(speed.ours), "ev"),
            fmt_rate(median(speed.baseline), "ev"),
            speed.ratio,
            at_least(1.0),  # we ack and store in batches: not slower than the simplest consumer
            f"{count:,} events ({n_tasks:,} tasks), prefetch {prefetch}, {reps} reps",
            note=(
                f"on the stream {names.EVENT_LOG} from the first offset: a new aggregator with"
                f" {store_note} vs a raw kombu consumer of the same stream; {speed.spread()}"
            ),
        )
    ]
