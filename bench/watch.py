"""Figure 9, watch: the change feed (docs/watching.md), on the default layout (the event log is the
RabbitMQ stream ``bus_tasks.events.log``); every aggregator runs in a process of its own (``spawn``)
with the default store (SQLite in a temp dir), as it is deployed.

- **watch latency**: one aggregator serves in a child process. In this process, one
  :class:`~bus_tasks.subsystem.publisher.TaskPublisher` (its own connection, no confirms, as a
  subsystem publishes) changes one task at a time (its ``message``, a new marker each time), paced
  every ``INTERVAL_S``, while a watcher (``TasksClient(transport.open(url)).watch()``, iterated in
  a thread of this process) waits for the ``changed`` event carrying that marker. Latency is from
  just before ``update()`` to when the watch yields that event: one ``perf_counter`` measures both
  ends. The path is two hops: event -> stream -> aggregator (applied) -> feed exchange -> watch
  queue -> watcher. Baseline, the same pacing and body size (the event's), measured the same way
  in the same process: raw kombu publishes one persistent message through a direct exchange to a
  durable classic queue, and a kombu consumer of that queue (a thread) receives it. Repetitions
  alternate the sides; p50 and p99 are over every sample of a side, the ratio is the median of the
  per-repetition ratios of p50. Target: <= 1.5. Two controls without target, in the note, taken
  in the same rotation: the same raw publish to a stream of its own and a raw consumer of it
  (offset ``next``), what the first hop costs by itself through a stream rather than a classic
  queue; and the watch's two hops in raw kombu, publish to a stream, a relay in a child process
  that consumes it and republishes each body (transient) to a queue, and that queue's consumer:
  the floor of the path, with nothing done at either end or in between.
- **ingest with watchers**: events/s of a new aggregator (a child process, empty default store)
  reading the whole event log from the first offset (filled once, publisher-confirmed, as figure
  1 does: ``bench.ingest.through_aggregator``) while ``WATCHERS`` watchers are connected: each
  its own connection, a watch queue declared with ``declare_watch_queue()`` (bound to the change
  exchange) and consumed in a thread of one other child process, each feed message decoded and
  applied to a :class:`~bus_tasks.watching.WatchState` (what ``Watch`` does with it); every watcher
  must see every change (each event applied is one). Against the same aggregator reading the same
  log with no watcher connected (the watchers' process idle). Target: >= 0.8.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.messaging import Consumer, Producer

from bench import workload
from bench.harness import (
    Child,
    Figure,
    SideBySide,
    Sizes,
    at_least,
    at_most,
    check,
    fmt_rate,
    fmt_time,
    median,
    rabbitmq_vhost,
    say,
    side_by_side,
    wait_for,
)
from bench.ingest import Read, default_store, fill, new_log, through_aggregator
from bus_tasks import codec, names, transport
from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.client import TasksClient
from bus_tasks.core.model import Event
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator
from bus_tasks.transport import Delivery
from bus_tasks.watching import NeedFailover, NeedReplay, WatchState

SAMPLES = Sizes(full=250, quick=30)  # per side and repetition
LATENCY_REPS = Sizes(full=5, quick=1)
WARMUP = 20  # samples of each side before the repetitions, not counted
INTERVAL_S = 0.02  # one update every 20 ms (or once the previous one arrived, if later)
SAMPLE_TIMEOUT_S = 10.0

TASKS = Sizes(full=4_000, quick=300)  # three events each, as figure 1
INGEST_REPS = Sizes(full=7, quick=2)
WATCHERS = 50
CATCH_UP_TIMEOUT_S = 120.0  # for the watchers to have every change, once the aggregator did

RAW_EXCHANGE = "bench.watch.raw"


# -- watch latency ----------------------------------------------------------------------------


class Served:
    """In a child process: one aggregator (default store, temp dir) serving until :meth:`stop`."""

    def __init__(self, url: str, name: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bus_tasks_bench_")
        store, self.described = default_store(Path(self._dir.name))
        self.aggregator = Aggregator(transport.open(url), store=store, policy=AggregatorPolicy(name=name))
        self._running = RunningAggregator(self.aggregator)
        self._running.__enter__()

    def store(self) -> str:
        return self.described

    def stop(self) -> dict[str, int]:
        try:
            self._running.__exit__(None, None, None)
        finally:
            self._dir.cleanup()
        return dict(self.aggregator.counts)


class Arrivals:
    """What the receiving side saw: (``perf_counter``, marker), in arrival order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[float, str]] = queue.Queue()

    def put(self, marker: str) -> None:
        self._queue.put((time.perf_counter(), marker))

    def wait(self, marker: str) -> float:
        """When ``marker`` arrived (earlier markers, all late or warm-up, are passed over)."""
        deadline = time.monotonic() + SAMPLE_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            try:
                at, seen = self._queue.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise TimeoutError(f"{marker!r} not received within {SAMPLE_TIMEOUT_S:g}s") from None
            if seen == marker:
                return at


