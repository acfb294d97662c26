"""The stored form travels with the data: older stores load (and are marked), newer ones are refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import fakeredis
import pytest
from support.factories import entry_of, make_record, task_id

from bus_tasks.core.view import TaskView
from bus_tasks.errors import StoreUnusable
from bus_tasks.store.form import STORED_FORM
from bus_tasks.store.redis import RedisStore
from bus_tasks.store.sqlite import SqliteStore

PREFIX = "bus_tasks_test:form:"


def _sqlite_written_before_forms(path: Path) -> None:
    """A view file as the first release wrote it: the two tables, no record of the form."""
    entry = entry_of(make_record(1, message="from the first release"), 3)
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE tasks (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, details BLOB NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE tombstones (id TEXT PRIMARY KEY, subsystem TEXT NOT NULL, seq INTEGER NOT NULL,"
        " cleared_at REAL NOT NULL) WITHOUT ROWID; PRAGMA user_version = 1;"
    )
    db.execute("INSERT INTO tasks VALUES (?, ?, ?)", (entry.id, entry.seq, entry.details))
    db.commit()
    db.close()


def _sqlite_form(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT value FROM meta WHERE key = 'form'").fetchone()[0])
    finally:
        db.close()


def test_a_sqlite_store_written_before_forms_loads_and_is_marked_with_the_current_form(
    tmp_path: Path,
) -> None:
    path = tmp_path / "view.sqlite3"
    _sqlite_written_before_forms(path)
    store = SqliteStore(path)
    view = TaskView()
    assert store.load(view) == 1
    store.close()
    assert view.get(task_id(1)).message == "from the first release"
    assert _sqlite_form(path) == STORED_FORM


def test_a_sqlite_store_of_a_newer_form_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite3"
    SqliteStore(path).load(TaskView())  # a store of today's form
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'form'", (STORED_FORM + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreUnusable, match=f"stored form {STORED_FORM + 1}, newer than this bus_tasks"):
        SqliteStore(path).load(TaskView())
    assert _sqlite_form(path) == STORED_FORM + 1


def test_a_redis_store_without_a_form_loads_and_a_newer_form_is_refused() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    entry = entry_of(make_record(1), 5)
    client.hset(f"{PREFIX}tasks", entry.id, b"%020d:%b" % (entry.seq, entry.details))
    store = RedisStore.from_client(fakeredis.FakeRedis(server=server), PREFIX)
    view = TaskView()
    assert store.load(view) == 1
    assert client.hget(f"{PREFIX}meta", "form") == str(STORED_FORM).encode()

    client.hset(f"{PREFIX}meta", "form", STORED_FORM + 1)
    with pytest.raises(StoreUnusable, match="newer than this bus_tasks"):
        RedisStore.from_client(fakeredis.FakeRedis(server=server), PREFIX).load(TaskView())
