"""Persistence of the view: the aggregator acks an event only after its store has committed it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import ClassVar, Protocol

from bus_tasks.core.view import Entry, TaskView, Tombstone
from bus_tasks.errors import DataDirInUse, StoreUnavailable

SQLITE_FILE = "view.sqlite3"


class Store(Protocol):
    """Where the view survives a restart. Writes are buffered until :meth:`commit`."""

    def load(self, view: TaskView) -> int:
        """Fill ``view`` from the store, its revision too; returns the number of live tasks loaded."""
        ...

    def put(self, entry: Entry) -> None: ...

    def mark(self, revision: int) -> None:
        """The event log's position the buffered writes bring the view up to; committed with
        them, in the same transaction, so a restart goes on from exactly there."""
        ...

    def bury(self, task_id: str, tombstone: Tombstone) -> None: ...

    def forget(self, task_id: str) -> None: ...

    def commit(self) -> None:
        """Make every buffered write durable; on failure they stay buffered.

        Raises:
            StoreUnavailable: when the backend cannot take them now (retry later).
        """
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

    def mark(self, revision: int) -> None:
        pass

    def bury(self, task_id: str, tombstone: Tombstone) -> None:
        pass

    def forget(self, task_id: str) -> None:
        pass

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


class WriteBuffer:
    """The writes since the last commit, one per id, with the rules every store applies.

    A stored put never replaces a higher ``seq`` and never passes a tombstone; a commit writes
    tombstone changes first, then puts, so "forgotten then put again" in one batch ends live.
    """

    def __init__(self) -> None:
        self.puts: dict[str, Entry] = {}
        self.graves: dict[str, Tombstone | None] = {}  # None: forget the tombstone
        self.revision: int | None = None  # the log position to store with them

    def __len__(self) -> int:
        return len(self.puts) + len(self.graves) + (self.revision is not None)

    def mark(self, revision: int) -> None:
        if self.revision is None or revision > self.revision:
            self.revision = revision

    def put(self, entry: Entry) -> None:
        if self.graves.get(entry.id) is not None:
            return  # buried in this batch: the tombstone wins
        current = self.puts.get(entry.id)
        if current is None or entry.seq >= current.seq:
            self.puts[entry.id] = entry

    def bury(self, task_id: str, tombstone: Tombstone) -> None:
        self.puts.pop(task_id, None)
        self.graves[task_id] = tombstone

    def forget(self, task_id: str) -> None:
        self.graves[task_id] = None

    def buried(self) -> list[tuple[str, Tombstone]]:
        return [(task_id, t) for task_id, t in self.graves.items() if t is not None]

    def forgotten(self) -> list[str]:
        return [task_id for task_id, t in self.graves.items() if t is None]

    def clear(self) -> None:
        self.puts.clear()
        self.graves.clear()
        self.revision = None


class BufferedStore:
    """What every real store shares: writes gather in a :class:`WriteBuffer` until ``commit()``."""

    max_seq: ClassVar[int]  # the largest seq the backend can hold

    def __init__(self) -> None:
        self._buffer = WriteBuffer()

    def put(self, entry: Entry) -> None:
        if entry.seq > self.max_seq:
            raise ValueError(f"task {entry.id}: seq {entry.seq} does not fit the store (max {self.max_seq})")
        self._buffer.put(entry)

    def bury(self, task_id: str, tombstone: Tombstone) -> None:
        self._buffer.bury(task_id, tombstone)

    def forget(self, task_id: str) -> None:
        self._buffer.forget(task_id)

    def mark(self, revision: int) -> None:
        self._buffer.mark(revision)


LOCK_FILE = "lock"


class DataDirLock:
    """An exclusive lock on a data directory: one ``serve`` per directory.

    ``flock`` is released by the kernel when its process dies, so a killed process never leaves
    it stuck; the file keeps the holder's pid for the message of the next one.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            DataDirInUse: when another process holds it.
            StoreUnavailable: when the directory or its lock file cannot be made.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreUnavailable(str(self.path.parent), f"cannot lock: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "pid unknown"
            os.close(fd)
            raise DataDirInUse(str(self.path.parent), holder) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk: the lock holds all the same, only its note is missing
            pass
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
