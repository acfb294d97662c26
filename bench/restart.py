"""Figure ``restart``: how long an aggregator takes to come back, on RabbitMQ.

- **restart ready**: ``bus-tasks serve`` started as a process on a data directory whose SQLite
  store holds 1,000,000 tasks (written once through the store itself), timed from the process's
  start to its "aggregator ready" log line (store loaded, event log bound, RPC consumed). Against
  a process that reads the same rows raw: one ``SELECT details FROM tasks`` and ``orjson.loads``
  of each row, kept in a list, timed from its start to its "read" line. Both are new
  interpreters, so both pay their imports: ours its own (bus_tasks, kombu, pydantic), the raw one
  sqlite3 and orjson.
- **restart drain**: a new aggregator (empty default store, SQLite in a temp dir) on a stream
  holding a backlog of 50,000 events, from its making (store opened, connect, declares) until
  its revision reaches the end of the backlog; against a raw kombu consumer of the same stream
  from ``"first"``, same prefetch, acking each message, from before its connect to its last ack.
  Each in a process of its own that was started beforehand.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

from bench import workload
from bench.harness import (
    Child,
    Figure,
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
)
from bench.ingest import Job, Read, Reader, fill, new_log
from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.config import Settings
from bus_tasks.store import SQLITE_FILE, open_store

STORED = Sizes(full=1_000_000, quick=20_000)
BACKLOG = Sizes(full=50_000, quick=3_000)  # 100,000 until round 3: start-up (tens of ms) is still ~1% of it
READY_REPS = Sizes(full=3, quick=2)
DRAIN_REPS = Sizes(full=3, quick=2)
READY_TIMEOUT_S = 600.0
TEMPLATES = 3_000
BUILD_CHUNK = 50_000  # tasks stored per commit

# The cyclic GC paused as the store's load pauses it: the figure is not won by that alone.
RAW_READ = """
import gc, sqlite3, sys, orjson
db = sqlite3.connect(sys.argv[1])
gc.disable()
rows = [orjson.loads(details) for (details,) in db.execute("SELECT details FROM tasks")]
print("read", len(rows), flush=True)
"""


class StoreWriter:
    """Writes ``n`` tasks to the default store of ``data_dir``, through the store, in a process of
    its own (see :class:`Child`). Building a view of 1,000,000 from events would take a minute
    or two: the tasks are copies of :data:`TEMPLATES` built ones (each at one of its three
    stages), each with an id of its own."""

    def write(self, data_dir: str, n: int) -> float:
        """Seconds it took."""
        began = time.perf_counter()
        templates = list(workload.build_view(min(n, TEMPLATES)))
        store = open_store(Settings(data_dir=Path(data_dir)))
        try:
            for i in range(n):
                template = templates[i % len(templates)]
                task_id = workload.task_id(i)
                member = template.member.replace(template.id.encode(), task_id.encode())
                store.put(dataclasses.replace(template, id=task_id, member=member))
                if i % BUILD_CHUNK == BUILD_CHUNK - 1:
                    store.commit()
            store.commit()
        finally:
            store.close()
        return time.perf_counter() - began


@contextmanager
def _process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(60.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10.0)
        if process.stdout is not None:
            process.stdout.close()


def until_line(args: list[str], marker: str, *, env: dict[str, str]) -> tuple[float, str]:
    """Start ``args``; seconds until it printed a line with ``marker``, and that line."""
    began = time.perf_counter()
    with _process(args, env) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if marker in line:
                return time.perf_counter() - began, line.strip()
            if time.perf_counter() - began > READY_TIMEOUT_S:
                break
        raise RuntimeError(f"{args[0]} exited or timed out without printing {marker!r}")


def ready(quick: bool) -> Figure:
    n, reps = STORED.pick(quick), READY_REPS.pick(quick)
    serve = str(Path(sys.executable).with_name("bus-tasks"))
    with rabbitmq_vhost("restart") as url, tempfile.TemporaryDirectory(prefix="bus_tasks_bench_") as data_dir:
        with Child(StoreWriter) as writer:
            build_s = writer.call("write", data_dir, n)
        config = Path(data_dir) / "bench.toml"  # empty: no config file of this machine's applies
        config.write_text("")
        say(f"  restart: {n:,} tasks stored in {build_s:.0f}s")
        database = str(Path(data_dir) / SQLITE_FILE)
        env = {**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO", "BUS_TASKS_CONFIG": str(config)}
        lines: list[str] = []

        def ours() -> float:
            seconds, line = until_line(
                [serve, "serve", "--broker", url, "--data-dir", data_dir], "aggregator ready", env=env
            )
            check(f"{n} tasks loaded" in line, f"serve did not load {n:,} tasks: {line}")
            lines.append(line)
            return seconds

        def baseline() -> float:
            seconds, line = until_line([sys.executable, "-c", RAW_READ, database], "read ", env=env)
            check(line == f"read {n}", f"the raw read got {line!r}")
            return seconds

        times = side_by_side(ours, baseline, reps)
    say(f"  restart ready: ours {fmt_time(median(times.ours))}, raw read {fmt_time(median(times.baseline))}")
    return Figure(
        "restart ready",
        fmt_time(median(times.ours)),
        fmt_time(median(times.baseline)),
        times.ratio,
        at_most(2.0),
        f"{n:,} tasks in the SQLite store, {reps} reps",
        note=(
            "bus-tasks serve from its start to 'aggregator ready' vs a new python process's"
            f" SELECT of the same rows and orjson.loads of each; {times.spread()}"
        ),
    )


def drain(quick: bool) -> Figure:
    count, reps = BACKLOG.pick(quick), DRAIN_REPS.pick(quick)
    prefetch = AggregatorPolicy().prefetch_count
    store_note = ""
    with rabbitmq_vhost("restart_drain") as url, Child(Reader) as reader:
        new_log(url)
        end = fill(url, list(islice(workload.bodies(count // 3 + 1), count)))

        def ours() -> float:
            nonlocal store_note
            read: Read = reader.call("aggregator", url, Job(end, prefetch, "restarted", from_start=True))
            store_note = read.store
            return read.per_s

        def baseline() -> float:
            read: Read = reader.call("raw", url, Job(end, prefetch, from_start=True))
            return read.per_s

        speed = side_by_side(ours, baseline, reps)
    say(f"  restart drain: ours {median(speed.ours):,.0f} ev/s, raw {median(speed.baseline):,.0f} ev/s")
    return Figure(
        "restart drain",
        fmt_rate(median(speed.ours), "ev"),
        fmt_rate(median(speed.baseline), "ev"),
        speed.ratio,
        at_least(0.8),
        f"{end:,} events backlog, prefetch {prefetch}, {reps} reps",
        note=(
            f"a new aggregator ({store_note}) from its making until its revision is {end:,} vs a raw"
            f" kombu consumer of the same stream from 'first' (acks each) from its connect; {speed.spread()}"
        ),
    )


def run(quick: bool) -> list[Figure]:
    return [ready(quick), drain(quick)]
