"""A prototype of the one-hop watch (docs/watching.md, "Why two hops"), for measurement only: a
watcher that reads the event log itself and applies each event with the pure core, as the
aggregator does, instead of following the aggregator's change feed.

It lists once over RPC (``Host.getTaskChanges``), then consumes the stream from the listing's
revision (the next offset to read) and applies every event to a :class:`TaskView` of its own;
each applied event is one ``changed`` (its TaskDetails decoded, as a watch event carries them).
Not a product path: no identity checks, no tombstones from before the listing, no announces'
reconciliation, no failover; what it does per event is a lower bound of what a real one would do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from bus_tasks import codec, transport
from bus_tasks.client import TasksClient
from bus_tasks.config import DEFAULT_MAX_EVENT_BYTES
from bus_tasks.core.model import ANNOUNCED, decode_event
from bus_tasks.core.view import Outcome, TaskView
from bus_tasks.errors import EventRejected
from bus_tasks.protocol.methods import MethodName
from bus_tasks.transport import Delivery

ACK_EVERY = 64  # a stream consumer must settle deliveries for its credit to flow


class LogReader:
    """One one-hop watcher on a connection of its own, drained by :meth:`run` in a thread.

    ``on_change(task_id, details)`` is called for every applied event (details decoded)."""

    def __init__(
        self, url: str, on_change: Callable[[str, dict[str, object]], None], *, since: int | None = None
    ) -> None:
        """``since``: read from this revision on without listing (0: from the log's first event)."""
        self.view = TaskView()
        self.applied = 0
        self.events = 0  # deliveries read
        # Decoding and applying only while armed: the bench measures the sides of its figure one
        # after the other in one process, and a disarmed reader takes no CPU from the others.
        # (Its view then misses the updates it skipped: harmless here, the highest seq wins.)
        self.armed = True
        self._on_change = on_change
        self._unacked: list[Delivery] = []
        self._client: TasksClient | None = None
        if since is None:
            self._client = TasksClient(transport.open(url))
            since = int(self._client.call(MethodName.GET_TASK_CHANGES, {"since": None})["revision"])
        self.revision = since
        self._conn = transport.open(url)
        self._conn.connect()
        self._conn.consume(
            self._conn.topology.events_source,
            self._on_event,
            prefetch=256,
            replay_from=lambda: self.revision if self.revision else "first",
        )

    def _on_event(self, delivery: Delivery) -> None:
        self.events += 1
        if delivery.position is not None:
            self.revision = delivery.position + 1
        self._unacked.append(delivery)
        if self.armed and not delivery.routing_key.endswith(f".{ANNOUNCED}"):
            try:
                event = decode_event(delivery.body, max_bytes=DEFAULT_MAX_EVENT_BYTES)
                outcome = self.view.apply(event)
            except EventRejected:
                outcome = Outcome.STALE
            if outcome is Outcome.APPLIED:
                self.applied += 1
                entry = self.view.get(event.task.id)
                self._on_change(entry.id, codec.loads(entry.details))
        if len(self._unacked) >= ACK_EVERY:
            self.settle()

    def settle(self) -> None:
        if self._unacked:
            self._conn.ack_all(self._unacked)
            self._unacked.clear()

    def run(self, stop: threading.Event, *, idle_s: float = 0.2) -> None:
        """Drain until ``stop``; settles whenever a drain brought nothing."""
        while not stop.is_set():
            if not self._conn.drain(idle_s if not self._unacked else 0.005):
                self.settle()

    def close(self) -> None:
        self._conn.close()
        if self._client is not None:
            self._client.close()
