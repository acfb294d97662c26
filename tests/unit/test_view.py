"""The merged view: highest seq wins, tombstones, ownership, the tag index, expiry (SPEC section 4)."""

from __future__ import annotations

import inspect
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.factories import UPDATED_AT, at, entry_of, make_event, make_record, task_id

from bus_tasks import codec
from bus_tasks.core.model import Event, EventName, State
from bus_tasks.core.view import MAX_SHARED_TAG_TUPLES, Entry, Expired, Outcome, TaskView, Tombstone
from bus_tasks.errors import EventRejected, TaskStateError, UnknownTask
from bus_tasks.protocol import shapes
from bus_tasks.store.form import entry_from_details


class Clock:
    """The view's injectable clock, moved by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def view(clock: Clock) -> TaskView:
    return TaskView(clock=clock)


def ids(entries: Any) -> set[str]:
    return {e.id for e in entries}


def by_tag(view: TaskView, tags: list[str]) -> dict[str, set[str]]:
    """The ids ``select`` finds for each tag of ``tags``."""
    return {tag: ids(view.select([tag])) for tag in tags}


def churn_growth_per_step(step: Callable[[int], None]) -> float:
    """Bytes per step that memory allocated by the view's module grows by over a second run of
    ``step(n)``.

    An index set left behind when its last task goes is not visible to ``select`` (it finds
    nothing either way), only as memory that grows with every tag ever used. The first run
    fills the bounded cache of shared tag tuples (every step uses new tags), so the second
    measures only what the view keeps for tags no task carries any more.
    """
    rounds = MAX_SHARED_TAG_TUPLES + 1000
    for n in range(rounds):
        step(n)
    only_the_view = [tracemalloc.Filter(True, inspect.getsourcefile(TaskView) or "")]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(only_the_view)
        for n in range(rounds, 2 * rounds):
            step(n)
        after = tracemalloc.take_snapshot().filter_traces(only_the_view)
    finally:
        tracemalloc.stop()
    # What stays per step shows as many allocations of one line; a few large ones are global
    # tables growing once (the interpreter's table of interned strings resizes when it will).
    per_step = [s for s in after.compare_to(before, "lineno") if s.count_diff >= rounds // 10]
    return sum(stat.size_diff for stat in per_step) / rounds


# A set left behind per retired tag costs about 100 bytes (an empty dict and its slot).
CHURN_BYTES_PER_STEP = 16


def details(event: Event) -> dict[str, Any]:
    return dict(codec.loads(codec.dumps(shapes.task_details(event.task))))


# -- highest seq wins --------------------------------------------------------------------


def test_a_new_task_is_applied_and_listed(view: TaskView) -> None:
    event = make_event(1, seq=5, event="created")
    assert view.apply(event) is Outcome.APPLIED
    assert len(view) == 1
    assert task_id(1) in view
    entry = view.get(task_id(1))
    assert (entry.id, entry.seq, entry.subsystem, entry.verb, entry.tags, entry.state, entry.code) == (
        task_id(1),
        5,
        "vdsm",
        "copyImage",
        ("spm",),
        State.RUNNING,
        0,
    )
    assert codec.loads(entry.details) == details(event)


def test_a_higher_seq_replaces_the_record(view: TaskView) -> None:
    view.apply(make_event(1, seq=5))
    newer = make_event(1, seq=6, event="finished", state=State.FINISHED, message="done")
    assert view.apply(newer) is Outcome.APPLIED
    assert codec.loads(view.get(task_id(1)).details) == details(newer)
    assert view.get(task_id(1)).seq == 6


def test_a_duplicate_event_is_stale(view: TaskView) -> None:
    event = make_event(1, seq=5)
    view.apply(event)
    assert view.apply(event) is Outcome.STALE
    assert view.get(task_id(1)).seq == 5


def test_an_older_event_is_stale_and_changes_nothing(view: TaskView) -> None:
    newer = make_event(1, seq=9, state=State.FINISHED)
    view.apply(newer)
    assert view.apply(make_event(1, seq=3, state=State.RUNNING, tags=("other",))) is Outcome.STALE
    assert codec.loads(view.get(task_id(1)).details) == details(newer)
    assert ids(view.select(["other"])) == set()


def test_an_event_with_the_same_seq_but_other_content_is_stale(view: TaskView) -> None:
    first = make_event(1, seq=5, message="first")
    view.apply(first)
    assert view.apply(make_event(1, seq=5, message="second")) is Outcome.STALE
    assert codec.loads(view.get(task_id(1)).details) == details(first)


# -- cleared and tombstones --------------------------------------------------------------


def test_cleared_event_removes_the_task_and_leaves_a_tombstone(view: TaskView, clock: Clock) -> None:
    view.apply(make_event(1, seq=5))
    assert view.apply(make_event(1, seq=6, event="cleared")) is Outcome.CLEARED
    assert task_id(1) not in view
    assert view.tombstones == {task_id(1): Tombstone(subsystem="vdsm", seq=6, cleared_at=clock.now)}
    assert view.select() == []
    assert view.select(["spm"]) == []


def test_cleared_event_of_an_unseen_task_leaves_a_tombstone(view: TaskView, clock: Clock) -> None:
    assert view.apply(make_event(1, seq=6, event="cleared")) is Outcome.CLEARED
    assert view.tombstones == {task_id(1): Tombstone(subsystem="vdsm", seq=6, cleared_at=clock.now)}


@pytest.mark.parametrize("seq", [1, 6, 7, 10**15])
def test_a_tombstone_blocks_any_later_or_earlier_event_of_that_id(view: TaskView, seq: int) -> None:
    view.apply(make_event(1, seq=6, event="cleared"))
    assert view.apply(make_event(1, seq=seq, event="updated")) is Outcome.STALE
    assert view.apply(make_event(1, seq=seq, event="cleared")) is Outcome.STALE
    assert task_id(1) not in view
    assert view.tombstones[task_id(1)].seq == 6


def test_get_of_a_cleared_task_raises_unknown_task(view: TaskView) -> None:
    view.apply(make_event(1, seq=6, event="cleared"))
    with pytest.raises(UnknownTask) as caught:
        view.get(task_id(1))
    assert (caught.value.code, caught.value.message) == (401, f"Task id unknown: ('{task_id(1)}',)")


# -- ownership ---------------------------------------------------------------------------


def test_an_event_for_a_task_owned_by_another_subsystem_is_rejected(view: TaskView) -> None:
    owned = make_event(1, seq=5, subsystem="vdsm")
    view.apply(owned)
    with pytest.raises(EventRejected) as caught:
        view.apply(make_event(1, seq=6, subsystem="gluster", state=State.FAILED))
    assert caught.value.reason == f"task {task_id(1)} is owned by subsystem 'vdsm', not 'gluster'"
    assert codec.loads(view.get(task_id(1)).details) == details(owned)


def test_a_cleared_event_from_another_subsystem_is_rejected(view: TaskView) -> None:
    view.apply(make_event(1, seq=5, subsystem="vdsm"))
    with pytest.raises(EventRejected):
        view.apply(make_event(1, seq=6, event="cleared", subsystem="gluster"))
    assert task_id(1) in view
    assert view.tombstones == {}


def test_an_event_from_another_subsystem_against_a_tombstone_is_rejected(view: TaskView) -> None:
    view.apply(make_event(1, seq=5, event="cleared", subsystem="vdsm"))
    with pytest.raises(EventRejected) as caught:
        view.apply(make_event(1, seq=6, subsystem="gluster"))
    assert caught.value.reason == f"task {task_id(1)} is owned by subsystem 'vdsm', not 'gluster'"


# -- clear() -----------------------------------------------------------------------------


@pytest.mark.parametrize("state", [State.FINISHED, State.RECOVERED, State.FAILED])
def test_clear_of_a_done_task_removes_it_and_returns_its_tombstone(
    view: TaskView, clock: Clock, state: State
) -> None:
    view.apply(make_event(1, seq=5, state=state, subsystem="gluster", tags=("gluster",)))
    tombstone = view.clear(task_id(1))
    assert tombstone == Tombstone(subsystem="gluster", seq=5, cleared_at=clock.now)
    assert view.tombstones == {task_id(1): tombstone}
    assert task_id(1) not in view
    assert list(view) == []
    assert view.select(["gluster"]) == []


@pytest.mark.parametrize("state", [s for s in State if not s.is_done])
def test_clear_of_a_task_that_is_not_done_raises_410_and_the_task_stays(view: TaskView, state: State) -> None:
    event = make_event(1, seq=5, state=state)
    view.apply(event)
    with pytest.raises(TaskStateError) as caught:
        view.clear(task_id(1))
    assert (caught.value.code, caught.value.message) == (
        410,
        f"Operation is not allowed in this task state: ('{task_id(1)}', '{state.value}')",
    )
    assert codec.loads(view.get(task_id(1)).details) == details(event)
    assert view.tombstones == {}


def test_clear_of_an_unknown_task_raises_unknown_task(view: TaskView) -> None:
    with pytest.raises(UnknownTask):
        view.clear(task_id(9))


def test_clear_of_an_already_cleared_task_raises_unknown_task(view: TaskView) -> None:
    view.apply(make_event(1, seq=5, state=State.FINISHED))
    view.clear(task_id(1))
    with pytest.raises(UnknownTask):
        view.clear(task_id(1))


# -- select() ----------------------------------------------------------------------------


@pytest.fixture
def tagged(view: TaskView) -> TaskView:
    """Five tasks: 1 spm, 2 spm+storage, 3 gluster+volume:gv1, 4 gluster+volume:gv2, 5 untagged."""
    view.apply(make_event(1, tags=("spm",)))
    view.apply(make_event(2, tags=("spm", "storage:sd1")))
    view.apply(make_event(3, subsystem="gluster", tags=("gluster", "volume:gv1")))
    view.apply(make_event(4, subsystem="gluster", tags=("gluster", "volume:gv2")))
    view.apply(make_event(5, tags=()))
    return view


def test_select_without_tags_returns_every_task(tagged: TaskView) -> None:
    expected = {task_id(n) for n in range(1, 6)}
    assert ids(tagged.select()) == expected
    assert ids(tagged.select(None)) == expected
    assert ids(tagged.select([])) == expected
    assert len(tagged.select()) == 5


def test_select_with_one_tag_returns_exactly_the_tasks_carrying_it(tagged: TaskView) -> None:
    assert ids(tagged.select(["spm"])) == {task_id(1), task_id(2)}
    assert ids(tagged.select(["volume:gv2"])) == {task_id(4)}


def test_select_matches_tags_exactly_and_case_sensitively(tagged: TaskView) -> None:
    assert tagged.select(["pm"]) == []
    assert tagged.select(["SPM"]) == []
    assert tagged.select(["volume"]) == []


def test_select_with_two_tags_returns_tasks_with_either(tagged: TaskView) -> None:
    selected = tagged.select(["storage:sd1", "volume:gv1"])
    assert ids(selected) == {task_id(2), task_id(3)}
    assert len(selected) == 2


def test_select_with_overlapping_tags_returns_each_task_once(tagged: TaskView) -> None:
    selected = tagged.select(["spm", "storage:sd1"])
    assert sorted(e.id for e in selected) == [task_id(1), task_id(2)]


def test_select_with_match_all_returns_tasks_with_every_tag(tagged: TaskView) -> None:
    assert ids(tagged.select(["gluster", "volume:gv2"], match_all=True)) == {task_id(4)}
    assert ids(tagged.select(["spm", "storage:sd1"], match_all=True)) == {task_id(2)}
    assert tagged.select(["spm", "gluster"], match_all=True) == []


def test_select_with_match_all_and_one_tag_returns_the_tasks_carrying_it(tagged: TaskView) -> None:
    assert ids(tagged.select(["gluster"], match_all=True)) == {task_id(3), task_id(4)}


def test_select_with_an_unknown_tag_returns_nothing(tagged: TaskView) -> None:
    assert tagged.select(["nope"]) == []
    assert ids(tagged.select(["nope", "spm"])) == {task_id(1), task_id(2)}
    assert tagged.select(["nope", "spm"], match_all=True) == []


def test_select_with_a_tag_given_twice_returns_each_task_once(tagged: TaskView) -> None:
    selected = tagged.select(["spm", "spm"])
    assert sorted(e.id for e in selected) == [task_id(1), task_id(2)]
    assert sorted(e.id for e in tagged.select(["gluster", "gluster"], match_all=True)) == [
        task_id(3),
        task_id(4),
    ]


def tag_read_counting(reads: Counter[str]) -> type[Entry]:
    """An Entry class that counts, in ``reads``, how often each entry's tags are read."""

    class TagReadCountingEntry(Entry):
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            if name == "tags":
                reads[object.__getattribute__(self, "id")] += 1
            return object.__getattribute__(self, name)

    return TagReadCountingEntry


