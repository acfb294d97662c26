"""Retention: done tasks nobody clears, and tombstones, leave after their time; memory stays bounded."""

from __future__ import annotations

import logging
import time

from bus_tasks.aggregator.ingest import Ingest
from bus_tasks.aggregator.relay import ControlRelay
from bus_tasks.core.view import TaskView

log = logging.getLogger(__name__)


class Retention:
    """Every ``every_s``, buries done tasks older than ``done_ttl_s`` (their subsystem is told)
    and forgets tombstones older than ``tombstone_ttl_s``."""

    def __init__(
        self,
        view: TaskView,
        ingest: Ingest,
        relay: ControlRelay,
        *,
        done_ttl_s: float | None,
        tombstone_ttl_s: float,
        every_s: float,
    ) -> None:
        self.view = view
        self.ingest = ingest
        self.relay = relay
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
        store = self.ingest.store
        expired = self.view.expire(tombstone_ttl_s=self.tombstone_ttl_s, done_ttl_s=self.done_ttl_s)
        for task_id in expired.buried:
            tombstone = self.view.tombstones[task_id]
            store.bury(task_id, tombstone)
            # Its subsystem drops its copy too, so no later resync can bring the task back.
            self.relay.tell_cleared(task_id, tombstone.subsystem)
        for task_id in expired.forgotten:
            store.forget(task_id)
        if expired.buried or expired.forgotten:
            self.ingest.commit()  # on failure it stays buffered: written with the next commit
            log.info("expired %d done tasks and %d tombstones", len(expired.buried), len(expired.forgotten))
