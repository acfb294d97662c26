"""How a task is a row of the SQLite store (schema 2), and the migration of a schema-1 file.

Schema 1 kept a task as ``(id, seq, details)``: a load decoded every row's TaskDetails JSON to
build the view's entry, ~2.2 us of a restart's ~6 per task. Schema 2 keeps beside ``details``
what the entry needs, as columns, so that a load decodes no JSON:

- ``kind``: ``["<subsystem>", "<verb>", "<state>", ["<tag>", ...]]`` as JSON text. A view has few
  distinct ones (tens, where it has a million tasks), so a load decodes each once and every task
  of that kind shares its strings and its tags' tuple, as the view keeps them anyway.
- ``code``, ``updated_at`` (epoch seconds, the entry's float), ``message``.

``details`` stays the TaskDetails bytes of the stored form (``store/form.py``), as in schema 1.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator

from bus_tasks import codec
from bus_tasks.core.model import State
from bus_tasks.core.view import Entry
from bus_tasks.errors import StoreUnusable
from bus_tasks.store.form import entry_from_details

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

TASKS_TABLE = """
CREATE TABLE {name} (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    details BLOB NOT NULL,
    kind TEXT NOT NULL,
    code INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    message TEXT NOT NULL
) WITHOUT ROWID
"""
TASKS_COLUMNS = ("id", "seq", "details", "kind", "code", "updated_at", "message")
SCHEMA_1_COLUMNS = ("id", "seq", "details")
OTHER_TABLES = (
    """CREATE TABLE IF NOT EXISTS tombstones (
        id TEXT PRIMARY KEY,
        subsystem TEXT NOT NULL,
        seq INTEGER NOT NULL,
        cleared_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

# The same rules as the Redis store: a tombstone blocks the put, a lower seq never replaces a higher.
PUT = """
INSERT INTO tasks (id, seq, details, kind, code, updated_at, message)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE id = ?1)
ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, details = excluded.details, kind = excluded.kind,
    code = excluded.code, updated_at = excluded.updated_at, message = excluded.message
WHERE excluded.seq > tasks.seq
"""
# The order ``entries`` reads them in.
SELECT = "SELECT id, seq, kind, code, updated_at, message, details FROM tasks"

Row = tuple[str, int, bytes, str, int, float, str]
Kind = tuple[str, str, tuple[str, ...], State]

# Distinct kinds a load decodes once each; past it (tags unique to each task, say) a kind is
# decoded for each row, which still costs less than a whole TaskDetails.
MAX_KINDS = 4096
_STATES = {state.value: state for state in State}  # a dict lookup: State(value) costs ~1 us


def row_of(entry: Entry) -> Row:
    """The ``PUT`` parameters of ``entry``."""
    kind = codec.dumps([entry.subsystem, entry.verb, entry.state, entry.tags]).decode()
    return (entry.id, entry.seq, entry.details, kind, entry.code, entry.updated_at, entry.message)


def entries(rows: Iterable[tuple[str, int, str, int, float, str, bytes]]) -> Iterator[Entry]:
    """The view's entries of the rows of :data:`SELECT`: a restart's hot path, a million rows."""
    kinds: dict[str, Kind] = {}
    for task_id, seq, kind, code, updated_at, message, details in rows:
        found = kinds.get(kind)
        if found is None:
            found = _decode_kind(kind)
            if len(kinds) < MAX_KINDS:
                kinds[kind] = found
        subsystem, verb, tags, state = found
        # Ids are canonical UUIDs (ASCII, nothing to escape): the member's key needs no encoder.
        member = b'"%b":%b' % (task_id.encode(), details)
        yield Entry(task_id, seq, subsystem, verb, tags, state, code, updated_at, message, member)


def _decode_kind(kind: str) -> Kind:
    subsystem, verb, state, tags = codec.loads(kind)
    # One copy of each subsystem and verb for the whole view, as Entry.from_record keeps.
    return sys.intern(subsystem), sys.intern(verb), tuple(tags), _STATES[state]


def columns(db: sqlite3.Connection) -> tuple[str, ...]:
    """The columns of the ``tasks`` table, in order; empty when there is none."""
    return tuple(row[1] for row in db.execute("PRAGMA table_info(tasks)"))


def migrate_from_1(db: sqlite3.Connection, store: str) -> None:
    """Rewrite a schema-1 ``tasks`` table as schema 2, inside the caller's transaction.

    Each row's columns are read from its TaskDetails as a schema-1 load did; ``id``, ``seq`` and
    ``details`` are kept as they are. Killed midway, the transaction is rolled back when the file
    is next opened: the table is schema 1 again, and the next open migrates it from the start.

    Raises:
        StoreUnusable: when a row's TaskDetails cannot be read (nothing is changed then).
    """
    count = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
    log.info(
        "%s: migrating %d tasks from schema 1 to schema %d (once, in one transaction)",
        store,
        count,
        SCHEMA_VERSION,
    )
    began = time.monotonic()
    db.execute("ALTER TABLE tasks RENAME TO tasks_schema_1")
    db.execute(TASKS_TABLE.format(name="tasks"))
    rows = db.execute("SELECT id, seq, details FROM tasks_schema_1")
    db.executemany(
        "INSERT INTO tasks (id, seq, details, kind, code, updated_at, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (_migrated(task_id, seq, bytes(details), store) for task_id, seq, details in rows),
    )
    db.execute("DROP TABLE tasks_schema_1")
    log.info(
        "%s: %d tasks migrated to schema %d in %.1f s", store, count, SCHEMA_VERSION, time.monotonic() - began
    )


def _migrated(task_id: str, seq: int, details: bytes, store: str) -> Row:
    try:
        entry = entry_from_details(details, seq)
    except (ValueError, KeyError, TypeError) as exc:  # not JSON, or not TaskDetails
        raise StoreUnusable(store, f"task {task_id} cannot be migrated to schema 2: {exc!r}") from None
    _, _, _, kind, code, updated_at, message = row_of(entry)
    return (task_id, seq, details, kind, code, updated_at, message)