def test_select_of_a_rare_tag_touches_only_the_tasks_carrying_it(view: TaskView) -> None:
    reads: Counter[str] = Counter()
    counting_entry = tag_read_counting(reads)
    for n in range(1, 2001):
        tags = ("common", "rare") if n % 500 == 0 else ("common",)
        entry = entry_of(make_record(n, tags=tags), 1)
        view.restore(counting_entry(**{f: getattr(entry, f) for f in Entry.__slots__}))
    rare = {task_id(n) for n in (500, 1000, 1500, 2000)}
    reads.clear()

    selected = view.select(["rare"])

    assert len(selected) == 4
    assert ids(selected) == rare
    # A scan would read the tags of all 2000 entries; the index reads none of the others.
    assert set(reads) <= rare
    assert ids(view.select(["common"])) == {task_id(n) for n in range(1, 2001)}


# -- retag and the index -----------------------------------------------------------------


def test_retag_moves_a_task_between_index_sets_and_drops_empty_ones(view: TaskView) -> None:
    view.apply(make_event(1, seq=1, tags=("spm", "old")))
    view.apply(make_event(2, seq=1, tags=("spm",)))
    assert by_tag(view, ["spm", "old", "new"]) == {
        "spm": {task_id(1), task_id(2)},
        "old": {task_id(1)},
        "new": set(),
    }

    view.apply(make_event(1, seq=2, tags=("new",)))

    assert by_tag(view, ["spm", "old", "new"]) == {"spm": {task_id(2)}, "old": set(), "new": {task_id(1)}}

    def retag(n: int) -> None:  # task 1 moves on to a tag never used before, every time
        view.apply(make_event(1, seq=n + 3, tags=(f"t{n}", "spm")))

    assert churn_growth_per_step(retag) < CHURN_BYTES_PER_STEP
    assert by_tag(view, ["spm", "old", "new"]) == {
        "spm": {task_id(1), task_id(2)},
        "old": set(),
        "new": set(),
    }


