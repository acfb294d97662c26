"""Figure 5, publish: durable, broker-confirmed publishes per second from ``TaskPublisher``.

The baseline is kombu's own ``confirm_publish=True``: each ``publish()`` waits for its confirm.
Both sides publish the same kind of event (a new task) to the events exchange, into the default
layout: the event log, a stream (``bus_tasks.events.log``) made anew before each side's run. The
log must then hold every message (counted by reading it back from its first offset): a lost
message misses the target whatever the speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kombu.connection import Connection
from kombu.message import Message
from kombu.messaging import Consumer

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
from bench.ingest import from_first, new_log
from bus_tasks import names, transport
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.transport import BusOptions

MESSAGES = Sizes(full=3_000, quick=200)
REPS = Sizes(full=5, quick=2)
VERB = "createVolume"
TAGS = ("spm",)


class Log:
    """The event log (a stream), made anew before a run and counted after it (by reading it)."""

    def __init__(self, url: str) -> None:
        self._url = url

    def renew(self) -> None:
        new_log(self._url)

    def count(self, expected: int, idle_s: float = 2.0) -> int:
        """Messages in the log, read from its first offset until ``expected`` or ``idle_s`` of silence."""
        seen = 0

        def on_message(message: Message) -> None:
            nonlocal seen
            message.ack()
            seen += 1

        with (
            Connection(self._url) as conn,
            Consumer(conn.channel(), [from_first()], on_message=on_message, prefetch_count=1_000),
        ):
            while seen < expected:
                try:
                    conn.drain_events(timeout=idle_s)
                except TimeoutError:
                    break
        return seen


def ours(url: str, count: int) -> float:
    """Publishes per second of ``TaskPublisher.create`` on a confirming connection, until all confirmed."""
    publisher = TaskPublisher(transport.open(url, BusOptions(confirm_publish=True)), workload.SUBSYSTEM)
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
        log = Log(url)

        def counted(side: str, publish: Callable[[str, int], float]) -> float:
            log.renew()
            per_s = publish(url, count)
            expected = count + 1  # the warm-up message too
            lost[side] += expected - log.count(expected)
            return per_s

        speed = side_by_side(
            lambda: counted("ours", ours),
            lambda: counted("kombu", kombu_confirmed),
            reps,
        )
    say(f"  publish: ours {median(speed.ours):,.0f} msg/s, kombu {median(speed.baseline):,.0f} msg/s")
    lost_note = (
        f"lost: ours {lost['ours']}, kombu {lost['kombu']}"
        if any(lost.values())
        else f"nothing lost (every message counted in the stream {names.EVENT_LOG})"
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
