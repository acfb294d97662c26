"""Figure ``cluster``: ingest on a three-node RabbitMQ cluster, and the failover time (issue 25).

A cluster of the figure's own (``tests/support/own_cluster.py``, as the cluster tests start it:
three nodes on loopback ports, joined), started once and stopped after, also on failure. Every
bus_tasks process is given the ``;`` URL of all three nodes, with ``queue_type = "quorum"`` (the
RPC and control queues replicated) and no test subsystem (its control queue would be a classic
one on a single node).

(1) ``cluster ingest``: the event log (the stream, replicated on the three nodes) is filled once
with publisher-confirmed events; each repetition reads all of it from the first offset twice, as
``ingest`` does: by a new aggregator made as ``bus-tasks serve`` makes it (``wiring.aggregator``)
and by a raw kombu consumer over the same URL, with the same prefetch, acking in the
aggregator's batches (``multiple=True``); alternated, the median ratio.

(2) ``cluster failover``: a running aggregator holds the view of those events; a client on
another node loops ``Task.getStatus`` of one task. The node the aggregator is connected to is
killed (kill -9); the figure is the time from the kill to the first successful call made after
it (the aggregator reconnected to a node left, its RPC consumer back on the quorum queue). The
node is restarted (it rejoins) between repetitions. There is no baseline: reported only.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import workload
from bench.harness import (
    Figure,
    HarnessError,
    Sizes,
    at_least,
    check,
    fmt_rate,
    fmt_time,
    median,
    say,
    side_by_side,
)
from bench.ingest import fill, new_log, through_aggregator, through_raw_consumer
from bus_tasks import names
from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.client import TasksClient
from bus_tasks.config import Settings
from bus_tasks.errors import BusTasksError
from bus_tasks.store import NullStore
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.workers import wiring

if TYPE_CHECKING:
    from support.own_cluster import OwnCluster
    from support.own_rabbit import OwnRabbit

    from bus_tasks.transport import Bus

TASKS = Sizes(full=4_000, quick=300)  # three events each, as in ``ingest``
REPS = Sizes(full=7, quick=2)
KILLS = Sizes(full=3, quick=1)
VHOST = "bus"
CALL_TIMEOUT_S = 5.0  # each getStatus call's own deadline; a call lost in the kill is asked again
FAILOVER_TIMEOUT_S = 90.0
# The node starter lives with the tests that start the same cluster (they import it as ``support``).
TESTS = Path(__file__).resolve().parents[1] / "tests"


class LoopingCaller(threading.Thread):
    """Calls getStatus of ``task_id`` in a loop; remembers when each successful call was made
    and when it returned (``perf_counter``), and the failures."""

    def __init__(self, bus: Bus, task_id: str) -> None:
        super().__init__(name="looping-caller", daemon=True)
        self.client = TasksClient(bus, timeout_s=CALL_TIMEOUT_S, wait_for_aggregator=True)
        self.task_id = task_id
        self.calls: list[tuple[float, float]] = []  # (made, returned) of each successful call
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                made = time.perf_counter()
                try:
                    status = self.client.get_task_status(self.task_id)
                except BusTasksError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if status.get("id", self.task_id) != self.task_id:
                    self.failures.append(f"getStatus of {self.task_id} answered {status}")
                    continue
                self.calls.append((made, time.perf_counter()))
        except BaseException as exc:  # reported by the figure, not lost in the thread
            self.error = exc

    def first_made_after(self, moment: float) -> float | None:
        """When the first successful call made after ``moment`` returned, if one has."""
        return next((returned for made, returned in list(self.calls) if made >= moment), None)

    def successes(self) -> int:
        return len(self.calls)


def run(quick: bool) -> list[Figure]:
    n_tasks, reps, kills = TASKS.pick(quick), REPS.pick(quick), KILLS.pick(quick)
    if str(TESTS) not in sys.path:
        sys.path.append(str(TESTS))
    from support.own_cluster import OwnCluster
    from support.own_rabbit import available

    if not available():
        raise HarnessError("no RabbitMQ server installed to start a cluster of the figure's own")
    with tempfile.TemporaryDirectory(prefix="bus_tasks_bench_cluster_") as base:
        cluster = OwnCluster(Path(base))
        say("  starting three RabbitMQ nodes ...")
        cluster.start()
        try:
            cluster.add_vhost(VHOST)
            return [*ingest(cluster, n_tasks, reps), failover(cluster, n_tasks, kills)]
        finally:
            cluster.stop()


def settings_for(url: str) -> Settings:
    return Settings(broker_url=url, queue_type="quorum", test_subsystem="")


def ingest(cluster: OwnCluster, n_tasks: int, reps: int) -> list[Figure]:
    url = cluster.url(VHOST)
    settings = settings_for(url)
    prefetch, ack_batch = settings.prefetch_count, AggregatorPolicy().ack_batch
    new_log(url)
    count = fill(url, list(workload.bodies(n_tasks)), settings=settings)
    store_note = ""

    def ours() -> float:
        nonlocal store_note
        read = through_aggregator(url, count, prefetch, settings=settings)
        store_note = read.store
        return read.per_s

    def baseline() -> float:
        return through_raw_consumer(url, count, prefetch, settings=settings, ack_batch=ack_batch).per_s

    speed = side_by_side(ours, baseline, reps)
    leader = cluster.queue_info(VHOST, "leader").get(names.EVENT_LOG, ["?"])[0]
    say(f"  cluster ingest: ours {median(speed.ours):,.0f} ev/s, raw {median(speed.baseline):,.0f} ev/s")
    return [
        Figure(
            "cluster ingest",
            fmt_rate(median(speed.ours), "ev"),
            fmt_rate(median(speed.baseline), "ev"),
            speed.ratio,
            at_least(0.9),
            f"{count:,} events ({n_tasks:,} tasks), 3 nodes, prefetch {prefetch}, ack batch {ack_batch}, {reps} reps",
            note=(
                f"three RabbitMQ nodes of the figure's own on this machine, one ';' URL of all three,"
                f" queue_type quorum: a new aggregator as serve makes it ({store_note}) reading"
                f" {names.EVENT_LOG} (leader {leader}) from the first offset vs a raw kombu consumer"
                f" of the same stream over the same URL; {speed.spread()}"
            ),
        )
    ]


def failover(cluster: OwnCluster, n_tasks: int, kills: int) -> Figure:
    """Kill -9 the aggregator's node ``kills`` times under a looping getStatus caller."""
    url = cluster.url(VHOST)
    settings = settings_for(url)
    aggregator = wiring.aggregator(settings, store=NullStore())
    task_id = workload.task_id(n_tasks - 1)
    times: list[float] = []
    failures = 0
    with RunningAggregator(aggregator, ready_timeout_s=60.0) as running:
        wait_until(lambda: running.view.revision >= 3 * n_tasks, timeout_s=FAILOVER_TIMEOUT_S)
        for _ in range(kills):
            node = cluster.node_at(aggregator.connection.link.node_url)  # type: ignore[attr-defined]
            taken, failed = kill_under_calls(cluster, node, task_id)
            times.append(taken)
            failures += failed
            moved = cluster.node_at(aggregator.connection.link.node_url)  # type: ignore[attr-defined]
            check(moved is not node, "the aggregator answered from the killed node")
            say(f"  failover {len(times)}: {fmt_time(taken)} (killed {node.name})")
            cluster.restart(node)
    say(f"  cluster failover: median {fmt_time(median(times))}, max {fmt_time(max(times))}")
    return Figure(
        "cluster failover",
        f"{fmt_time(median(times))} (max {fmt_time(max(times))})",
        "-",
        max(times) / median(times),
        None,
        f"{len(times)} kills, 3 nodes, call timeout {CALL_TIMEOUT_S:g} s",
        note=(
            "kill -9 of the node the running aggregator is connected to, under a client on another"
            " node looping Task.getStatus: from the kill to the return of the first successful call"
            f" made after it (median, max; the ratio column is max / median); {failures} calls failed on the way; times"
            f" {', '.join(fmt_time(t) for t in times)}"
        ),
    )


def kill_under_calls(cluster: OwnCluster, node: OwnRabbit, task_id: str) -> tuple[float, int]:
    """Kill -9 ``node`` under a looping getStatus caller; the seconds from the kill to the first
    successful call made after it, and how many calls failed meanwhile."""
    # The caller starts on another node than the aggregator's (it reconnects if it must).
    others = [n for n in cluster.nodes if n is not node]
    caller = LoopingCaller(wiring.connect(settings_for(cluster.url(VHOST, [*others, node]))), task_id)
    caller.start()
    try:
        wait_until(lambda: caller.successes() >= 20 or caller.error is not None, timeout_s=60.0)
        killed_at = time.perf_counter()
        cluster.kill(node)
        wait_until(
            lambda: caller.first_made_after(killed_at) is not None or caller.error is not None,
            timeout_s=FAILOVER_TIMEOUT_S,
        )
    finally:
        caller.stop.set()
        caller.join(CALL_TIMEOUT_S + 5.0)
        caller.client.close()
    if caller.error is not None:
        raise HarnessError(f"the looping caller failed: {caller.error!r}")
    back_at = caller.first_made_after(killed_at)
    check(back_at is not None, "no successful call after the kill")
    assert back_at is not None
    return back_at - killed_at, len(caller.failures)
