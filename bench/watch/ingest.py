"""The ingest-with-watchers figure: a new aggregator reading the event log while ``WATCHERS``
watch queues are bound and consumed, against the same with none (see the package's docstring)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench import workload
from bench.harness import Child, SideBySide, Sizes, check, median, side_by_side, wait_for
from bench.ingest import Job, Read, Reader, fill, new_log
from bench.watch.onehop import LogReader
from bus_tasks import transport
from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.transport import Delivery
from bus_tasks.watching import NeedFailover, NeedReplay, WatchState, decode_feed

TASKS = Sizes(full=4_000, quick=300)  # three events each, as figure 1
INGEST_REPS = Sizes(full=7, quick=2)
WATCHERS = 50
CATCH_UP_TIMEOUT_S = 120.0  # for the watchers to have every change, once the aggregator did


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
        message = decode_feed(delivery.body)
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


class LogFollower:
    """One watcher of the one-hop prototype (:mod:`bench.watch.onehop`): it reads the event log
    itself from its first event, in a thread, concurrently with the aggregator reading it."""

    def __init__(self, url: str, stop: threading.Event, expect: int) -> None:
        self.error: BaseException | None = None
        self.done_at = 0.0
        self.expect = expect  # known before it reads: the log is full already
        self.messages = 0
        self.gaps = 0
        self.bound = threading.Event()
        self.reader: LogReader | None = None
        self._url = url
        self._stop = stop
        self.thread = threading.Thread(target=self._run, name="log-follower", daemon=True)
        self.thread.start()

    @property
    def changes(self) -> int:
        return self.reader.applied if self.reader is not None else 0

    def _on_change(self, _task_id: str, _details: dict[str, object]) -> None:
        if self.expect and self.changes >= self.expect and not self.done_at:
            self.done_at = time.perf_counter()

    def _run(self) -> None:
        try:
            self.reader = LogReader(self._url, self._on_change, since=0)
            self.bound.set()
            self.reader.run(self._stop)
            self.messages = self.reader.events
            self.reader.close()
        except BaseException as exc:
            self.error = exc
            self.bound.set()


class Watchers:
    """A child process holding ``count`` followers (see :class:`Child`) while they are open."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._followers: list[Follower | LogFollower] = []

    def open(self, url: str, count: int, expect: int, one_hop: bool = False) -> None:
        """``one_hop``: followers of the one-hop prototype, reading the log (not the feed)."""
        self._cpu_at = time.process_time()
        self._stop = threading.Event()
        if one_hop:
            self._followers = [LogFollower(url, self._stop, expect) for _ in range(count)]
        else:
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


def reader_name() -> str:
    """A new aggregator's name for each reading: no two readings share one."""
    return f"bench-{uuid.uuid4().hex[:6]}"


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
    one_hop: SideBySide | None = None  # the same with the one-hop prototype's watchers, vs none
    one_hop_watchers_cpu_s: float = 0.0
    one_hop_aggregator_cpu_s: float = 0.0


def measure_ingest(url: str, n_tasks: int, reps: int, *, one_hop: bool = False) -> Ingest:
    """``one_hop``: also the one-hop prototype's watchers against none (``--only watch_onehop``)."""
    prefetch = AggregatorPolicy().prefetch_count
    messages: list[int] = []
    lags: list[float] = []
    watchers_cpu: list[float] = []
    aggregator_cpu: list[float] = []
    onehop_cpu: list[float] = []
    onehop_aggregator_cpu: list[float] = []
    store = ""
    with Child(Reader) as reader, Child(Watchers) as watchers:
        new_log(url)
        end = fill(url, list(workload.bodies(n_tasks)))

        def watched(*, one_hop: bool = False) -> float:
            nonlocal store
            watchers.call("open", url, WATCHERS, end, one_hop)
            try:
                read: Read = reader.call("aggregator", url, Job(end, prefetch, name=reader_name()))
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
            if one_hop:
                onehop_cpu.append(float(seen["cpu_s"]))
                onehop_aggregator_cpu.append(read.cpu_s)
                return float(read.per_s)
            messages.append(int(median([float(m) for m in seen["messages"]])))
            lags.append(max(0.0, seen["last_done_at"] - read.done_at))
            watchers_cpu.append(float(seen["cpu_s"]))
            aggregator_cpu.append(read.cpu_s)
            store = read.store
            return float(read.per_s)

        def alone() -> float:
            read: Read = reader.call("aggregator", url, Job(end, prefetch, name=reader_name()))
            return float(read.per_s)

        speed = side_by_side(watched, alone, reps)
        # The one-hop prototype's watchers against the same aggregator alone, taken the same way.
        with_one_hop = side_by_side(lambda: watched(one_hop=True), alone, reps) if one_hop else None
    return Ingest(
        speed,
        end,
        prefetch,
        int(median([float(m) for m in messages])),
        median(lags),
        median(watchers_cpu),
        median(aggregator_cpu),
        store,
        with_one_hop,
        median(onehop_cpu) if onehop_cpu else 0.0,
        median(onehop_aggregator_cpu) if onehop_aggregator_cpu else 0.0,
    )