def test_an_update_with_the_same_tags_keeps_the_index(view: TaskView) -> None:
    view.apply(make_event(1, seq=1, tags=("spm", "x")))
    view.apply(make_event(1, seq=2, tags=("spm", "x"), state=State.FINISHED))
    assert by_tag(view, ["spm", "x"]) == {"spm": {task_id(1)}, "x": {task_id(1)}}
    assert view.select(["spm", "x"], match_all=True) == [view.get(task_id(1))]
    assert view.get(task_id(1)).state is State.FINISHED


def test_a_cleared_task_leaves_no_index_set_behind(view: TaskView) -> None:
    view.apply(make_event(1, seq=1, tags=("only",)))
    view.apply(make_event(1, seq=2, event="cleared", tags=("only",)))
    assert view.select(["only"]) == []

    def create_and_clear(n: int) -> None:  # a task with a tag of its own, cleared and forgotten
        view.apply(make_event(n + 2, seq=1, tags=(f"c{n}",)))
        view.apply(make_event(n + 2, seq=2, event="cleared", tags=(f"c{n}",)))
        view.expire(tombstone_ttl_s=0, done_ttl_s=None)

    assert churn_growth_per_step(create_and_clear) < CHURN_BYTES_PER_STEP
    assert (len(view), view.tombstones) == (0, {})