@dataclass
class Side:
    """One side of the latency figure: ``send(marker)`` publishes, ``arrivals`` sees it arrive."""

    name: str
    send: Callable[[str], None]
    arrivals: Arrivals
    samples: list[float] = field(default_factory=list)
    sends: list[float] = field(default_factory=list)  # how long ``send`` itself took
    _count: int = 0

    def measure(self, count: int, *, keep: bool = True) -> float:
        """``count`` paced samples; returns their median latency (seconds)."""
        latencies: list[float] = []
        sends: list[float] = []
        next_at = time.perf_counter()
        for _ in range(count):
            time.sleep(max(0.0, next_at - time.perf_counter()))
            self._count += 1
            marker = f"{self.name} {self._count}"
            sent_at = time.perf_counter()
            self.send(marker)
            sends.append(time.perf_counter() - sent_at)
            latencies.append(self.arrivals.wait(marker) - sent_at)
            next_at = max(next_at + INTERVAL_S, time.perf_counter())
        if keep:
            self.samples.extend(latencies)
            self.sends.extend(sends)
        return median(latencies)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Watcher:
    """A real watch (``TasksClient.watch()``) iterated in a thread; its ``changed`` events' markers."""

    def __init__(self, url: str) -> None:
        self.arrivals = Arrivals()
        self.client = TasksClient(transport.open(url))
        self.watch = self.client.watch()
        self.listed = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()
        if not self.listed.wait(30.0):
            raise TimeoutError(f"the watcher had no listing within 30s ({self.error!r})")

    def _run(self) -> None:
        try:
            for event in self.watch:
                if event.kind == "listing":
                    self.listed.set()
                elif event.kind == "changed" and event.task is not None:
                    self.arrivals.put(str(event.task["message"]))
        except BaseException as exc:
            self.error = exc
            self.listed.set()

    def close(self) -> None:
        self.watch.close()
        self._thread.join(5.0)
        self.client.close()
        check(self.error is None, f"the watcher died: {self.error!r}")


class RawPath:
    """A raw kombu consumer (a thread, its own connection) of ``queue`` and a raw producer to it."""

    def __init__(
        self, url: str, entity: Queue, *, prefetch: int | None = None, send_key: str | None = None
    ) -> None:
        """``send_key``: publish with this routing key (a relay's input) instead of ``entity``'s."""
        self.arrivals = Arrivals()
        self.entity = entity
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._consumer_conn = Connection(url)
        self._thread = threading.Thread(target=self._consume, args=(prefetch,), name="raw", daemon=True)
        self._thread.start()
        if not self._ready.wait(30.0):
            raise TimeoutError("the raw consumer did not start within 30s")
        check(self.error is None, f"the raw consumer failed: {self.error!r}")
        self._producer_conn = Connection(url)
        self._producer = Producer(self._producer_conn.channel())
        self._exchange = entity.exchange
        self._routing_key = send_key if send_key is not None else entity.routing_key

    def _consume(self, prefetch: int | None) -> None:
        def on_message(message: Message) -> None:
            self.arrivals.put(str(codec.loads(message.body)["m"]))
            message.ack()

        try:
            with Consumer(
                self._consumer_conn.channel(), [self.entity], on_message=on_message, prefetch_count=prefetch
            ):
                self._ready.set()
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError, socket.timeout):
                        self._consumer_conn.drain_events(timeout=0.2)
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def sender(self, size: int) -> Callable[[str], None]:
        """Publishes a persistent JSON body of ``size`` bytes carrying the marker."""

        def send(marker: str) -> None:
            head = codec.dumps({"m": marker, "pad": ""})
            body = codec.dumps({"m": marker, "pad": "x" * max(0, size - len(head))})
            self._producer.publish(
                body,
                exchange=self._exchange,
                routing_key=self._routing_key,
                content_type="application/json",
                content_encoding="binary",
                delivery_mode=2,
            )

        return send

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._producer_conn.release()
        self._consumer_conn.release()
        check(self.error is None, f"the raw consumer failed: {self.error!r}")


def raw_queue() -> Queue:
    exchange = Exchange(RAW_EXCHANGE, type="direct", durable=True)
    return Queue("bench.watch.raw.queue", exchange, routing_key="queue", durable=True)


