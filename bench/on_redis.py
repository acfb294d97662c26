"""Figure ``redis``: the Redis transport, each figure against raw kombu on the same Redis.

Everything runs on a Redis database of its own (:func:`bench.harness.redis_db`), with kombu's
defaults for the raw side (ack emulation on: a raw consumer acks each message, as a Celery
worker on Redis does).

- **redis ingest**: events/s of a new aggregator (empty default store, SQLite in a temp dir)
  reading its events queue, pre-filled with the same persistent events before each side (a
  server-side ``COPY`` of a list filled once through the events exchange); timed from its first
  event to the commit that brings its revision to the last. Against a raw kombu ``Consumer`` of
  the same queue, same prefetch, acking each message, from its first message to its last ack.
- **redis getStatus**: ``TasksClient.get_task_status()`` round trip to an aggregator in another
  process, against a raw kombu request/reply echo (a thread of the same process) answering the
  same reply bytes, blocks of calls alternated.
- **redis getAllTasks**: ``TasksClient.get_all_tasks()`` at 1,000 tasks, each call after a
  change of the view (no cached answer), against the same echo answering a reply of the same
  size, decoded the same way.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import redis
from kombu.connection import Connection
from kombu.message import Message
from kombu.messaging import Consumer

from bench import workload
from bench.harness import (
    Child,
    Figure,
    Sizes,
    at_least,
    at_most,
    check,
    fmt_bytes,
    fmt_rate,
    fmt_time,
    median,
    redis_db,
    say,
    side_by_side,
    timed,
)
from bench.ingest import through_aggregator
from bench.query import RawClient, Servers, decoded
from bus_tasks import names, transport
from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.client import TasksClient
from bus_tasks.protocol.methods import MethodName
from bus_tasks.transport.kombu.entities import queue as kombu_queue
from bus_tasks.transport.topology import events_queue

EVENTS = Sizes(full=6_000, quick=600)  # the raw side takes ~1,000 ev/s: 6 s a repetition
INGEST_REPS = Sizes(full=5, quick=2)
LISTED = Sizes(full=1_000, quick=300)  # tasks in the getAllTasks figure
STATUS_CALLS = Sizes(full=300, quick=30)  # per block
RPC_REPS = Sizes(full=9, quick=3)
TEMPLATE_KEY = "bench.events.template"
CALL_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 180.0


class Backlog:
    """The events queue, filled once through the events exchange; :meth:`refill` puts the same
    messages back (a server-side copy: setup, not measured)."""

    def __init__(self, url: str, count: int) -> None:
        self._redis = redis.Redis.from_url(url)
        bodies = workload.bodies(count // 3 + 1)
        with transport.open(url) as conn:
            conn.topology.declare_exchanges()
            conn.topology.declare_events()
            for _, (key, body) in zip(range(count), bodies, strict=False):
                conn.publish(body, exchange=names.EVENTS_EXCHANGE, routing_key=key)
        check(self.ready() == count, f"{self.ready()} events queued of {count}")
        self._redis.rename(names.EVENTS_QUEUE, TEMPLATE_KEY)
        self.count = count

    def ready(self) -> int:
        return int(self._redis.llen(names.EVENTS_QUEUE))

    def refill(self) -> None:
        self._redis.copy(TEMPLATE_KEY, names.EVENTS_QUEUE, replace=True)
        check(self.ready() == self.count, "the events queue was not refilled")


def raw_ingest(url: str, count: int, prefetch: int) -> float:
    """Events/s of a raw kombu consumer of the events queue that acks each message."""
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

    with (
        Connection(url) as conn,
        Consumer(
            conn.channel(), [kombu_queue(events_queue())], on_message=on_message, prefetch_count=prefetch
        ),
    ):
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not done.is_set():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the raw consumer acked {acked} of {count} events")
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1.0)
        done_at = time.perf_counter()
    return count / (done_at - first_at)


def ingest(quick: bool) -> Figure:
    count, reps = EVENTS.pick(quick), INGEST_REPS.pick(quick)
    prefetch = AggregatorPolicy().prefetch_count
    store_note = ""
    with redis_db("redis_ingest") as url:
        backlog = Backlog(url, count)

        def ours() -> float:
            nonlocal store_note
            backlog.refill()
            read = through_aggregator(url, count, prefetch)
            check(backlog.ready() == 0, "events left in the queue after the aggregator read them all")
            store_note = read.store
            return read.per_s

        def baseline() -> float:
            backlog.refill()
            return raw_ingest(url, count, prefetch)

        speed = side_by_side(ours, baseline, reps)
    say(f"  redis ingest: ours {median(speed.ours):,.0f} ev/s, raw {median(speed.baseline):,.0f} ev/s")
    return Figure(
        "redis ingest",
        fmt_rate(median(speed.ours), "ev"),
        fmt_rate(median(speed.baseline), "ev"),
        speed.ratio,
        at_least(0.8),
        f"{count:,} events, prefetch {prefetch}, {reps} reps",
        note=(
            f"a new aggregator ({store_note}) reading {names.EVENTS_QUEUE} vs a raw kombu consumer"
            f" of it acking each message; {speed.spread()}"
        ),
    )


def _per_call(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def round_trips(quick: bool) -> list[Figure]:
    listed, calls, reps = LISTED.pick(quick), STATUS_CALLS.pick(quick), RPC_REPS.pick(quick)
    task_id = workload.task_id(7)
    with redis_db("redis_rpc") as url, Child(Servers, url) as servers:
        client = TasksClient(transport.open(url), timeout_s=CALL_TIMEOUT_S)
        raw = RawClient(url)
        try:
            size = servers.call("start", listed, MethodName.GET_STATUS, {"taskID": task_id})
            try:
                expected = client.get_task_status(task_id)
                check(decoded(raw.call())["result"] == expected, "the echo does not answer getStatus's reply")
                status = side_by_side(
                    lambda: _per_call(lambda: client.get_task_status(task_id), calls),
                    lambda: _per_call(lambda: decoded(raw.call()), calls),
                    reps,
                )
            finally:
                servers.call("stop")
            listing_size = servers.call("start", listed)
            try:
                check(len(client.get_all_tasks()) == listed, "getAllTasks lists every task")
                check(len(raw.call()) == listing_size, "the echo payload is not the size of the reply")

                def ours() -> float:
                    servers.call("touch")  # a poll after a change: no cached answer
                    seconds, tasks = timed(client.get_all_tasks)
                    check(len(tasks) == listed, f"getAllTasks returned {len(tasks)} tasks of {listed}")
                    return seconds

                listing = side_by_side(ours, lambda: timed(lambda: decoded(raw.call()))[0], reps * 2)
            finally:
                servers.call("stop")
        finally:
            raw.close()
            client.close()
    say(
        f"  redis getStatus: ours {fmt_time(median(status.ours))}, echo {fmt_time(median(status.baseline))};"
        f" getAllTasks {listed:,}: ours {fmt_time(median(listing.ours))},"
        f" echo {fmt_time(median(listing.baseline))}"
    )
    return [
        Figure(
            "redis getStatus",
            fmt_time(median(status.ours)),
            fmt_time(median(status.baseline)),
            status.ratio,
            at_most(1.5),
            f"{calls} calls x {reps} reps, reply {fmt_bytes(size)}",
            note=(
                "TasksClient.get_task_status() vs a raw kombu request/reply echo answering the same"
                f" bytes; {status.spread()}"
            ),
        ),
        Figure(
            f"redis getAllTasks {listed:,}",
            fmt_time(median(listing.ours)),
            fmt_time(median(listing.baseline)),
            listing.ratio,
            at_most(1.2),
            f"{listed:,} tasks, reply {fmt_bytes(listing_size)}, {reps * 2} reps",
            note=(
                f"TasksClient.get_all_tasks() vs a raw kombu echo of {fmt_bytes(listing_size)},"
                f" decoded the same way; {listing.spread()}"
            ),
        ),
    ]


def run(quick: bool) -> list[Figure]:
    return [ingest(quick), *round_trips(quick)]
