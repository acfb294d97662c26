"""A store double for the public ``Store`` seam: it fails on command, as a full disk would."""

from __future__ import annotations

from bus_tasks.core.view import Entry, TaskView, Tombstone
from bus_tasks.errors import StoreUnavailable
from bus_tasks.store import BufferedStore


class SwitchableStore(BufferedStore):
    """Keeps committed writes in memory; while ``broken``, every commit fails as a full disk would.

    Counts the commits that worked (``commits``) and those that failed (``failed_commits``).
    """

    max_seq = 2**63 - 1  # as the real stores: a signed 64-bit integer

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.tasks: dict[str, Entry] = {}
        self.tombstones: dict[str, Tombstone] = {}
        self.commits = 0
        self.failed_commits = 0

    def __str__(self) -> str:
        return "switchable test store"

    def load(self, view: TaskView) -> int:
        return 0

    def commit(self) -> None:
        if self.broken:
            self.failed_commits += 1
            raise StoreUnavailable(str(self), "commit: database or disk is full")
        for task_id, tombstone in self._buffer.buried():
            self.tombstones[task_id] = tombstone
            self.tasks.pop(task_id, None)
        self.tasks.update(self._buffer.puts)
        self._buffer.clear()
        self.commits += 1

    def close(self) -> None:
        pass