# -- expire() ----------------------------------------------------------------------------


def test_expire_buries_done_tasks_idle_for_done_ttl_and_keeps_the_others(
    view: TaskView, clock: Clock
) -> None:
    view.apply(make_event(1, state=State.FINISHED, updated_at=at(1_000)))
    view.apply(make_event(2, state=State.FAILED, updated_at=at(1_041)))
    view.apply(make_event(3, state=State.RUNNING, updated_at=at(0)))
    clock.now = 1_100.0

    expired = view.expire(tombstone_ttl_s=3_600, done_ttl_s=60)

    assert expired == Expired(buried=[task_id(1)], forgotten=[])
    assert ids(view) == {task_id(2), task_id(3)}
    assert view.tombstones == {task_id(1): Tombstone(subsystem="vdsm", seq=1, cleared_at=1_100.0)}


def test_expire_buries_a_done_task_exactly_at_done_ttl(view: TaskView) -> None:
    view.apply(make_event(1, state=State.RECOVERED, updated_at=at(1_000)))
    assert view.expire(tombstone_ttl_s=3_600, done_ttl_s=60, now=1_059.0) == Expired([], [])
    assert view.expire(tombstone_ttl_s=3_600, done_ttl_s=60, now=1_060.0) == Expired([task_id(1)], [])


