"""Composition root of ``bus-tasks serve``: wire the aggregator from settings and run it."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.config import Settings
from bus_tasks.errors import StoreUnavailable
from bus_tasks.store import DataDirLock, Store, open_store
from bus_tasks.transport import BusConnection

log = logging.getLogger("bus_tasks.serve")


def build(settings: Settings, store: Store | None = None, stop: threading.Event | None = None) -> Aggregator:
    connection = BusConnection(
        settings.broker,
        confirm_publish=True,  # dead letters and clear notifications are confirmed before acks
        stop=stop,
        heartbeat_s=settings.heartbeat_s,
        connect_timeout_s=settings.connect_timeout_s,
        redis_key_prefix=settings.redis_key_prefix,
    )
    policy = AggregatorPolicy(
        prefetch_count=settings.prefetch_count,
        max_event_bytes=settings.max_event_bytes,
        max_request_bytes=settings.max_request_bytes,
        done_ttl_s=settings.done_ttl_s,
        tombstone_ttl_s=settings.tombstone_ttl_s,
    )
    store = store if store is not None else open_store(settings)
    return Aggregator(connection, store=store, policy=policy)


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lock = DataDirLock(settings.data_dir)
    # One data directory, one process: a second serve on it would fight over the file.
    if settings.store == "sqlite" and not _lock(lock, stop):
        log.info("stopped before the data directory could be locked")
        return 0
    try:
        build(settings, stop=stop).run(stop)
    finally:
        lock.release()
    return 0


def _lock(lock: DataDirLock, stop: threading.Event) -> bool:
    """Take the data directory's lock, waiting (with back-off) while it cannot be made; False if
    stopped first.

    Raises:
        DataDirInUse: when another process holds it.
    """
    delay_s = 0.5
    warned = False
    while True:
        try:
            lock.acquire()
            if warned:
                log.warning("data directory %s can be locked again", lock.path.parent)
            return True
        except StoreUnavailable as exc:
            if not warned:
                log.warning("%s; retrying", exc)
                warned = True
        if stop.wait(delay_s):
            return False
        delay_s = min(delay_s * 2, 5.0)
