"""The SQLite store's schema 2 (the entry's fields as columns), and the migration of schema-1 files."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.factories import entry_of, make_event, make_record, records, task_id

from bus_tasks import codec
from bus_tasks.aggregator.methods import Dispatcher
from bus_tasks.core.model import State, TaskRecord
from bus_tasks.core.view import Entry, TaskView, Tombstone
from bus_tasks.errors import StoreUnusable
from bus_tasks.store.form import STORED_FORM, entry_from_details
from bus_tasks.store.sqlite import SqliteStore
from bus_tasks.store.sqlite_rows import SCHEMA_1_COLUMNS, SCHEMA_VERSION, TASKS_COLUMNS

# Schema 1 as the release before schema 2 made and wrote it (store/sqlite.py at e626478); the
# first release made the same tables but meta (test_store_form.py).
SCHEMA_1_TASKS = """
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
SCHEMA_1_META = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""
SCHEMA_1_PUT = """
INSERT INTO tasks (id, seq, details)
SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE id = ?1)
ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, details = excluded.details
WHERE excluded.seq > tasks.seq
"""
SCHEMA_1_BURY = "INSERT OR REPLACE INTO tombstones (id, subsystem, seq, cleared_at) VALUES (?, ?, ?, ?)"

FIELDS = Entry.__slots__


def write_schema_1(
    path: Path,
    entries: list[Entry],
    tombstones: dict[str, Tombstone] | None = None,
    *,
    revision: int | None = None,
    forms: bool = True,
) -> None:
    """A schema-1 view file, written with that release's SQL; without ``forms``, as the first
    release wrote it (no meta table)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA_1_TASKS + (SCHEMA_1_META if forms else "") + "PRAGMA user_version = 1;")
    db.execute("BEGIN")
    db.executemany(SCHEMA_1_PUT, [(e.id, e.seq, e.details) for e in entries])
    db.executemany(
        SCHEMA_1_BURY, [(i, t.subsystem, t.seq, t.cleared_at) for i, t in (tombstones or {}).items()]
    )
    if forms:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('form', 1)")
        if revision is not None:
            db.execute("INSERT INTO meta (key, value) VALUES ('revision', ?)", (revision,))
    db.execute("COMMIT")
    db.close()


def schema_1_load(path: Path) -> TaskView:
    """What a schema-1 release loaded from ``path``: every row's TaskDetails decoded."""
    view = TaskView()
    db = sqlite3.connect(path)
    for seq, details in db.execute("SELECT seq, details FROM tasks"):
        view.restore(entry_from_details(bytes(details), seq))
    db.close()
    return view


def fields(view: TaskView) -> dict[str, tuple[object, ...]]:
    return {e.id: tuple(getattr(e, f) for f in FIELDS) for e in view}


def file_state(path: Path) -> tuple[int, tuple[str, ...], list[tuple[object, ...]]]:
    """The schema version, the tasks table's columns and its rows, in id order."""
    db = sqlite3.connect(path)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        columns = tuple(row[1] for row in db.execute("PRAGMA table_info(tasks)"))
        rows = db.execute("SELECT * FROM tasks ORDER BY id").fetchall()
    finally:
        db.close()
    return version, columns, rows


def loaded(path: Path) -> TaskView:
    store = SqliteStore(path)
    view = TaskView()
    try:
        assert store.load(view) == len(view)
    finally:
        store.close()
    return view


def varied_entries() -> list[Entry]:
    """Tasks that differ in every field a row keeps: states, tags, codes, messages, times."""
    states = list(State)
    entries = []
    for n in range(1, 41):
        record = make_record(
            n,
            subsystem=("vdsm", "gluster", "x.y-z")[n % 3],
            verb=("copyImage", "rebalance", 'verb "with" quotes, ünïcode')[n % 3],
            tags=((), ("spm",), ("gluster", f"volume:gv{n % 4}"), ("a:b/c-d_e.f", "storage:sd1", "x"))[n % 4],
            state=states[n % len(states)],
            code=(0, 205, -1, 2**31)[n % 4],
            message=("", "done", "naïve ✓ \u0000 nul", "long " * 300)[n % 4],
            result={"n": n} if n % 2 else "",
            updated_at=f"2024-05-01T14:05:{n % 60:02d}.{n * 1234 % 10**6:06d}+02:00",
        )
        entries.append(entry_of(record, n * 1_000_000_007 % (1 << 62)))
    return entries


# -- schema 2 -----------------------------------------------------------------------------