def test_expire_without_done_ttl_buries_nothing(view: TaskView) -> None:
    view.apply(make_event(1, state=State.FINISHED, updated_at=at(0)))
    assert view.expire(tombstone_ttl_s=3_600, done_ttl_s=None, now=10**9) == Expired([], [])
    assert task_id(1) in view


def test_expire_forgets_tombstones_older_than_tombstone_ttl(view: TaskView, clock: Clock) -> None:
    view.apply(make_event(1, seq=5, event="cleared"))
    clock.now = 2_000.0
    view.apply(make_event(2, seq=5, event="cleared"))

    clock.now = 1_000.0 + 3_599
    assert view.expire(tombstone_ttl_s=3_600, done_ttl_s=None) == Expired([], [])
    clock.now = 1_000.0 + 3_600
    assert view.expire(tombstone_ttl_s=3_600, done_ttl_s=None) == Expired([], [task_id(1)])
    assert set(view.tombstones) == {task_id(2)}


def test_a_forgotten_tombstone_no_longer_blocks_its_id(view: TaskView, clock: Clock) -> None:
    view.apply(make_event(1, seq=5, event="cleared"))
    clock.now += 10
    view.expire(tombstone_ttl_s=10, done_ttl_s=None)
    assert view.apply(make_event(1, seq=1)) is Outcome.APPLIED
    assert task_id(1) in view


def test_expire_with_now_buries_at_that_time(view: TaskView, clock: Clock) -> None:
    # The clock is far ahead of the ``now`` given: a task buried "at now" must expire from "now".
    clock.now = 50_000.0
    view.apply(make_event(1, state=State.FINISHED, updated_at=at(1_000)))
    assert view.expire(tombstone_ttl_s=100, done_ttl_s=60, now=2_000.0) == Expired([task_id(1)], [])
    assert view.tombstones[task_id(1)].cleared_at == 2_000.0
    assert view.expire(tombstone_ttl_s=100, done_ttl_s=60, now=2_100.0) == Expired([], [task_id(1)])


