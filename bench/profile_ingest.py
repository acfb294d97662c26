"""Where the aggregator's ingest spends its CPU: not a figure, a tool behind ``ingest`` and
``tls_ingest`` (issue 23).

``python -m bench.profile_ingest [--tls [--python-gc]] [--tasks N] [--top N] [--sort tottime]``

Fills an event log as those figures do (on the shared RabbitMQ in a vhost of its own, or with
``--tls`` on a TLS node of its own, certificate login, ``identity = "broker"``), then a new
aggregator (empty default store, made and run as the figure does) reads all of it with
:mod:`cProfile` on, in this thread; prints the CPU per event and the top functions. cProfile
adds its own cost to every call: compare its figures with each other, not with the bench's.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import workload
from bench.harness import HarnessError, check, rabbitmq_vhost
from bench.ingest import DRAIN_TIMEOUT_S, CountingStore, default_store, fill, new_log
from bus_tasks import transport
from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.broker_setup import Deployment, definitions
from bus_tasks.config import Settings
from bus_tasks.workers import wiring

TESTS = Path(__file__).resolve().parents[1] / "tests"
VHOST = "bus"
AGGREGATOR = "agg1"


@contextmanager
def tls_settings() -> Iterator[tuple[Settings, Settings]]:
    """The publisher's and the aggregator's settings on a TLS node of their own (as tls_ingest)."""
    if str(TESTS) not in sys.path:
        sys.path.append(str(TESTS))
    from support.own_rabbit import available
    from support.tls_rabbit import tls_rabbit

    if not available():
        raise HarnessError("no RabbitMQ server installed to start a TLS node")
    with (
        tempfile.TemporaryDirectory(prefix="bus_tasks_profile_tls_") as files,
        tempfile.TemporaryDirectory(prefix="bus_tasks_profile_rabbit_") as base,
        tls_rabbit(Path(files), Path(base), VHOST) as rabbit,
    ):
        document = Path(files) / "definitions.json"
        deployment = Deployment(subsystems=(workload.SUBSYSTEM,), aggregators=(AGGREGATOR,), vhost=VHOST)
        document.write_text(json.dumps(definitions(deployment)))
        rabbit.node.import_definitions(document, vhost=VHOST, users={workload.SUBSYSTEM, AGGREGATOR})

        def settings_of(identity: str) -> Settings:
            return rabbit.settings(identity, identity="broker", aggregators=[AGGREGATOR])

        yield settings_of(workload.SUBSYSTEM), settings_of(AGGREGATOR)


def profiled_read(
    url: str, end: int, settings: Settings | None, *, profile: cProfile.Profile | None, serve_gc: bool = True
) -> tuple[float, float]:
    """A new aggregator reads the log to ``end`` (under ``profile`` if given); returns the CPU
    seconds of this thread and the wall seconds of its run (start-up included). With
    ``settings``, it runs as serve runs it: with ``wiring.serve_gc`` unless not ``serve_gc``."""
    with tempfile.TemporaryDirectory(prefix="bus_tasks_profile_") as data_dir:
        inner, _ = default_store(Path(data_dir))
        aggregator: Aggregator
        store = CountingStore(inner, lambda: aggregator.view.revision, end)
        tuned: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if settings is None:
            aggregator = Aggregator(transport.open(url), store=store, policy=AggregatorPolicy())
        else:
            aggregator = wiring.aggregator(settings, store=store)
            if serve_gc:
                tuned = wiring.serve_gc()
        stop = threading.Event()

        def stop_when_done() -> None:
            store.done.wait(DRAIN_TIMEOUT_S)
            stop.set()

        watcher = threading.Thread(target=stop_when_done, daemon=True)
        watcher.start()
        cpu_at, wall_at = time.thread_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        with tuned:
            aggregator.run(stop)
        if profile is not None:
            profile.disable()
        cpu_s, wall_s = time.thread_time() - cpu_at, time.perf_counter() - wall_at
        watcher.join()
    check(aggregator.view.revision == end, f"read to revision {aggregator.view.revision} of {end}")
    return cpu_s, wall_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ingest", description=__doc__)
    parser.add_argument("--tls", action="store_true", help='TLS node of its own, identity = "broker"')
    parser.add_argument("--tasks", type=int, default=4_000, help="tasks of three events each")
    parser.add_argument("--top", type=int, default=30, help="functions to print")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    parser.add_argument("--out", type=Path, help="also save the profile there (pstats format)")
    parser.add_argument(
        "--python-gc", action="store_true", help="with --tls: Python's GC thresholds, not serve's"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="without cProfile: for a sampling profiler (py-spy)"
    )
    args = parser.parse_args(argv)
    bodies = list(workload.bodies(args.tasks))
    profile = None if args.no_profile else cProfile.Profile()
    if args.tls:
        with tls_settings() as (publisher, aggregator):
            end = fill(aggregator.broker, bodies, settings=publisher)
            cpu_s, wall_s = profiled_read(
                aggregator.broker, end, aggregator, profile=profile, serve_gc=not args.python_gc
            )
    else:
        with rabbitmq_vhost("profile") as url:
            new_log(url)
            end = fill(url, bodies)
            cpu_s, wall_s = profiled_read(url, end, None, profile=profile)
    under = "" if profile is None else " under cProfile"
    print(f"{end:,} events: aggregator thread CPU {cpu_s / end * 1e6:.1f} us/event{under},")
    print(f"wall {wall_s:.2f} s, start-up and shutdown included")
    if profile is not None:
        if args.out is not None:
            profile.dump_stats(args.out)
        pstats.Stats(profile).strip_dirs().sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
