"""Figure 5, publish: durable, broker-confirmed publishes per second from ``TaskPublisher``.

The baseline is kombu's own ``confirm_publish=True``: each ``publish()`` waits for its confirm.
Both sides publish the same kind of event (a new task) to the events exchange, whose durable
queue must then hold every message: a lost message misses the target whatever the speed.
"""

from __future__ import annotations

import time

from kombu.connection import Connection

from bench import workload
from bench.harness import (
    Figure,
    Sizes,
    at_least,
    fmt_rate,
    median,
    rabbitmq_vhost,
    rate,
    say,
    side_by_side,
)
from bus_tasks import names
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.transport import BusConnection
from bus_tasks.transport.topology import events_queue

MESSAGES = Sizes(full=3_000, quick=200)
REPS = Sizes(full=5, quick=2)
VERB = "createVolume"
TAGS = ("spm",)


class Queue:
    """The events queue, counted and purged between runs."""

    def __init__(self, url: str) -> None:
        self._conn = Connection(url)
        self._queue = events_queue().bind(self._conn.default_channel)

    def count(self) -> int:
        return int(self._queue.queue_declare(passive=True).message_count)

    def settle(self, expected: int, timeout_s: float = 10.0) -> int:
        """The queue's count once it reaches ``expected`` or stops changing (confirmed is queued)."""
        deadline = time.monotonic() + timeout_s
        count = self.count()
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            count = self.count()
        return count

    def purge(self) -> None:
        self._queue.purge()

    def close(self) -> None:
        self._conn.release()


def ours(url: str, count: int) -> float:
    """Publishes per second of ``TaskPublisher.create`` on a confirming connection, until all confirmed."""
    publisher = TaskPublisher(BusConnection(url, confirm_publish=True), workload.SUBSYSTEM)
    try:
        publisher.create(VERB, TAGS)  # connects and declares: not part of the figure
        publisher.flush()
        started = time.perf_counter()
        for _ in range(count):
            publisher.create(VERB, TAGS)
        publisher.flush()
        return rate(count, time.perf_counter() - started)
    finally:
        publisher.close()


def kombu_confirmed(url: str, count: int) -> float:
    """Publishes per second of kombu's ``Producer.publish`` with ``confirm_publish=True``, one by one."""
    bodies = list(workload.bodies(count + 1, stages=(0,), salt=time.time_ns()))
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()

        def publish(key: str, body: bytes) -> None:
            producer.publish(
                body,
                exchange=names.EVENTS_EXCHANGE,
                routing_key=key,
                content_type=names.CONTENT_TYPE,
                content_encoding="utf-8",
                delivery_mode=2,
            )

        publish(*bodies[0])  # connects: not part of the figure
        started = time.perf_counter()
        for key, body in bodies[1:]:
            publish(key, body)
        return rate(count, time.perf_counter() - started)


def run(quick: bool) -> list[Figure]:
    count, reps = MESSAGES.pick(quick), REPS.pick(quick)
    lost: dict[str, int] = {"ours": 0, "kombu": 0}
    with rabbitmq_vhost("publish") as url:
        with BusConnection(url) as setup:
            setup.declare_exchanges()
            setup.declare_queue(names.EVENTS_QUEUE)
        queue = Queue(url)
        try:

            def counted(side: str, publish: float) -> float:
                expected = count + 1  # the warm-up message too
                lost[side] += expected - queue.settle(expected)
                queue.purge()
                return publish

            speed = side_by_side(
                lambda: counted("ours", ours(url, count)),
                lambda: counted("kombu", kombu_confirmed(url, count)),
                reps,
            )
        finally:
            queue.close()
    say(f"  publish: ours {median(speed.ours):,.0f} msg/s, kombu {median(speed.baseline):,.0f} msg/s")
    lost_note = (
        f"lost: ours {lost['ours']}, kombu {lost['kombu']}"
        if any(lost.values())
        else "nothing lost (every message counted in the durable queue)"
    )
    return [
        Figure(
            "publish",
            fmt_rate(median(speed.ours), "msg"),
            fmt_rate(median(speed.baseline), "msg"),
            speed.ratio,
            at_least(3.0),
            f"{count:,} messages, {reps} reps",
            note=f"TaskPublisher.create + flush vs kombu confirm_publish=True; {lost_note}; {speed.spread()}",
            lost=lost["ours"] > 0,
        )
    ]