# -- entries, restore --------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"tags": (), "state": State.FAILED, "code": 205, "message": "Cannot create Logical Volume"},
        {"updated_at": "2024-05-01T14:05:30.123456+02:00", "tags": ("gluster", "volume:gv1")},
        {"result": {"uuid": "x"}, "progress": 40, "data": {"bricks": ["h1:/b1"], "files": 3}},
    ],
)
def test_entry_from_details_round_trips_entry_from_record(fields: dict[str, Any]) -> None:
    entry = entry_of(make_record(**fields), 17)
    assert entry_from_details(entry.details, 17) == entry


def test_entry_member_is_the_listing_member_of_its_details() -> None:
    entry = entry_of(make_record(result={"uuid": "x"}), 3)
    assert codec.loads(b"{" + entry.member + b"}") == {task_id(1): codec.loads(entry.details)}
    assert codec.loads(entry.details) == codec.loads(
        codec.dumps(shapes.task_details(make_record(result={"uuid": "x"})))
    )


def test_tasks_with_the_same_tags_share_one_tuple(view: TaskView) -> None:
    for n in (1, 2):
        view.apply(make_event(n, seq=1, tags=("gluster", "volume:gv1")))
    view.restore(entry_of(make_record(3, tags=("gluster", "volume:gv1")), 1))
    view.apply(make_event(4, seq=1, tags=("spm",)))
    view.apply(make_event(4, seq=2, tags=("gluster", "volume:gv1")))  # retagged

    tuples = {id(view.get(task_id(n)).tags) for n in (1, 2, 3, 4)}

    assert len(tuples) == 1
    assert view.get(task_id(4)).tags == ("gluster", "volume:gv1")


