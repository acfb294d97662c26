"""The one wiring helper of ``workers/``: from Settings to a bus connection, a store, policies, a stop."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from bus_tasks import transport
from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.aggregator.authorization import Authorization
from bus_tasks.aggregator.policy import ADMIT_ALL
from bus_tasks.config import Settings, redact_url
from bus_tasks.identity import off_warning
from bus_tasks.store import Store, open_store
from bus_tasks.subsystem.runner import Connect
from bus_tasks.transport import Bus, BusOptions, TopologyOptions
from bus_tasks.workers import systemd
from bus_tasks.workers.options import parse_listen

if TYPE_CHECKING:
    from bus_tasks.frontdoors.http.running import HttpServer


def stop_on_signals(log: logging.Logger) -> threading.Event:
    """An event SIGTERM or SIGINT sets (logged on ``log``): the process's way to stop cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        systemd.notify(systemd.STOPPING)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


# The cyclic GC's thresholds while ``serve`` runs (generations 0, 1, 2; Python's are 700, 10, 10).
SERVE_GC_THRESHOLD = (50_000, 20, 100)


@contextmanager
def serve_gc() -> Iterator[None]:
    """The cyclic garbage collector set for an aggregator's ingest while the block runs.

    Each event leaves a few containers alive (its entry, the change feed's record) and makes
    dozens that reference counting frees; at Python's thresholds that is a young collection every
    ~100 events and, now and then, a full one through every object of the process (its modules,
    kombu, pydantic's schemas): about 8% of the aggregator thread's CPU at ingest. The aggregator
    makes almost no cycles (244 objects found by the collector in 12,000 events), so collecting
    less often keeps little garbage longer. Process-wide, so the composition root sets it (and
    the bench, to measure the aggregator as serve runs it), never the library.
    """
    before = gc.get_threshold()
    gc.set_threshold(*SERVE_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def warn_if_identity_off(settings: Settings, log: logging.Logger) -> None:
    """At start of a long-running process (serve, stomp, simulate, gluster): one warning line when
    nothing checks who publishes (identity off, a shared broker)."""
    line = off_warning(settings.identity, settings.broker.partition("://")[0])
    if line is not None:
        log.warning("%s", line)


def connect(
    settings: Settings,
    *,
    confirm_publish: bool = False,
    stop: threading.Event | None = None,
    connect_retries: int | None = None,
) -> Bus:
    """A connection to the broker of ``settings``; ``connect_retries=None`` retries until ``stop``."""
    options = BusOptions(
        confirm_publish=confirm_publish,
        heartbeat_s=settings.heartbeat_s,
        connect_timeout_s=settings.connect_timeout_s,
        connect_retries=connect_retries,
        redis_key_prefix=settings.redis_key_prefix,
        topology=topology_options(settings),
        login=settings.broker_login,
    )
    return transport.open(settings.broker, options, stop=stop)


def connector(settings: Settings, stop: threading.Event) -> Connect:
    """:func:`connect` as a subsystem runner and a plugin ask for connections: every wait for the
    broker ends at ``stop``."""

    def connect_here(*, confirm_publish: bool = False, connect_retries: int | None = None) -> Bus:
        return connect(settings, confirm_publish=confirm_publish, stop=stop, connect_retries=connect_retries)

    return connect_here


def topology_options(settings: Settings) -> TopologyOptions:
    """How the deployment of ``settings`` lays out its queues (every process must agree)."""
    return TopologyOptions(
        event_log=settings.event_log,
        log_max_age=settings.event_log_max_age,
        queue_type=settings.queue_type,
        replica=settings.aggregator_name,
        # Least-privilege users (broker-setup) may not declare: the topology exists beforehand.
        predeclared=settings.identity == "broker",
    )


def aggregator_policy(settings: Settings) -> AggregatorPolicy:
    """The aggregator's limits and timings that ``settings`` tell; the others keep their defaults."""
    return AggregatorPolicy(
        prefetch_count=settings.prefetch_count,
        max_event_bytes=settings.max_event_bytes,
        max_request_bytes=settings.max_request_bytes,
        max_reply_bytes=settings.max_reply_bytes,
        max_batch_calls=settings.max_batch_calls,
        done_ttl_s=settings.done_ttl_s,
        tombstone_ttl_s=settings.tombstone_ttl_s,
        test_subsystem=settings.test_subsystem,
        name=settings.aggregator_name,
        trust=settings.trust,
    )


def aggregator(
    settings: Settings, *, store: Store | None = None, stop: threading.Event | None = None
) -> Aggregator:
    """The aggregator of ``bus-tasks serve``, with the store ``settings`` name unless given one."""
    # Confirmed publishes: dead letters and clear notifications are confirmed before their acks.
    connection = connect(settings, confirm_publish=True, stop=stop)
    store = store if store is not None else open_store(settings)
    on = settings.authorization == "on"
    return Aggregator(
        connection,
        store=store,
        policy=aggregator_policy(settings),
        call_policy=Authorization(settings.roles) if on else ADMIT_ALL,
        front_doors=frozenset(settings.front_doors) if on else None,
    )


def warn_if_authorization_off(settings: Settings, log: logging.Logger) -> None:
    """At start: one warning line when anyone who reaches a door may call anything (SPEC 16), or
    when the identities cannot be believed (Redis)."""
    scheme = settings.broker.partition("://")[0].lower()
    if settings.authorization == "off" and scheme != "memory":
        log.warning(
            'authorization = "off": anyone who reaches the broker or a front door may stop, revert,'
            " clear and retag any task (docs/authorization.md)"
        )
    elif settings.authorization == "on" and scheme in ("redis", "rediss"):
        log.warning(
            'authorization = "on" on Redis: nothing validates a request\'s user_id there, so a'
            " hostile client can call as anybody (docs/authorization.md)"
        )


def http_server(settings: Settings, aggregator: Aggregator, *, stop: threading.Event) -> HttpServer:
    """``serve --http``'s front door: its own loop, RPC connection and watch, beside ``aggregator``
    (of which it reads only thread-safe facts: ready, connected, the metrics registry)."""
    # Only serve --http loads aiohttp: every other command starts faster.
    from bus_tasks.frontdoors.http.access import HttpAccess  # noqa: PLC0415
    from bus_tasks.frontdoors.http.running import ServingHealth, serving_beside  # noqa: PLC0415
    from bus_tasks.frontdoors.http.server import HttpOptions  # noqa: PLC0415
    from bus_tasks.frontdoors.http.sse import SseTimings  # noqa: PLC0415

    host, port = parse_listen(settings.http_listen)
    options = HttpOptions(
        control_token=settings.http_token if settings.http_control else None,
        access=HttpAccess(settings.http_tokens, settings.roles) if settings.authorization == "on" else None,
        sse=SseTimings(write_timeout_s=settings.http_idle_timeout_s),
        listing_timeout_s=settings.rpc_timeout_s,
        max_watchers=settings.http_max_watchers,
        max_body_bytes=settings.http_max_body_bytes,
        idle_timeout_s=settings.http_idle_timeout_s,
    )
    return serving_beside(
        ServingHealth(aggregator.ready, aggregator.connected),
        aggregator.metrics.registry,
        lambda: connect(settings, stop=stop),
        host=host,
        port=port,
        rpc_timeout_s=settings.rpc_timeout_s,
        options=options,
        broker=redact_url(settings.broker),
        trust=settings.trust,
    )