def raw_stream(name: str = "stream") -> Queue:
    exchange = Exchange(RAW_EXCHANGE, type="direct", durable=True)
    return Queue(
        f"bench.watch.raw.{name}",
        exchange,
        routing_key=name,
        durable=True,
        queue_arguments={"x-queue-type": "stream"},
        consumer_arguments={"x-stream-offset": "next"},
    )


def relayed_queue() -> Queue:
    """Where :class:`Relay` republishes: a transient queue, as a watch queue is."""
    exchange = Exchange(RAW_EXCHANGE, type="direct", durable=True)
    return Queue("bench.watch.raw.relayed", exchange, routing_key="relayed", durable=False, auto_delete=True)


class Relay:
    """In a child process: raw kombu reads its own stream and republishes each body (transient)
    to :func:`relayed_queue`: the two hops of the watch path, with nothing done in between."""

    def __init__(self, url: str) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._conn = Connection(url)
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(30.0):
            raise TimeoutError("the relay did not start within 30s")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            out = relayed_queue()
            producer = Producer(self._conn.channel())
            out.bind(producer.channel).declare()

            def on_message(message: Message) -> None:
                producer.publish(
                    message.body,
                    exchange=out.exchange,
                    routing_key=out.routing_key,
                    content_type="application/json",
                    content_encoding="binary",
                    delivery_mode=1,
                )
                message.ack()

            with Consumer(
                self._conn.channel(), [raw_stream("relay")], on_message=on_message, prefetch_count=64
            ):
                self._ready.set()
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError, socket.timeout):
                        self._conn.drain_events(timeout=0.2)
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._conn.release()
        if self.error is not None:
            raise self.error


@dataclass(frozen=True, slots=True)
class Latency:
    ours: SideBySide  # per-repetition p50s
    ours_samples: list[float]
    ours_sends: list[float]  # TaskPublisher.update() itself
    baseline_samples: list[float]
    stream_samples: list[float]
    stream_ratio: float
    relay_samples: list[float]
    relay_ratio: float  # ours' p50 over the raw relay's (median over repetitions)
    body_bytes: int
    store: str


def measure_latency(url: str, samples: int, reps: int) -> Latency:
    new_log(url)
    with (
        Child(Served, url, "bench-watch") as served,
        Child(Relay, url) as relay,
        contextlib.ExitStack() as stack,
    ):
        store = served.call("store")
        publisher = TaskPublisher(transport.open(url), workload.SUBSYSTEM)
        stack.callback(publisher.close)
        watcher = Watcher(url)
        stack.callback(watcher.close)
        record = publisher.create("createVolume", ("spm",), state="running", message="warm-up")
        watcher.arrivals.wait("warm-up")
        task_id = record.id

        def update(marker: str) -> None:
            publisher.update(task_id, message=marker)

        ours = Side("watch", update, watcher.arrivals)
        sample = Event(
            event="updated", seq=1, task=publisher.get(task_id).model_copy(update={"message": "watch 1"})
        )
        body_bytes = len(sample.model_dump_json(by_alias=True).encode())
        plain = RawPath(url, raw_queue())
        stack.callback(plain.close)
        baseline = Side("queue", plain.sender(body_bytes), plain.arrivals)
        streamed = RawPath(url, raw_stream(), prefetch=64)
        stack.callback(streamed.close)
        stream = Side("stream", streamed.sender(body_bytes), streamed.arrivals)
        relayed = RawPath(url, relayed_queue(), send_key="relay")
        stack.callback(relayed.close)
        two_hops = Side("relay", relayed.sender(body_bytes), relayed.arrivals)
        order = [ours, baseline, stream, two_hops]
        for side in order:
            side.measure(WARMUP, keep=False)

        p50s: dict[str, list[float]] = {side.name: [] for side in order}
        for rep in range(reps):
            for side in order[rep % len(order) :] + order[: rep % len(order)]:
                p50s[side.name].append(side.measure(samples))
        stack.close()  # the watcher first: an aggregator that stops sends it looking for another
        counts = served.call("stop")
        relay.call("stop")
    check(counts.get("events_applied", 0) >= samples * reps, f"the aggregator applied too few: {counts}")

    def ratio(a: str, b: str) -> float:
        return median([x / y for x, y in zip(p50s[a], p50s[b], strict=True)])

    return Latency(
        SideBySide(p50s["watch"], p50s["queue"]),
        ours.samples,
        ours.sends,
        baseline.samples,
        stream.samples,
        ratio("stream", "queue"),
        two_hops.samples,
        ratio("watch", "relay"),
        body_bytes,
        store,
    )