def test_tag_tuples_are_shared_up_to_a_bound(view: TaskView, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bus_tasks.core.view.MAX_SHARED_TAG_TUPLES", 2)
    for n in range(1, 5):
        view.apply(make_event(n, seq=1, tags=(f"t{n}",)))
    view.apply(make_event(5, seq=1, tags=("t4",)))

    assert view.get(task_id(5)).tags == ("t4",)
    assert view.get(task_id(5)).tags is not view.get(task_id(4)).tags  # t4 came after the bound
    assert ids(view.select(["t4"])) == {task_id(4), task_id(5)}


def test_an_entry_keeps_what_vdsms_status_and_info_need_without_decoding_its_member() -> None:
    entry = entry_of(make_record(state=State.FAILED, code=205, message="no space"), 1)
    assert (entry.id, entry.verb, entry.state, entry.code, entry.message) == (
        task_id(1),
        "copyImage",
        State.FAILED,
        205,
        "no space",
    )


def test_the_view_keeps_the_member_its_encoder_makes() -> None:
    view = TaskView(lambda record: b'"%b":"custom"' % record.id.encode())
    view.apply(make_event(1))
    assert view.get(task_id(1)).member == b'"%b":"custom"' % task_id(1).encode()


def test_entry_updated_at_is_the_record_timestamp_in_epoch_seconds() -> None:
    assert entry_of(make_record(), 1).updated_at == UPDATED_AT.timestamp()


def test_restore_keeps_the_newer_of_two_entries(view: TaskView) -> None:
    view.apply(make_event(1, seq=5, message="live"))
    view.restore(entry_of(make_record(1, message="stored"), 4))
    assert view.get(task_id(1)).seq == 5
    view.restore(entry_of(make_record(1, message="stored", tags=("x",)), 6))
    assert view.get(task_id(1)).seq == 6
    assert ids(view.select(["x"])) == {task_id(1)}
    assert view.select(["spm"]) == []


def test_restore_does_not_bring_back_a_cleared_task(view: TaskView) -> None:
    view.apply(make_event(1, seq=5, event="cleared"))
    view.restore(entry_of(make_record(1), 9))
    assert task_id(1) not in view


def test_restore_tombstone_drops_the_live_entry(view: TaskView) -> None:
    view.apply(make_event(1, seq=5))
    tombstone = Tombstone(subsystem="vdsm", seq=5, cleared_at=1.0)
    view.restore_tombstone(task_id(1), tombstone)
    assert task_id(1) not in view
    assert view.tombstones == {task_id(1): tombstone}
    assert (list(view), view.select(["spm"])) == ([], [])


RESTORE_TAGS = ["spm", "gluster", "volume:gv1", "rare"]
RestoreSpec = tuple[int, int, str, State, tuple[str, ...]]  # task, seq, subsystem, state, tags

restore_specs = st.lists(
    st.tuples(
        st.integers(1, 6),
        st.integers(1, 30),
        st.sampled_from(["vdsm", "gluster"]),
        st.sampled_from([State.RUNNING, State.FINISHED, State.FAILED]),
        st.lists(st.sampled_from(RESTORE_TAGS), max_size=3, unique=True).map(tuple),
    ),
    max_size=25,
)


def restored_view(
    before: list[Event], graves: list[int], specs: list[RestoreSpec], *, bulk: bool
) -> TaskView:
    """A view holding ``before`` and tombstones of ``graves``, then the entries of ``specs``
    restored all at once (``bulk``) or one by one."""
    view = TaskView(clock=Clock())
    for event in before:
        view.apply(event)
    for n in graves:
        view.restore_tombstone(task_id(n), Tombstone(subsystem="vdsm", seq=1, cleared_at=1.0))
    entries = [
        entry_of(make_record(n, subsystem=s, state=state, tags=tags, updated_at=at(seq * 10.0)), seq)
        for n, seq, s, state, tags in specs
    ]
    if bulk:
        view.restore_all(iter(entries))
    else:
        for entry in entries:
            view.restore(entry)
    return view


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.integers(1, 6), max_size=3, unique=True),
    graves=st.lists(st.integers(1, 6), max_size=2, unique=True),
    specs=restore_specs,
)
def test_restore_all_makes_the_view_restore_of_each_entry_makes(
    before: list[int], graves: list[int], specs: list[RestoreSpec]
) -> None:
    live = [
        make_event(n, seq=15, tags=("spm", "rare"), updated_at=at(5.0)) for n in before if n not in graves
    ]
    one_by_one = restored_view(live, graves, specs, bulk=False)
    bulk = restored_view(live, graves, specs, bulk=True)

    fields = Entry.__slots__
    assert [tuple(getattr(e, f) for f in fields) for e in bulk] == [
        tuple(getattr(e, f) for f in fields) for e in one_by_one
    ]
    assert by_tag(bulk, RESTORE_TAGS) == by_tag(one_by_one, RESTORE_TAGS)
    assert +Counter(bulk.tasks_by_state) == +Counter(one_by_one.tasks_by_state)
    assert (bulk.tombstones, bulk.log_time) == (one_by_one.tombstones, one_by_one.log_time)
    assert len({id(e.tags) for e in bulk if e.tags == ("spm", "gluster")}) <= 1  # shared tuples
    assert bulk.version > 0


def test_restore_all_of_nothing_leaves_the_view_as_it_was(view: TaskView) -> None:
    view.apply(make_event(1, seq=2))
    before = (list(view), dict(view.tasks_by_state), view.log_time)
    view.restore_all([])
    assert (list(view), dict(view.tasks_by_state), view.log_time) == before


# -- the law: any order, any duplication, same view --------------------------------------

PROPERTY_TASKS = [task_id(n) for n in range(1, 5)]
PROPERTY_TAGS = ["spm", "gluster", "volume:gv1", "rare"]
PROPERTY_EVENTS: list[EventName] = ["created", "updated", "updated", "finished", "cleared"]