def test_a_new_file_is_schema_2_and_its_rows_hold_the_entrys_fields(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite3"
    entry = entry_of(make_record(1, tags=("gluster", "volume:gv1"), state=State.FAILED, code=205), 9)
    store = SqliteStore(path)
    store.put(entry)
    store.commit()
    store.close()

    version, columns, rows = file_state(path)
    assert (version, columns) == (SCHEMA_VERSION, TASKS_COLUMNS) == (2, TASKS_COLUMNS)
    (row,) = rows
    assert dict(zip(columns, row, strict=True)) == {
        "id": entry.id,
        "seq": 9,
        "details": entry.details,
        "kind": '["vdsm","copyImage","failed",["gluster","volume:gv1"]]',
        "code": 205,
        "updated_at": entry.updated_at,
        "message": "running job 1 of 1",
    }


def test_a_put_that_replaces_a_row_replaces_every_column(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite3"
    store = SqliteStore(path)
    store.put(entry_of(make_record(1), 1))
    store.commit()
    newer = entry_of(
        make_record(1, tags=("x",), state=State.ABORTING, code=7, message="stopped", verb="v2"), 2
    )
    store.put(newer)
    store.commit()
    store.close()
    assert fields(loaded(path)) == {newer.id: tuple(getattr(newer, f) for f in FIELDS)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(found=st.lists(records, max_size=6, unique_by=lambda r: r.id), seq=st.integers(1, 2**63 - 1))
def test_any_record_loads_back_as_the_entry_that_was_put(
    tmp_path: Path, found: list[TaskRecord], seq: int
) -> None:
    path = tmp_path / f"{seq}.sqlite3"
    entries = [entry_of(record, seq) for record in found]
    store = SqliteStore(path)
    for entry in entries:
        store.put(entry)
    store.commit()
    store.close()
    assert fields(loaded(path)) == {e.id: tuple(getattr(e, f) for f in FIELDS) for e in entries}
    path.unlink()


def test_the_restored_view_answers_get_all_tasks_byte_identical_to_the_view_that_wrote_it(
    tmp_path: Path,
) -> None:
    # A listing lists the view's tasks in the order they came; a store loads them in id order.
    written = TaskView()
    for n in range(1, 301):
        tags = ("spm",) if n % 3 == 0 else ("gluster", f"volume:gv{n % 5}")
        written.apply(make_event(n, seq=1, event="created", tags=tags, message="", state=State.INIT))
        if n % 2:
            written.apply(make_event(n, seq=2, tags=tags, message=f"running job {n} ✓"))
        if n % 7 == 0:
            written.apply(make_event(n, seq=3, tags=tags, state=State.FAILED, code=205, message="no space"))
    for n in (10, 20, 30):
        written.clear(task_id(n), force=True)
    written.revision = 1234
    store = SqliteStore(tmp_path / "view.sqlite3")
    for entry in written:
        store.put(entry)
    for tid, tombstone in written.tombstones.items():
        store.bury(tid, tombstone)
    store.mark(written.revision)
    store.commit()
    store.close()

    restored = loaded(tmp_path / "view.sqlite3")

    queries: list[dict[str, object]] = [
        {},
        {"tags": ["spm"]},
        {"tags": ["gluster", "volume:gv1"], "options": {"match": "all"}},
        {"options": {"revision": True}},
    ]
    for params in queries:
        assert listing(restored, params) == listing(written, params), params
    assert fields(restored) == fields(written)
    assert restored.tombstones == written.tombstones
    assert dict(restored.tasks_by_state) == {k: v for k, v in written.tasks_by_state.items() if v}
    assert restored.log_time == written.log_time


def listing(view: TaskView, params: dict[str, object]) -> bytes:
    body = codec.dumps({"jsonrpc": "2.0", "id": 1, "method": "Host.getAllTasks", "params": params})
    reply = Dispatcher(view).handle(body)
    assert reply.body is not None
    assert b'"result"' in reply.body, reply.body
    return reply.body


# -- the migration from schema 1 --------------------------------------------------------------


@pytest.mark.parametrize("forms", [True, False], ids=["schema-1", "first-release"])
def test_a_schema_1_file_is_migrated_once_and_loads_every_task_as_schema_1_did(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, forms: bool
) -> None:
    path = tmp_path / "view.sqlite3"
    entries = varied_entries()
    graves = {
        task_id(900 + n): Tombstone(subsystem="vdsm", seq=n, cleared_at=1714564800.5 + n) for n in range(5)
    }
    write_schema_1(path, entries, graves, revision=77 if forms else None, forms=forms)
    before = fields(schema_1_load(path))
    assert before == {e.id: tuple(getattr(e, f) for f in FIELDS) for e in entries}

    with caplog.at_level(logging.INFO, logger="bus_tasks.store.sqlite_rows"):
        view = loaded(path)

    assert fields(view) == before
    assert view.tombstones == graves
    assert view.revision == (77 if forms else 0)
    version, columns, rows = file_state(path)
    assert (version, columns, len(rows)) == (2, TASKS_COLUMNS, len(entries))
    migrating = [r.getMessage() for r in caplog.records if "from schema 1" in r.getMessage()]
    assert migrating == [
        f"sqlite {path}: migrating {len(entries)} tasks from schema 1 to schema 2 (once, in one transaction)"
    ]
    assert any(f"{len(entries)} tasks migrated to schema 2" in r.getMessage() for r in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bus_tasks.store.sqlite_rows"):
        again = loaded(path)  # done once: the next open finds schema 2
    assert fields(again) == before
    assert [r for r in caplog.records if "schema" in r.getMessage()] == []
    assert file_state(path) == (version, columns, rows)


def test_a_migrated_store_takes_writes_with_the_rules_of_schema_1(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite3"
    write_schema_1(
        path,
        [entry_of(make_record(1), 5), entry_of(make_record(2), 5)],
        {task_id(3): Tombstone("vdsm", 1, 1.0)},
    )
    store = SqliteStore(path)
    store.load(TaskView())
    store.put(entry_of(make_record(1, message="older"), 4))  # a lower seq never replaces a higher
    store.put(entry_of(make_record(2, message="newer"), 6))
    store.put(entry_of(make_record(3), 9))  # a tombstone blocks the put
    store.commit()
    store.close()
    view = loaded(path)
    assert {e.id: (e.seq, e.message) for e in view} == {
        task_id(1): (5, "running job 1 of 1"),
        task_id(2): (6, "newer"),
    }


def test_a_row_that_cannot_be_migrated_stops_the_open_and_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite3"
    write_schema_1(path, varied_entries()[:5])
    db = sqlite3.connect(path)
    db.execute("UPDATE tasks SET details = ? WHERE id = ?", (b'{"id": "not TaskDetails"}', task_id(3)))
    db.commit()
    db.close()
    before = file_state(path)

    with pytest.raises(StoreUnusable, match=f"task {task_id(3)} cannot be migrated to schema 2"):
        loaded(path)

    assert file_state(path) == before
    assert before[:2] == (1, SCHEMA_1_COLUMNS)


def test_a_migration_killed_midway_is_rolled_back_and_done_whole_by_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite3"
    entries = [entry_of(make_record(n, message="m" * 900, data={"n": n}), n) for n in range(1, 4001)]
    write_schema_1(path, entries, revision=4000)
    before = file_state(path)
    # The migration reads each row's TaskDetails: the process dies as it reads the 3000th, with
    # the new table's pages already in the WAL (4,000 rows of ~1.9 kB pass SQLite's 2 MB cache).
    dies = textwrap.dedent(
        """
        import os, sys
        from bus_tasks.core.view import TaskView
        from bus_tasks.store import sqlite_rows
        from bus_tasks.store.sqlite import SqliteStore

        read = sqlite_rows.entry_from_details
        count = 0

        def dying(details, seq):
            global count
            count += 1
            if count == 3000:
                os._exit(9)
            return read(details, seq)

        sqlite_rows.entry_from_details = dying
        SqliteStore(sys.argv[1]).load(TaskView())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", dies, str(path)], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 9, done.stderr
    assert Path(f"{path}-wal").stat().st_size > 1_000_000, "the kill came before the migration wrote"

    assert file_state(path) == before  # the killed transaction is not in the file
    view = loaded(path)
    assert fields(view) == {e.id: tuple(getattr(e, f) for f in FIELDS) for e in entries}
    assert view.revision == 4000
    assert file_state(path)[:2] == (2, TASKS_COLUMNS)


def test_a_file_of_a_newer_schema_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite3"
    loaded(path)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreUnusable, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        loaded(path)
    assert file_state(path)[0] == SCHEMA_VERSION + 1


def test_a_tasks_table_of_another_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, payload BLOB)")
    db.commit()
    db.close()
    with pytest.raises(StoreUnusable, match=r"its tasks table has columns \('id', 'payload'\)"):
        loaded(path)


def test_the_stored_form_is_checked_before_a_migration(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite3"
    write_schema_1(path, varied_entries()[:3])
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'form'", (STORED_FORM + 1,))
    db.commit()
    db.close()
    before = file_state(path)
    with pytest.raises(StoreUnusable, match="newer than this bus_tasks reads"):
        loaded(path)
    assert file_state(path) == before