# -- ingest with watchers ---------------------------------------------------------------------


class Follower:
    """One watcher of the ingest figure: its own connection and watch queue, in a thread."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        self.state = WatchState()
        self.url = url
        self.changes = 0  # of the aggregator followed now
        self.messages = 0
        self.gaps = 0  # feed messages lost (must stay 0)
        self.bound = threading.Event()
        self.error: BaseException | None = None
        self.done_at = 0.0  # perf_counter when ``changes`` reached ``expect``
        self.expect = 0
        self._stop = stop
        self.thread = threading.Thread(target=self._run, name="follower", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with transport.open(self.url) as conn:
                conn.consume(conn.topology.declare_watch_queue(), self._on_feed, no_ack=True)
                self.bound.set()
                while not self._stop.is_set():
                    conn.drain(0.2)
        except BaseException as exc:
            self.error = exc
            self.bound.set()

    def _on_feed(self, delivery: Delivery) -> None:
        message = codec.loads(delivery.body)
        self.messages += 1
        following = self.state.following
        if following is None or following.instance != message.get("instance"):
            # A new aggregator: follow it from its first message, as a listing at ``after`` would.
            head = {key: message[key] for key in ("aggregator", "instance", "log", "rpcQueue", "beatS")}
            self.state.on_listing({**head, "revision": message["after"], "tasks": {}})
            self.changes = 0
        try:
            events = self.state.on_feed(message)
        except NeedReplay:
            self.gaps += 1
            self.state.following = None
            return
        except NeedFailover:
            events = []
        self.changes += sum(1 for e in events if e.kind == "changed")
        if self.expect and self.changes >= self.expect and not self.done_at:
            self.done_at = time.perf_counter()


class Watchers:
    """A child process holding ``count`` followers (see :class:`Child`) while they are open."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._followers: list[Follower] = []

    def open(self, url: str, count: int, expect: int) -> None:
        self._cpu_at = time.process_time()
        self._stop = threading.Event()
        self._followers = [Follower(url, self._stop) for _ in range(count)]
        for follower in self._followers:
            follower.expect = expect
            if not follower.bound.wait(30.0):
                raise TimeoutError("a watcher was not bound within 30s")
            if follower.error is not None:
                raise follower.error

    def caught_up(self) -> bool:
        return all(f.done_at for f in self._followers)

    def close(self) -> dict[str, Any]:
        """Stop every follower; what they saw."""
        self._stop.set()
        for follower in self._followers:
            follower.thread.join(5.0)
        errors = [repr(f.error) for f in self._followers if f.error is not None]
        seen = {
            "changes": [f.changes for f in self._followers],
            "messages": [f.messages for f in self._followers],
            "gaps": sum(f.gaps for f in self._followers),
            "last_done_at": max((f.done_at for f in self._followers), default=0.0),
            "errors": errors,
            "cpu_s": time.process_time() - self._cpu_at,  # this process's, since open
        }
        self._followers = []
        return seen


class Reader:
    """A child process that reads the log as a new aggregator (``through_aggregator``)."""

    def aggregator(self, url: str, end: int, prefetch: int) -> tuple[Read, float]:
        """The reading, and the CPU seconds this process spent on it (start-up included)."""
        cpu_at = time.process_time()
        read = through_aggregator(url, end, prefetch, name=f"bench-{uuid.uuid4().hex[:6]}")
        return read, time.process_time() - cpu_at


@dataclass(frozen=True, slots=True)
class Ingest:
    speed: SideBySide
    events: int
    prefetch: int
    messages: int  # feed messages each watcher got in one reading (median)
    lag_s: float  # after the aggregator's last commit, until the last watcher had every change
    watchers_cpu_s: float  # CPU of the watchers' process for one reading (median)
    aggregator_cpu_s: float  # CPU of the aggregator's process for one reading with them (median)
    store: str