@st.composite
def event_sets(draw: st.DrawFn) -> list[Event]:
    """Events over a few tasks: each task has one owner and unique seqs; some are ``cleared``."""
    events = []
    chosen = draw(st.lists(st.sampled_from(range(1, 5)), min_size=1, max_size=4, unique=True))
    for n in chosen:
        owner = draw(st.sampled_from(["vdsm", "gluster", "plugin.x"]))
        for seq in draw(st.lists(st.integers(1, 40), min_size=1, max_size=5, unique=True)):
            events.append(
                make_event(
                    n,
                    seq=seq,
                    event=draw(st.sampled_from(PROPERTY_EVENTS)),
                    subsystem=owner,
                    state=draw(st.sampled_from(list(State))),
                    tags=tuple(draw(st.lists(st.sampled_from(PROPERTY_TAGS), max_size=3, unique=True))),
                    message=f"seq {seq}",
                )
            )
    return events


Snapshot = tuple[dict[str, tuple[int, bytes]], set[str], dict[str, set[str]]]


def snapshot(view: TaskView) -> Snapshot:
    entries = {e.id: (e.seq, e.details) for e in view}
    by_tag = {tag: ids(view.select([tag])) for tag in PROPERTY_TAGS}
    return entries, set(view.tombstones), by_tag


def expected_snapshot(events: list[Event]) -> Snapshot:
    """What SPEC 4 says the view holds, computed without a view."""
    cleared = {e.task.id for e in events if e.event == "cleared"}
    latest: dict[str, Event] = {}
    for e in events:
        if e.task.id not in cleared and (e.task.id not in latest or e.seq > latest[e.task.id].seq):
            latest[e.task.id] = e
    entries = {i: (e.seq, codec.dumps(shapes.task_details(e.task))) for i, e in latest.items()}
    by_tag = {tag: {i for i, e in latest.items() if tag in e.task.tags} for tag in PROPERTY_TAGS}
    return entries, cleared, by_tag


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_order_with_any_duplication_of_events_yields_the_same_view(data: st.DataObject) -> None:
    events = data.draw(event_sets(), label="events")
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=len(events)), label="duplicates")
    deliveries = data.draw(st.permutations(events + duplicates), label="deliveries")

    in_order = TaskView(clock=lambda: 0.0)
    for event in sorted(events, key=lambda e: e.seq):
        in_order.apply(event)
    shuffled = TaskView(clock=lambda: 0.0)
    for event in deliveries:
        shuffled.apply(event)

    assert snapshot(shuffled) == snapshot(in_order) == expected_snapshot(events)


@given(data=st.data())
def test_two_replicas_given_the_same_events_and_tombstones_in_different_orders_hold_one_view(
    data: st.DataObject,
) -> None:
    # Replicas read one log, but a redelivery or a clear published by another replica can come
    # in any order relative to the events: the views must still be identical.
    events = data.draw(event_sets(), label="events")
    tombstones = [
        make_event(int(e.task.id[-12:]), seq=e.seq, event="cleared", subsystem=e.task.subsystem)
        for e in data.draw(st.lists(st.sampled_from(events), max_size=3), label="cleared by a replica")
    ]
    one, other = TaskView(clock=lambda: 0.0), TaskView(clock=lambda: 0.0)
    for view, label in ((one, "one replica's order"), (other, "the other's")):
        for event in data.draw(st.permutations(events + tombstones), label=label):
            view.apply(event)

    assert snapshot(one) == snapshot(other) == expected_snapshot(events + tombstones)


@pytest.mark.parametrize("field", ["result", "data", "code"])
def test_an_event_whose_record_cannot_be_encoded_is_rejected_and_changes_nothing(field: str) -> None:
    view = TaskView()
    view.apply(make_event(1, seq=1))
    before = view.version
    value: Any = {"n": 2**64} if field == "data" else 2**64
    # decode_event refuses such a record (test_parsers_fuzz); the view is the net behind it, for a
    # record that reached it another way: model_copy does not validate.
    record = make_event(1, seq=2).task.model_copy(update={field: value})
    with pytest.raises(EventRejected, match="cannot be encoded"):
        view.apply(Event(event="updated", seq=2, task=record))
    assert view.version == before
    assert view.get(task_id(1)).seq == 1
