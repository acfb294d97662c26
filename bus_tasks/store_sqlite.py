"""The default store: one SQLite file in the data directory, written once per batch of events."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from bus_tasks.store import BufferedStore
from bus_tasks.view import Entry, TaskView, Tombstone

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_SEQ = (1 << 63) - 1  # SQLite's INTEGER

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    details BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tombstones (
    id TEXT PRIMARY KEY,
    subsystem TEXT NOT NULL,
    seq INTEGER NOT NULL,
    cleared_at REAL NOT NULL
) WITHOUT ROWID;
"""

# The same rules as the Redis store: a tombstone blocks the put, a lower seq never replaces a higher.
_PUT = """
INSERT INTO tasks (id, seq, details)
SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE id = ?1)
ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, details = excluded.details
WHERE excluded.seq > tasks.seq
"""
_BURY = "INSERT OR REPLACE INTO tombstones (id, subsystem, seq, cleared_at) VALUES (?, ?, ?, ?)"
_DROP_TASK = "DELETE FROM tasks WHERE id = ?"
_FORGET = "DELETE FROM tombstones WHERE id = ?"


class SqliteStore(BufferedStore):
    """The view in a local SQLite file; one process, used by one thread at a time.

    Args:
        path: the database file; its directory is created if missing.
    """

    max_seq = MAX_SEQ

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__()
        # Created by the thread that builds the aggregator, used by the thread that runs it.
        # isolation_level=None: transactions are begun and committed here, explicitly.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    def __str__(self) -> str:
        return f"sqlite {self.path}"

    __repr__ = __str__

    def _setup(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this bus_tasks knows "
                f"({SCHEMA_VERSION})"
            )
        # WAL with synchronous=NORMAL: a commit is in the WAL file (the OS page cache) before
        # commit() returns, so a kill -9 of this process loses nothing committed. Only an OS
        # crash or power loss can drop the last commits (no fsync per transaction); resync of
        # the subsystems heals the view from that.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def load(self, view: TaskView) -> int:
        """Fill ``view`` from the file; returns the number of live tasks loaded."""
        before = len(view)
        for task_id, subsystem, seq, cleared_at in self._db.execute(
            "SELECT id, subsystem, seq, cleared_at FROM tombstones"
        ):
            view.restore_tombstone(task_id, Tombstone(subsystem=subsystem, seq=seq, cleared_at=cleared_at))
        for seq, details in self._db.execute("SELECT seq, details FROM tasks"):
            view.restore(Entry.from_details(bytes(details), seq))
        return len(view) - before

    def commit(self) -> None:
        """Write the buffer in one transaction; on failure it stays buffered and nothing is written."""
        if not self._buffer:
            return
        buried = self._buffer.buried()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_BURY, [(i, t.subsystem, t.seq, t.cleared_at) for i, t in buried])
            db.executemany(_DROP_TASK, [(i,) for i, _ in buried])
            db.executemany(_FORGET, [(i,) for i in self._buffer.forgotten()])
            db.executemany(_PUT, [(e.id, e.seq, e.details) for e in self._buffer.puts.values()])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._buffer.clear()

    def close(self) -> None:
        """Close the file; writes not committed are dropped (their events were not acked)."""
        if self._buffer:
            log.info("%s closed with %d uncommitted writes", self, len(self._buffer))
        self._db.close()
