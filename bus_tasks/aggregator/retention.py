"""Retention: done tasks nobody clears, and tombstones, leave after their time; memory stays bounded."""

from __future__ import annotations

import logging
import time

from bus_tasks.aggregator.clears import Clears
from bus_tasks.aggregator.ingest import Ingest
from bus_tasks.core.view import TaskView

log = logging.getLogger(__name__)


class Retention:
    """Every ``every_s``, clears done tasks older than ``done_ttl_s`` (over the bus: every
    aggregator applies it, their subsystem is told) and forgets tombstones older than
    ``tombstone_ttl_s``.

    Ages are counted in the log's time (the latest time its events carry), not this process's
    clock: replicas at one position of the log decide alike. With nothing published at all (no
    events, no heartbeats), the log's time stands still and nothing expires.
    """

    def __init__(
        self,
        view: TaskView,
        ingest: Ingest,
        clears: Clears,
        *,
        done_ttl_s: float | None,
        tombstone_ttl_s: float,
        every_s: float,
    ) -> None:
        self.view = view
        self.ingest = ingest
        self.clears = clears
        self.done_ttl_s = done_ttl_s
        self.tombstone_ttl_s = tombstone_ttl_s
        self.every_s = every_s
        self._next = 0.0

    def tick(self, now: float | None = None) -> None:
        """Expire what is due, if the time has come and the store takes writes."""
        now = time.monotonic() if now is None else now
        if now < self._next or self.ingest.health.failing is not None:
            return
        self._next = now + self.every_s
        self.expire()

    def expire(self) -> None:
        view = self.view
        if not view.log_time:
            return  # the log has carried no time yet
        expired = view.expire(
            tombstone_ttl_s=self.tombstone_ttl_s, done_ttl_s=self.done_ttl_s, now=view.log_time
        )
        store = self.ingest.store
        for task_id in expired.forgotten:
            store.forget(task_id)
        if expired.entries:
            self.clears.spread(expired.entries, view.tombstones, why="expired")
        elif expired.forgotten:
            self.ingest.commit()  # on failure it stays buffered: written with the next commit
        if expired.buried or expired.forgotten:
            log.info("expired %d done tasks and %d tombstones", len(expired.buried), len(expired.forgotten))
