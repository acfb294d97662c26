"""The watch latency figure: from ``TaskPublisher.update()`` to the ``changed`` event out of
``TasksClient.watch()``, against raw kombu paths (see the package's docstring)."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import workload
from bench.harness import Child, SideBySide, Sizes, check, median
from bench.ingest import default_store, new_log
from bench.watch.onehop import LogReader
from bench.watch.raw import Arrivals, RawPath, Relay, raw_queue, raw_stream, relayed_queue
from bus_tasks import transport
from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.client import TasksClient
from bus_tasks.core.model import Event
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator

SAMPLES = Sizes(full=250, quick=30)  # per side and repetition
LATENCY_REPS = Sizes(full=5, quick=1)
WARMUP = 20  # samples of each side before the repetitions, not counted
CONTROL_SHARE = 2  # the two controls (the note's, no target) take SAMPLES / 2 a repetition
INTERVAL_S = 0.02  # one update every 20 ms (or once the previous one arrived, if later)


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


class OneHopWatcher:
    """The one-hop prototype (:class:`~bench.watch.onehop.LogReader`) drained in a thread; its
    changes' markers."""

    def __init__(self, url: str) -> None:
        self.arrivals = Arrivals()
        self.reader = LogReader(url, lambda _id, details: self.arrivals.put(str(details["message"])))
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="onehop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.reader.run(self._stop)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.reader.close()
        check(self.error is None, f"the one-hop watcher died: {self.error!r}")


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
    onehop: SideBySide | None = None  # the one-hop prototype's per-repetition p50s vs the raw queue's
    onehop_samples: list[float] | None = None


def measure_latency(url: str, samples: int, reps: int, *, one_hop: bool = False) -> Latency:
    """``one_hop``: the prototype too, a fifth side of the rotation (its reader, attached, receives
    every event of the other sides as well: only ``--only watch_onehop`` asks for it)."""
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
        # The one-hop prototype and the real watch see the same updates: each side waits for
        # its own markers only (the other's arrive too, and are passed over).
        onehop_watcher = OneHopWatcher(url) if one_hop else None
        if onehop_watcher is not None:
            stack.callback(onehop_watcher.close)

        def update(marker: str) -> None:
            publisher.update(task_id, message=marker)

        ours = Side("watch", update, watcher.arrivals)
        onehop = Side("onehop", update, onehop_watcher.arrivals) if onehop_watcher is not None else None
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
        order = [ours, baseline, stream, two_hops, *([onehop] if onehop is not None else [])]

        def measure(side: Side, count: int, *, keep: bool = True) -> float:
            if onehop_watcher is not None:
                onehop_watcher.reader.armed = side is onehop
            return side.measure(count, keep=keep)

        for side in order:
            measure(side, WARMUP, keep=False)

        p50s: dict[str, list[float]] = {side.name: [] for side in order}
        # Each sample is paced (INTERVAL_S): the controls' p50s need fewer than the target's sides,
        # and four full sides were two thirds of figure 9's time.
        controls = (stream, two_hops)
        for rep in range(reps):
            for side in order[rep % len(order) :] + order[: rep % len(order)]:
                p50s[side.name].append(
                    measure(side, samples // CONTROL_SHARE if side in controls else samples)
                )
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
        SideBySide(p50s["onehop"], p50s["queue"]) if onehop is not None else None,
        onehop.samples if onehop is not None else None,
    )
