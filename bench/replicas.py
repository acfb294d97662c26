"""Figure 8, replicas: aggregators side by side on one event log (SPEC 12), on RabbitMQ's stream.

Both figures read one stream (``bus_tasks.events.log``, the default event log), filled once
with whole-record events (each carries the whole task: created, updated, finished), publisher-
confirmed. A stream keeps what is read, so every repetition of either side reads the very same
messages from the first offset. Every reader runs in a process of its own (``spawn``), as
replicas are deployed, so that two of them do not share one GIL:

- **replica ingest**: events/s of one aggregator (a new one, empty default store, so SQLite in a
  temp dir) reading the whole log while a second aggregator, in another process, reads the same
  log at the same time; against the same aggregator process reading it alone. Both timed from
  its first event to the commit that brings its revision to the end of the log. Target: >= 0.8.
- **replica catch-up**: a new aggregator (empty default store, SQLite in a temp dir) from the
  moment it is made (store opened, connected, declared) until its revision reaches the end of
  the log; against a raw kombu consumer of the same stream from ``"first"``, same prefetch, that
  acks each message, from before it connects to its last ack. No target: reported.
"""

from __future__ import annotations

import time
from itertools import islice

from bench import workload
from bench.harness import (
    Child,
    Figure,
    Sizes,
    at_least,
    check,
    fmt_rate,
    median,
    rabbitmq_vhost,
    say,
    side_by_side,
)
from bench.ingest import Job, Read, Reader, fill, new_log
from bus_tasks import names
from bus_tasks.aggregator import AggregatorPolicy

EVENTS = Sizes(full=20_000, quick=900)
REPS = Sizes(full=7, quick=2)
START_DELAY_S = 0.2  # both replicas are made at one instant, this long after it is set
MIN_OVERLAP = 0.8  # of the measured replica's reading, the share the other one read alongside


def overlap(measured: Read, other: Read) -> float:
    """The share of ``measured``'s reading during which ``other`` was reading too."""
    shared = min(measured.done_at, other.done_at) - max(measured.first_at, other.first_at)
    return max(0.0, shared) / (measured.done_at - measured.first_at)


def run(quick: bool) -> list[Figure]:
    count, reps = EVENTS.pick(quick), REPS.pick(quick)
    prefetch = AggregatorPolicy().prefetch_count
    seconds: list[float] = []  # the second replica's events/s, while the first was measured
    overlaps: list[float] = []
    store_note = ""
    with rabbitmq_vhost("replicas") as url, Child(Reader) as first, Child(Reader) as second:
        new_log(url)
        end = fill(url, list(islice(workload.bodies(count // 3 + 1), count)))

        def two() -> float:
            nonlocal store_note
            start_at = time.perf_counter() + START_DELAY_S  # both are made at once
            first.send("aggregator", url, Job(end, prefetch, "replica-a", start_at=start_at))
            second.send("aggregator", url, Job(end, prefetch, "replica-b", start_at=start_at))
            a: Read = first.result()
            b: Read = second.result()
            store_note = a.store
            seconds.append(b.per_s)
            overlaps.append(overlap(a, b))
            return a.per_s

        def alone() -> float:
            start_at = time.perf_counter() + START_DELAY_S  # as above
            read: Read = first.call("aggregator", url, Job(end, prefetch, "replica-a", start_at=start_at))
            return read.per_s

        replica = side_by_side(two, alone, reps)
        check(
            quick or min(overlaps) >= MIN_OVERLAP,  # quick sizes read in less than start-up skew
            f"the two replicas read side by side for only {min(overlaps):.0%} of the time measured",
        )

        def raw_two() -> float:
            start_at = time.perf_counter() + START_DELAY_S
            first.send("raw", url, Job(end, prefetch, start_at=start_at))
            second.send("raw", url, Job(end, prefetch, start_at=start_at))
            a: Read = first.result()
            second.result()
            return a.per_s

        def raw_alone() -> float:
            start_at = time.perf_counter() + START_DELAY_S
            read: Read = first.call("raw", url, Job(end, prefetch, start_at=start_at))
            return read.per_s

        # The same question asked of raw consumers: what two readers cost this machine itself.
        control = side_by_side(raw_two, raw_alone, max(3, reps // 2))

        def catch_up() -> float:
            read: Read = first.call("aggregator", url, Job(end, prefetch, "replica-new", from_start=True))
            return read.per_s

        def raw() -> float:
            read: Read = first.call("raw", url, Job(end, prefetch, from_start=True))
            return read.per_s

        catching = side_by_side(catch_up, raw, reps)
    say(
        f"  replica ingest: one of two {median(replica.ours):,.0f} ev/s, alone {median(replica.baseline):,.0f} ev/s;"
        f" catch-up {median(catching.ours):,.0f} ev/s, raw {median(catching.baseline):,.0f} ev/s"
    )
    sizes = f"{end:,} events in the stream, prefetch {prefetch}, {reps} reps"
    return [
        Figure(
            "replica ingest",
            fmt_rate(median(replica.ours), "ev"),
            fmt_rate(median(replica.baseline), "ev"),
            replica.ratio,
            at_least(0.8),
            sizes,
            note=(
                f"one new aggregator ({store_note}) reading {names.EVENT_LOG} from the first offset"
                f" while a second one (its own process) reads it too, vs the same alone; the second"
                f" read {median(seconds):,.0f} ev/s, alongside for >= {min(overlaps):.0%} of the"
                f" time measured; {replica.spread()}; control, a raw kombu consumer one of two vs"
                f" alone (same stream, prefetch, acks): {control.ratio:.3g}, {control.spread()}"
            ),
        ),
        Figure(
            "replica catch-up",
            fmt_rate(median(catching.ours), "ev"),
            fmt_rate(median(catching.baseline), "ev"),
            catching.ratio,
            None,
            sizes,
            note=(
                f"a new aggregator ({store_note}) from its making until its revision is {end:,},"
                f" vs a raw kombu consumer of the same stream from 'first' (same prefetch, acks"
                f" each), from its connect to its last ack; {catching.spread()}"
            ),
        ),
    ]