def measure_ingest(url: str, n_tasks: int, reps: int) -> Ingest:
    prefetch = AggregatorPolicy().prefetch_count
    messages: list[int] = []
    lags: list[float] = []
    watchers_cpu: list[float] = []
    aggregator_cpu: list[float] = []
    store = ""
    with Child(Reader) as reader, Child(Watchers) as watchers:
        new_log(url)
        end = fill(url, list(workload.bodies(n_tasks)))

        def watched() -> float:
            nonlocal store
            watchers.call("open", url, WATCHERS, end)
            try:
                read, cpu_s = reader.call("aggregator", url, end, prefetch)
                wait_for(
                    lambda: bool(watchers.call("caught_up")),
                    timeout_s=CATCH_UP_TIMEOUT_S,
                    what=f"{WATCHERS} watchers seeing all {end} changes",
                )
            finally:
                seen = watchers.call("close")
            check(not seen["errors"], f"watchers failed: {seen['errors']}")
            check(seen["gaps"] == 0, f"watchers lost {seen['gaps']} feed messages")
            check(
                all(count == end for count in seen["changes"]),
                f"watchers saw {sorted(set(seen['changes']))} changes, not {end} each",
            )
            messages.append(int(median([float(m) for m in seen["messages"]])))
            lags.append(max(0.0, seen["last_done_at"] - read.done_at))
            watchers_cpu.append(float(seen["cpu_s"]))
            aggregator_cpu.append(cpu_s)
            store = read.store
            return float(read.per_s)

        def alone() -> float:
            read, _ = reader.call("aggregator", url, end, prefetch)
            return float(read.per_s)

        speed = side_by_side(watched, alone, reps)
    return Ingest(
        speed,
        end,
        prefetch,
        int(median([float(m) for m in messages])),
        median(lags),
        median(watchers_cpu),
        median(aggregator_cpu),
        store,
    )


# -- the figures ------------------------------------------------------------------------------


def run(quick: bool) -> list[Figure]:
    samples, latency_reps = SAMPLES.pick(quick), LATENCY_REPS.pick(quick)
    with rabbitmq_vhost("watch") as url:
        latency = measure_latency(url, samples, latency_reps)
    with rabbitmq_vhost("watch_ingest") as url:
        ingest = measure_ingest(url, TASKS.pick(quick), INGEST_REPS.pick(quick))

    def p(values: list[float]) -> str:
        return f"p50 {fmt_time(median(values))}, p99 {fmt_time(percentile(values, 0.99))}"

    say(
        f"  watch latency: ours {p(latency.ours_samples)}; raw queue {p(latency.baseline_samples)};"
        f" raw stream {p(latency.stream_samples)}"
    )
    say(
        f"  ingest: with {WATCHERS} watchers {median(ingest.speed.ours):,.0f} ev/s,"
        f" none {median(ingest.speed.baseline):,.0f} ev/s"
    )
    return [
        Figure(
            "watch latency",
            p(latency.ours_samples),
            p(latency.baseline_samples),
            latency.ours.ratio,
            at_most(1.5),
            f"{len(latency.ours_samples)} samples a side ({latency_reps} reps of {samples}),"
            f" every {INTERVAL_S * 1e3:g} ms, {latency.body_bytes} B bodies",
            note=(
                "from just before TaskPublisher.update() to the changed event out of"
                " TasksClient.watch() (event -> stream -> aggregator in its own process, "
                f"{latency.store} -> feed -> watcher) vs raw kombu publish -> durable classic queue"
                f" -> consumer; update() itself took p50 {fmt_time(median(latency.ours_sends))};"
                f" ratio of p50s, {latency.ours.spread()}; control, raw publish ->"
                f" stream -> consumer: {p(latency.stream_samples)}, {latency.stream_ratio:.3g}x the"
                " queue's p50; control, the same two hops in raw kombu (stream -> a relay process"
                f" that republishes -> transient queue -> consumer): {p(latency.relay_samples)}, ours"
                f" {latency.relay_ratio:.3g}x its p50"
            ),
        ),
        Figure(
            "ingest with watchers",
            fmt_rate(median(ingest.speed.ours), "ev"),
            fmt_rate(median(ingest.speed.baseline), "ev"),
            ingest.speed.ratio,
            at_least(0.8),
            f"{ingest.events:,} events, {WATCHERS} watchers, prefetch {ingest.prefetch},"
            f" {INGEST_REPS.pick(quick)} reps",
            note=(
                f"a new aggregator ({ingest.store}) reading {names.EVENT_LOG} from the first offset"
                f" with {WATCHERS} watch queues bound and consumed (one connection each, threads of"
                " one other process, every feed message decoded into a WatchState, every change"
                f" seen by every watcher) vs none; each watcher got {ingest.messages:,} feed"
                f" messages for the {ingest.events:,} events of a reading, the last had every"
                f" change {fmt_time(ingest.lag_s)} after the aggregator's last commit (median);"
                f" the watchers' process used {ingest.watchers_cpu_s:.2g} s of CPU a reading, the"
                f" aggregator's {ingest.aggregator_cpu_s:.2g} s; {ingest.speed.spread()}"
            ),
        ),
    ]
