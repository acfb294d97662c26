"""The default store: one SQLite file in the data directory, written once per batch of events."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from bus_tasks import codec
from bus_tasks.core.view import TaskView, Tombstone
from bus_tasks.errors import StoreUnavailable, StoreUnusable
from bus_tasks.store.base import BufferedStore
from bus_tasks.store.form import STORED_FORM, check_form
from bus_tasks.store.sqlite_rows import (
    OTHER_TABLES,
    PUT,
    SCHEMA_1_COLUMNS,
    SCHEMA_VERSION,
    SELECT,
    TASKS_COLUMNS,
    TASKS_TABLE,
    columns,
    entries,
    migrate_from_1,
    row_of,
)

log = logging.getLogger(__name__)

MAX_SEQ = (1 << 63) - 1  # SQLite's INTEGER

_BURY = "INSERT OR REPLACE INTO tombstones (id, subsystem, seq, cleared_at) VALUES (?, ?, ?, ?)"
_DROP_TASK = "DELETE FROM tasks WHERE id = ?"
_FORGET = "DELETE FROM tombstones WHERE id = ?"
# The log position goes forward only (a replayed batch never takes it back).
_MARK = """
INSERT INTO meta (key, value) VALUES ('revision', ?1)
ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE excluded.value > meta.value
"""


class SqliteStore(BufferedStore):
    """The view in a local SQLite file; one process, used by one thread at a time.

    The file is opened on first use, and opened again after a failed commit (a data directory
    that was read-only or full may be fine again). Errors of the disk come out as
    :class:`StoreUnavailable` (retry later), a file that is not a bus_tasks database as
    :class:`StoreUnusable`.

    Args:
        path: the database file; its directory is created if missing.
    """

    max_seq = MAX_SEQ

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__()
        self._conn: sqlite3.Connection | None = None

    def __str__(self) -> str:
        return f"sqlite {self.path}"

    __repr__ = __str__

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        with self._errors("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Opened by the thread that builds the aggregator, used by the thread that runs it.
            # isolation_level=None: transactions are begun and committed here, explicitly.
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                self._setup(db)
            except BaseException:
                db.close()
                raise
            return db

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn the errors of the file into the store's: unusable, or unavailable for now."""
        try:
            yield
        except sqlite3.OperationalError as exc:  # locked, read-only, full, cannot open ...
            raise StoreUnavailable(str(self), f"{doing}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # not a database, malformed
            raise StoreUnusable(
                str(self), f"{exc} (move it away to start afresh; resync rebuilds it)"
            ) from exc
        except OSError as exc:  # the directory cannot be made
            raise StoreUnavailable(str(self), f"{doing}: {exc}") from exc

    def _setup(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreUnusable(
                str(self), f"schema version {version} is newer than this bus_tasks knows ({SCHEMA_VERSION})"
            )
        # WAL with synchronous=NORMAL: a commit is in the WAL file (the OS page cache) before
        # commit() returns, so a kill -9 of this process loses nothing committed. Only an OS
        # crash or power loss can drop the last commits (no fsync per transaction); resync of
        # the subsystems heals the view from that.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # One transaction: a file is made, or migrated, whole or not at all.
        db.execute("BEGIN IMMEDIATE")
        try:
            self._prepare(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Make the tables of a new file, or migrate those of a schema-1 file (see ``sqlite_rows``)."""
        for statement in OTHER_TABLES:
            db.execute(statement)
        row = db.execute("SELECT value FROM meta WHERE key = 'form'").fetchone()
        check_form(None if row is None else int(row[0]), str(self))
        found = columns(db)
        if not found:
            db.execute(TASKS_TABLE.format(name="tasks"))
        elif found == SCHEMA_1_COLUMNS:
            migrate_from_1(db, str(self))
        elif found != TASKS_COLUMNS:
            raise StoreUnusable(str(self), f"its tasks table has columns {found}, not a bus_tasks store's")
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('form', ?)", (STORED_FORM,))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def load(self, view: TaskView) -> int:
        """Fill ``view`` from the file; returns the number of live tasks loaded."""
        before = len(view)
        with self._errors("load"), codec.gc_paused():
            db = self._db
            for task_id, subsystem, seq, cleared_at in db.execute(
                "SELECT id, subsystem, seq, cleared_at FROM tombstones"
            ):
                view.restore_tombstone(
                    task_id, Tombstone(subsystem=subsystem, seq=seq, cleared_at=cleared_at)
                )
            view.restore_all(entries(db.execute(SELECT)))
            row = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
            if row is not None:
                view.revision = max(view.revision, int(row[0]))
        return len(view) - before

    def commit(self) -> None:
        """Write the buffer in one transaction; on failure it stays buffered and nothing is written.

        Raises:
            StoreUnavailable: when the file cannot be written now (it is opened again next time).
        """
        if not self._buffer:
            return
        buried = self._buffer.buried()
        try:
            with self._errors("commit"):
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(_BURY, [(i, t.subsystem, t.seq, t.cleared_at) for i, t in buried])
                    db.executemany(_DROP_TASK, [(i,) for i, _ in buried])
                    db.executemany(_FORGET, [(i,) for i in self._buffer.forgotten()])
                    db.executemany(PUT, [row_of(e) for e in self._buffer.puts.values()])
                    if self._buffer.revision is not None:
                        db.execute(_MARK, (self._buffer.revision,))
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
        except StoreUnavailable:
            self._reopen_later()
            raise
        self._buffer.clear()

    def _reopen_later(self) -> None:
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the file; writes not committed are dropped (their events were not acked)."""
        if self._buffer:
            log.info("%s closed with %d uncommitted writes", self, len(self._buffer))
        if self._conn is not None:
            self._conn.close()
            self._conn = None
