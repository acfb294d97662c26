"""Persistence of the view: the aggregator acks an event only after its store has committed it."""

from __future__ import annotations

from typing import Protocol

from bus_tasks.view import Entry, TaskView, Tombstone


class Store(Protocol):
    """Where the view survives a restart. Writes are buffered until :meth:`commit`."""

    def load(self, view: TaskView) -> int:
        """Fill ``view`` from the store; returns the number of live tasks loaded."""
        ...

    def put(self, entry: Entry) -> None: ...

    def bury(self, task_id: str, tombstone: Tombstone) -> None: ...

    def forget(self, task_id: str) -> None: ...

    def commit(self) -> None:
        """Make every buffered write durable."""
        ...

    def close(self) -> None: ...


class NullStore:
    """Keeps nothing: a restarted aggregator rebuilds its view from resync alone."""

    def __str__(self) -> str:
        return "no store"

    def load(self, view: TaskView) -> int:
        return 0

    def put(self, entry: Entry) -> None:
        pass

    def bury(self, task_id: str, tombstone: Tombstone) -> None:
        pass

    def forget(self, task_id: str) -> None:
        pass

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass
