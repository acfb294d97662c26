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
  in the same rotation with half the samples a repetition: the same raw publish to a stream of
  its own and a raw consumer of it (offset ``next``), what the first hop costs by itself through a
  stream rather than a classic queue; and the watch's two hops in raw kombu, publish to a stream, a relay in a child process
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
- **one hop** (``--only watch_onehop`` only: it doubles the figure's time), two rows without target,
  the other design issue 28 weighed (docs/watching.md, "Why two hops, not one"): a prototype watcher that reads the event log itself and applies it with the
  pure core (``bench/watch/onehop.py``). Its latency is a fifth side of the latency rotation
  (against the same raw queue); its ingest row runs ``WATCHERS`` of them, reading the log from its
  first event while the aggregator does, against the same aggregator alone.
"""

from __future__ import annotations

from bench.harness import (
    Figure,
    at_least,
    at_most,
    fmt_rate,
    fmt_time,
    median,
    percentile,
    rabbitmq_vhost,
    say,
)
from bench.watch.ingest import INGEST_REPS, TASKS, WATCHERS, measure_ingest
from bench.watch.latency import INTERVAL_S, LATENCY_REPS, SAMPLES, measure_latency
from bus_tasks import names


def run(quick: bool) -> list[Figure]:
    return figures(quick, one_hop=False)


def figures(quick: bool, *, one_hop: bool) -> list[Figure]:
    """Figure 9; ``one_hop``: with the one-hop prototype's two rows (bench.watch.with_one_hop)."""
    samples, latency_reps = SAMPLES.pick(quick), LATENCY_REPS.pick(quick)
    with rabbitmq_vhost("watch") as url:
        latency = measure_latency(url, samples, latency_reps, one_hop=one_hop)
    with rabbitmq_vhost("watch_ingest") as url:
        ingest = measure_ingest(url, TASKS.pick(quick), INGEST_REPS.pick(quick), one_hop=one_hop)

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
    rows = [
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
    if latency.onehop is not None and latency.onehop_samples is not None and ingest.one_hop is not None:
        rows += [
            Figure(
                "watch latency one hop",
                p(latency.onehop_samples),
                p(latency.baseline_samples),
                latency.onehop.ratio,
                None,
                f"{len(latency.onehop_samples)} samples a side, as watch latency",
                note=(
                    "a prototype (bench/watch/onehop.py), not the product: the watcher reads the"
                    " stream itself from its listing's revision and applies each event to a TaskView"
                    " of its own (decode, apply, TaskDetails decoded), one hop, vs the same raw queue;"
                    f" {latency.onehop.spread()}"
                ),
            ),
            Figure(
                "ingest with one-hop watchers",
                fmt_rate(median(ingest.one_hop.ours), "ev"),
                fmt_rate(median(ingest.one_hop.baseline), "ev"),
                ingest.one_hop.ratio,
                None,
                f"{ingest.events:,} events, {WATCHERS} watchers, {INGEST_REPS.pick(quick)} reps",
                note=(
                    "the one-hop prototype (bench/watch/onehop.py): each watcher reads the log itself"
                    " from its first event, concurrently with the aggregator, and applies every event to"
                    f" a TaskView of its own (every one of the {ingest.events:,} applied by every"
                    f" watcher) vs none; the watchers' process used {ingest.one_hop_watchers_cpu_s:.2g} s"
                    f" of CPU a reading, the aggregator's {ingest.one_hop_aggregator_cpu_s:.2g} s;"
                    f" {ingest.one_hop.spread()}"
                ),
            ),
        ]
    return rows
