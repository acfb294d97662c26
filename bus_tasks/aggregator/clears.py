"""Clears travel over the bus: a task cleared by one aggregator is a ``cleared`` event for all.

Whatever removes a task from the view (``Task.clear``, ``clear --force``, retention's expiry)
buries it here at once, stores the tombstone, publishes the ``cleared`` event every aggregator
on the broker applies (this one finds its tombstone already there), and tells the owner, which
drops its own copy.
"""

from __future__ import annotations

import logging
from collections import Counter

from bus_tasks import codec, names
from bus_tasks.aggregator.ingest import Ingest
from bus_tasks.aggregator.relay import ControlRelay
from bus_tasks.core.model import Event
from bus_tasks.core.view import Entry, Tombstone
from bus_tasks.protocol.shapes import record_from_details
from bus_tasks.transport import Bus

log = logging.getLogger(__name__)


class Clears:
    """Spreads the removal of tasks: the tombstone stored, the event published, the owner told."""

    def __init__(self, connection: Bus, ingest: Ingest, relay: ControlRelay, counts: Counter[str]) -> None:
        self.connection = connection
        self.ingest = ingest
        self.relay = relay
        self.counts = counts

    def spread(self, entries: list[Entry], tombstones: dict[str, Tombstone], *, why: str) -> None:
        """``entries`` were just buried in this view (their tombstones in ``tombstones``)."""
        store = self.ingest.store
        for entry in entries:
            store.bury(entry.id, tombstones[entry.id])
            self.ingest.feed.removed_here(entry.id, entry.tags)
        # On failure the tombstones stay buffered and are written with the next commit that works.
        self.ingest.commit()
        for entry in entries:
            record = record_from_details(codec.loads(entry.details))
            event = Event(event="cleared", seq=entry.seq, task=record)
            cleared_by = tombstones[entry.id].cleared_by  # a call's: its repeat finds it cleared
            self.connection.publish(
                event.model_dump_json(by_alias=True).encode(),
                exchange=names.EVENTS_EXCHANGE,
                routing_key=names.event_routing_key(entry.subsystem, "cleared"),
                headers=None if cleared_by is None else {names.HEADER_CLEARED_BY: cleared_by},
            )
            self.relay.tell_cleared(entry.id, entry.subsystem)
        self.counts[why] += len(entries)
