"""Composition root of ``bus-tasks serve``: wire the aggregator from settings and run it."""

from __future__ import annotations

import logging
import threading

from bus_tasks.config import Settings
from bus_tasks.errors import StoreUnavailable
from bus_tasks.store import DataDirLock
from workers import wiring

log = logging.getLogger("bus_tasks.serve")


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status."""
    stop = wiring.stop_on_signals(log)
    lock = DataDirLock(settings.data_dir)
    # One data directory, one process: a second serve on it would fight over the file.
    if settings.store == "sqlite" and not _lock(lock, stop):
        log.info("stopped before the data directory could be locked")
        return 0
    try:
        wiring.aggregator(settings, stop=stop).run(stop)
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
