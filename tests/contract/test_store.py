"""One store contract over SQLite, Redis on fakeredis and the real Redis; then a real aggregator restart."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import fakeredis
import pydantic
import pytest
from support.brokers import REDIS, Broker, SystemFactory, purge_redis_prefix, require_service
from support.factories import entry_of

from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.config import Settings
from bus_tasks.core.model import Event, State, TaskRecord
from bus_tasks.core.view import Entry, Outcome, TaskView, Tombstone
from bus_tasks.errors import UnknownTask
from bus_tasks.store import NullStore, Store, open_store
from bus_tasks.store.redis import RedisStore
from bus_tasks.store.sqlite import SqliteStore
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until

StoreFactory = Callable[[], Store]
Snapshot = tuple[dict[str, tuple[int, bytes]], dict[str, Tombstone]]

CREATED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

LANES = ["sqlite", "fakeredis", pytest.param("redis", marks=pytest.mark.integration)]


def task_id(n: int) -> str:
    return str(uuid.UUID(f"00000000-0000-4000-8000-{n:012d}"))


def record(n: int, seq: int, state: State = State.RUNNING) -> TaskRecord:
    """Task ``n`` as of ``seq``: its message and update time differ with each seq."""
    return TaskRecord(
        id=task_id(n),
        subsystem="vdsm",
        verb="copyImage",
        tags=("spm", f"storage:sd{n % 3}"),
        state=state,
        message=f"as of seq {seq}",
        created_at=CREATED_AT,
        updated_at=CREATED_AT + timedelta(microseconds=seq % 10**12),
    )


def entry(n: int, seq: int, state: State = State.RUNNING) -> Entry:
    return entry_of(record(n, seq, state), seq)


def tombstone(seq: int) -> Tombstone:
    return Tombstone(subsystem="vdsm", seq=seq, cleared_at=1714564800.25 + seq)


def snapshot(store: Store) -> Snapshot:
    """What ``store`` loads into a fresh view: ``{id: (seq, details)}`` and the tombstones."""
    view = TaskView()
    loaded = store.load(view)
    assert loaded == len(view)
    return {e.id: (e.seq, e.details) for e in view}, dict(view.tombstones)


def live(*entries: Entry) -> dict[str, tuple[int, bytes]]:
    return {e.id: (e.seq, e.details) for e in entries}


@pytest.fixture(params=LANES)
def open_new(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreFactory]:
    """Opens a new store object on one place (file or key prefix) per call, as a restart or a replica does."""
    lane: str = request.param
    make: StoreFactory
    if lane == "sqlite":
        path = tmp_path_factory.mktemp("store") / "data" / "view.sqlite3"

        def make() -> Store:
            return SqliteStore(path)

    elif lane == "fakeredis":
        server = fakeredis.FakeServer()

        def make() -> Store:
            return RedisStore.from_client(fakeredis.FakeRedis(server=server), "bus_tasks_test:view:")

    else:
        require_service("Redis", REDIS)
        url = f"redis://{REDIS[0]}:{REDIS[1]}/0"
        prefix = f"bus_tasks_test:{uuid.uuid4().hex[:12]}:view:"

        def make() -> Store:
            return RedisStore(url, prefix)

    opened: list[Store] = []

    def open_one() -> Store:
        store = make()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()
    if lane == "redis":
        purge_redis_prefix(url, prefix)


def test_an_empty_store_loads_nothing(open_new: StoreFactory) -> None:
    assert snapshot(open_new()) == ({}, {})


def test_committed_writes_are_loaded_by_a_new_store_object(open_new: StoreFactory) -> None:
    store = open_new()
    entries = [entry(1, 10), entry(2, 20, State.FINISHED), entry(3, 30, State.FAILED)]
    for e in entries:
        store.put(e)
    store.bury(task_id(4), tombstone(40))
    store.commit()

    view = TaskView()
    assert open_new().load(view) == 3
    assert snapshot(open_new()) == (live(*entries), {task_id(4): tombstone(40)})
    assert [(e.id, e.state, e.code, e.message) for e in sorted(view, key=lambda e: e.id)] == [
        (e.id, e.state, e.code, e.message) for e in entries
    ]


def test_uncommitted_writes_are_not_visible_to_a_new_store_object(open_new: StoreFactory) -> None:
    store = open_new()
    store.put(entry(1, 10))
    store.commit()
    store.put(entry(1, 11))
    store.put(entry(2, 20))
    store.bury(task_id(3), tombstone(30))

    assert snapshot(open_new()) == (live(entry(1, 10)), {})
    store.commit()
    assert snapshot(open_new()) == (live(entry(1, 11), entry(2, 20)), {task_id(3): tombstone(30)})


def revision_loaded(store: Store) -> int:
    view = TaskView()
    store.load(view)
    return view.revision


def test_the_log_position_is_committed_with_the_writes_and_loaded_back_as_the_views_revision(
    open_new: StoreFactory,
) -> None:
    store = open_new()
    assert revision_loaded(open_new()) == 0
    store.put(entry(1, 10))
    store.mark(41)
    store.mark(40)  # an older position in the same batch does not take it back
    assert revision_loaded(open_new()) == 0  # not before the commit

    store.commit()

    assert revision_loaded(open_new()) == 41
    store.mark(57)  # a batch of events that changed nothing still moves the position
    store.commit()
    assert revision_loaded(open_new()) == 57


def test_a_tombstone_survives_a_reload_and_blocks_the_task(open_new: StoreFactory) -> None:
    store = open_new()
    store.put(entry(1, 10, State.FINISHED))
    store.commit()
    store.bury(task_id(1), tombstone(10))
    store.commit()

    view = TaskView()
    assert open_new().load(view) == 0
    assert view.tombstones == {task_id(1): tombstone(10)}
    late = Event(event="updated", seq=11, task=record(1, 11))
    assert view.apply(late) is Outcome.STALE
    assert task_id(1) not in view


def test_a_put_after_a_bury_does_not_bring_the_task_back(open_new: StoreFactory) -> None:
    store = open_new()
    store.bury(task_id(1), tombstone(10))
    store.put(entry(1, 11))  # same buffer
    store.commit()
    replica = open_new()  # another aggregator that missed the clear
    replica.put(entry(1, 12))
    replica.commit()
    assert snapshot(open_new()) == ({}, {task_id(1): tombstone(10)})

    # Nothing was kept behind the tombstone, to come back once it is forgotten.
    store.forget(task_id(1))
    store.commit()
    assert snapshot(open_new()) == ({}, {})


def test_forget_removes_a_tombstone(open_new: StoreFactory) -> None:
    store = open_new()
    store.bury(task_id(1), tombstone(10))
    store.bury(task_id(2), tombstone(20))
    store.commit()
    store.forget(task_id(1))
    store.commit()
    assert snapshot(open_new()) == ({}, {task_id(2): tombstone(20)})


def test_a_task_forgotten_and_put_again_in_one_buffer_is_live(open_new: StoreFactory) -> None:
    store = open_new()
    store.bury(task_id(1), tombstone(10))
    store.commit()
    store.forget(task_id(1))
    store.put(entry(1, 50))
    store.commit()
    assert snapshot(open_new()) == (live(entry(1, 50)), {})


def test_the_last_put_of_an_id_in_one_buffer_wins(open_new: StoreFactory) -> None:
    store = open_new()
    for seq in (10, 11, 12):
        store.put(entry(1, seq))
    store.put(entry(2, 20, State.RUNNING))
    store.put(entry(2, 21, State.FINISHED))
    store.commit()
    assert snapshot(open_new()) == (live(entry(1, 12), entry(2, 21, State.FINISHED)), {})


@pytest.mark.parametrize("newer_first", [True, False], ids=["newer-first", "older-first"])
def test_an_older_seq_never_overwrites_a_newer_one(open_new: StoreFactory, newer_first: bool) -> None:
    replica_a, replica_b = open_new(), open_new()
    replica_a.put(entry(1, 20, State.FINISHED))
    replica_b.put(entry(1, 10))
    order = [replica_a, replica_b] if newer_first else [replica_b, replica_a]
    for store in order:
        store.commit()
    assert snapshot(open_new()) == (live(entry(1, 20, State.FINISHED)), {})


def test_an_older_put_in_the_same_store_object_is_ignored(open_new: StoreFactory) -> None:
    store = open_new()
    store.put(entry(1, 20))
    store.commit()
    store.put(entry(1, 10))
    store.commit()
    assert snapshot(open_new()) == (live(entry(1, 20)), {})


def test_ten_thousand_tasks_round_trip(open_new: StoreFactory) -> None:
    store = open_new()
    entries = [entry(n, 1_700_000_000_000_000 + n) for n in range(10_000)]
    for e in entries:
        store.put(e)
    for n in range(10_000, 10_100):
        store.bury(task_id(n), tombstone(n))
    store.commit()
    expected_graves = {task_id(n): tombstone(n) for n in range(10_000, 10_100)}
    assert snapshot(open_new()) == (live(*entries), expected_graves)


def test_a_store_names_where_it_keeps_the_view_but_never_a_password(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tmp_path_factory.mktemp("named") / "view.sqlite3"
    sqlite = SqliteStore(path)
    sqlite.close()
    # redis-py connects lazily: no server is needed to name one.
    remote = RedisStore("redis://:s3cret@redis.example:6380/2", "bus_tasks:view:")
    remote.close()

    assert str(sqlite) == f"sqlite {path}"
    assert str(remote) == "redis redis.example:6380/2 prefix bus_tasks:view:"
    assert "s3cret" not in repr(remote)


def test_open_store_follows_the_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("settings") / "data"
    sqlite = open_store(Settings(store="sqlite", data_dir=data_dir))
    assert not data_dir.exists(), "the file is opened on first use, not when the store is made"
    sqlite.load(TaskView())
    sqlite.close()
    remote = open_store(Settings(store="redis", store_redis_url="redis://:pw@127.0.0.1:6379/3"))
    remote.close()

    assert isinstance(sqlite, SqliteStore)
    assert sqlite.path == data_dir / "view.sqlite3"
    assert sqlite.path.is_file()
    assert isinstance(remote, RedisStore)
    assert str(remote) == "redis 127.0.0.1:6379/3 prefix bus_tasks:view:"
    assert isinstance(open_store(Settings(store="none")), NullStore)


def test_a_redis_store_without_a_url_is_a_settings_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="store_redis_url"):
        Settings(store="redis")


def test_a_stopped_aggregator_leaves_a_store_from_which_the_next_one_answers_the_same(
    memory_broker: Broker, start_system: SystemFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("aggregator") / "data" / "view.sqlite3"
    first = Aggregator(memory_broker.connection(confirm_publish=False), store=SqliteStore(path))
    with RunningAggregator(first):
        publisher = TaskPublisher(memory_broker.connection(), "vdsm")
        client = TasksClient(memory_broker.connection(confirm_publish=False), timeout_s=10.0)
        ids = [publisher.create("copyImage", ["spm", f"storage:sd{n}"]).id for n in range(5)]
        publisher.finish(ids[0], result={"uuid": "x"})
        publisher.fail(ids[1], code=205, message="Cannot create Logical Volume")
        publisher.finish(ids[2])
        wait_until(
            lambda: (
                len(client.get_all_tasks()) == 5 and client.get_task_status(ids[2])["taskState"] == "finished"
            ),
            timeout_s=10,
            what="five tasks in the first view",
        )
        assert client.clear_task(ids[2])
        before = client.get_all_tasks()
    assert set(before) == set(ids) - {ids[2]}

    # Nothing but the store feeds the second view: the publisher is gone and every event was acked.
    publisher.close()
    second = start_system(memory_broker, store=SqliteStore(path))
    assert len(second.aggregator.view) == 4
    assert set(second.aggregator.view.tombstones) == {ids[2]}
    client = second.client()
    assert client.get_all_tasks() == before
    with pytest.raises(UnknownTask):
        client.get_task_status(ids[2])
