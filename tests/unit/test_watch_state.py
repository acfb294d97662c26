"""The watcher's knowledge (bus_tasks.watching.WatchState) and the feed's history, without a broker."""

from __future__ import annotations

import gc
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.factories import make_event

from bus_tasks import codec
from bus_tasks.aggregator import changes as feed_module
from bus_tasks.aggregator.changes import COALESCE_S, MAX_ENCODED_TAGS, MIN_MESSAGE_BYTES, ChangeFeed
from bus_tasks.core.view import TaskView
from bus_tasks.errors import PublishRefused, RevisionGone
from bus_tasks.protocol.changes import encode_change, selects
from bus_tasks.watching import NeedFailover, NeedReplay, WatchState, decode_feed

HEAD = {"aggregator": "a", "instance": "i-a", "log": "log", "rpcQueue": "q-a", "beatS": 5.0}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def change(
    revision: int, task_id: str, tags: list[str], task: dict[str, Any] | None = None
) -> dict[str, Any]:
    details = codec.dumps(task) if task is not None else None
    return codec.loads(encode_change(revision, task_id, details, tags))  # type: ignore[no-any-return]


def feed(after: int, revision: int, *changes: dict[str, Any], **head: Any) -> dict[str, Any]:
    return {**HEAD, **head, "after": after, "revision": revision, "changes": list(changes)}


def listing(revision: int, tasks: dict[str, Any]) -> dict[str, Any]:
    return {**HEAD, "revision": revision, "tasks": tasks}


def test_changes_at_or_before_the_listing_are_dropped_and_later_ones_told_once() -> None:
    state = WatchState()
    state.on_listing(listing(10, {"t1": {"v": 1}}))
    events = state.on_feed(feed(8, 12, change(9, "t1", [], {"v": 0}), change(11, "t2", [], {"v": 2})))
    assert [(e.kind, e.task_id, e.revision) for e in events] == [("changed", "t2", 11)]
    assert state.on_feed(feed(12, 12, change(11, "t2", [], {"v": 2}))) == []  # told already


def test_a_feed_message_after_a_gap_asks_for_a_replay() -> None:
    state = WatchState()
    state.on_listing(listing(10, {}))
    with pytest.raises(NeedReplay):
        state.on_feed(feed(15, 20))


def test_messages_of_other_aggregators_are_ignored_until_failover() -> None:
    state = WatchState()
    state.on_listing(listing(10, {}))
    other = feed(10, 30, change(25, "t9", [], {"v": 1}), aggregator="b", instance="i-b")
    assert state.on_feed(other) == []
    assert state.revision == 10


def test_a_stopped_aggregator_asks_for_failover_after_its_last_changes() -> None:
    state = WatchState()
    state.on_listing(listing(10, {}))
    with pytest.raises(NeedFailover):
        state.on_feed(feed(10, 12, change(11, "t1", [], {"v": 1}), stopped=True))
    assert "t1" in state.known


def test_silence_for_three_beats_means_the_followed_aggregator_is_gone() -> None:
    clock = Clock()
    state = WatchState(clock=clock)
    state.on_listing(listing(10, {}))
    clock.now += 14.0
    assert not state.silent()
    clock.now += 2.0
    assert state.silent()


def test_a_filtered_watcher_is_told_removals_when_a_task_leaves_its_tags() -> None:
    state = WatchState(("spm",))
    state.on_listing(listing(1, {"t1": {"v": 1}}))
    events = state.on_feed(
        feed(1, 3, change(2, "t1", ["pool"], {"v": 2}), change(3, "t2", ["pool"], {"v": 1}))
    )
    assert [(e.kind, e.task_id) for e in events] == [("removed", "t1")]


def test_bookmarks_advance_a_filtered_watcher_at_most_once_per_interval() -> None:
    clock = Clock()
    state = WatchState(("spm",), clock=clock, bookmark_s=1.0)
    state.on_listing(listing(1, {}))
    clock.now += 2.0
    assert [e.kind for e in state.on_feed(feed(1, 5, change(5, "t1", ["pool"], {})))] == ["bookmark"]
    assert state.on_feed(feed(5, 9)) == []  # too soon
    clock.now += 1.5
    assert [(e.kind, e.revision) for e in state.idle()] == [("bookmark", 9)]
    assert state.idle() == []  # nothing new to tell


@pytest.mark.parametrize(
    ("tags", "wanted", "match_all", "expected"),
    [
        ((), (), False, True),
        (("a",), ("a", "b"), False, True),
        (("a",), ("a", "b"), True, False),
        (("a", "b", "c"), ("a", "b"), True, True),
        (("c",), ("a",), False, False),
    ],
)
def test_selection_follows_getalltasks_rules(
    tags: tuple[str, ...], wanted: tuple[str, ...], match_all: bool, expected: bool
) -> None:
    assert selects(tags, wanted, match_all=match_all) is expected


class Recorder:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, body: bytes, **_: Any) -> None:
        self.published.append(codec.loads(body))


def make_feed(history: int = 10) -> tuple[ChangeFeed, Recorder]:
    recorder = Recorder()
    feed = ChangeFeed(recorder, name="a", instance="i-a", log_name="log", history=history)  # type: ignore[arg-type]
    feed.start(5)
    return feed, recorder


def test_the_feed_publishes_once_per_turn_with_after_and_revision() -> None:
    feed, recorder = make_feed()
    feed.changed(6, "t1", b'{"v":1}', ("spm",))
    feed.removed(7, "t2", ["pool"])
    assert feed.publish(7)
    assert not feed.publish(7)  # nothing new
    assert feed.publish(7, beat=True)
    first, beat = recorder.published
    assert (first["after"], first["revision"]) == (5, 7)
    assert first["changes"] == [
        {"revision": 6, "id": "t1", "task": {"v": 1}, "tags": ["spm"]},
        {"revision": 7, "id": "t2", "task": None, "tags": ["pool"]},
    ]
    assert (beat["after"], beat["revision"], beat["changes"]) == (7, 7, [])


@pytest.mark.parametrize("bound", [MAX_ENCODED_TAGS, 1])
def test_a_change_made_from_an_entry_is_the_change_made_from_its_parts(
    bound: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "MAX_ENCODED_TAGS", bound)  # 1: most tags encoded each time
    view = TaskView()
    for n, tags in enumerate([(), ("spm",), ("gluster", "volume:gv1", "a/b.c-d_e"), ("spm",), ()], 1):
        view.apply(make_event(n, tags=tags, message='"quoted" \u00e9'))
    by_entry, _ = make_feed()
    by_parts, _ = make_feed()

    for revision, entry in enumerate(view, 6):
        by_entry.changed_entry(revision, entry)
        by_parts.changed(revision, entry.id, entry.details, entry.tags)

    assert list(by_entry._history) == list(by_parts._history)
    assert by_entry._pending == by_parts._pending
    assert len(by_entry._encoded_tags) == min(bound, 3)


def test_a_clear_made_here_is_told_when_its_event_comes_back_at_that_revision() -> None:
    feed, recorder = make_feed()
    feed.removed_here("t1", ["spm"])
    feed.came_back(9, "t1")
    feed.came_back(10, "t1")  # once only
    feed.publish(10)
    assert recorder.published[0]["changes"] == [{"revision": 9, "id": "t1", "task": None, "tags": ["spm"]}]


def test_replays_come_from_the_kept_history_and_older_ones_are_gone() -> None:
    feed, _ = make_feed(history=3)
    for revision in range(6, 11):
        feed.changed(revision, f"t{revision}", b"{}", ("spm",) if revision % 2 else ())
    assert [codec.loads(c)["revision"] for c in feed.since(7, [], match_all=False)] == [8, 9, 10]
    assert [codec.loads(c)["revision"] for c in feed.since(8, ["spm"], match_all=False)] == [9]
    with pytest.raises(RevisionGone):
        feed.since(6, [], match_all=False)
    with pytest.raises(RevisionGone):
        feed.check_log("another")


@pytest.mark.parametrize(
    "params",
    [
        {"since": -1},
        {"since": "5"},
        {"since": 1.5},
        {"options": {"match": "some"}},
        {"options": {"log": 5}},
        {"tags": "bad tag"},
        {"sinse": 1},
    ],
)
def test_bad_params_of_get_task_changes_get_a_json_rpc_error(params: dict[str, Any]) -> None:
    from bus_tasks.aggregator.methods import Dispatcher
    from bus_tasks.core.view import TaskView

    feed, _ = make_feed()
    dispatcher = Dispatcher(TaskView(), feed=feed)
    body = codec.dumps({"jsonrpc": "2.0", "id": 1, "method": "Host.getTaskChanges", "params": params})
    reply = codec.loads(dispatcher.handle(body).body or b"")
    assert reply["error"]["code"] in (-32602, 1000), reply


def test_a_replay_from_before_the_history_answers_revision_gone_over_json_rpc() -> None:
    from bus_tasks.aggregator.methods import Dispatcher
    from bus_tasks.core.view import TaskView

    feed, _ = make_feed()
    dispatcher = Dispatcher(TaskView(), feed=feed)
    body = codec.dumps({"jsonrpc": "2.0", "id": 1, "method": "Host.getTaskChanges", "params": {"since": 2}})
    reply = codec.loads(dispatcher.handle(body).body or b"")
    assert reply["error"]["code"] == -32010
    assert "list again" in reply["error"]["message"]


# -- the property: any listing point, any split of the feed into messages, any duplication ----


TAGS = ["spm", "pool", "gluster"]
operations = st.lists(
    st.tuples(st.integers(0, 5), st.booleans(), st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    ops=operations,
    listed_at=st.integers(0, 40),
    cuts=st.lists(st.integers(1, 40), max_size=8),
    repeats=st.lists(st.integers(0, 8), max_size=4),
    wanted=st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
    match_all=st.booleans(),
)
def test_a_watcher_rebuilds_the_selection_whatever_the_listing_point_and_the_messages(
    *,
    ops: list[tuple[int, bool, list[str]]],
    listed_at: int,
    cuts: list[int],
    repeats: list[int],
    wanted: list[str],
    match_all: bool,
) -> None:
    # The truth: each op changes task t<n> (or removes it) at revision i+1.
    truth: dict[str, tuple[dict[str, Any], list[str]]] = {}
    history: list[dict[str, Any]] = []
    snapshots: list[dict[str, tuple[dict[str, Any], list[str]]]] = [{}]
    for index, (n, remove, tags) in enumerate(ops):
        revision, task_id = index + 1, f"t{n}"
        if remove and task_id in truth:
            history.append(change(revision, task_id, truth.pop(task_id)[1]))
        else:
            task = {"v": revision, "tags": tags}
            truth[task_id] = (task, tags)
            history.append(change(revision, task_id, tags, task))
        snapshots.append(dict(truth))

    def selected(view: dict[str, tuple[dict[str, Any], list[str]]]) -> dict[str, dict[str, Any]]:
        return {t: task for t, (task, tags) in view.items() if selects(tags, wanted, match_all=match_all)}

    listed_at = min(listed_at, len(ops))
    state = WatchState(tuple(wanted), match_all)
    rebuilt = dict(state.on_listing(listing(listed_at, selected(snapshots[listed_at])))[0].tasks or {})
    # The feed, cut into messages anywhere; some messages delivered twice (a replay's overlap);
    # what the watcher's queue got before the listing is included: it starts at revision 0.
    bounds = sorted({0, len(history), *(c for c in cuts if c < len(history))})
    messages = [feed(a, b, *history[a:b]) for a, b in itertools.pairwise(bounds)]
    for index in sorted(repeats, reverse=True):
        if index < len(messages):
            messages.insert(index + 1, messages[index])
    for message in messages:
        for event in state.on_feed(message):
            if event.kind == "changed":
                assert event.task_id is not None
                assert event.task is not None
                rebuilt[event.task_id] = event.task
            elif event.kind == "removed":
                assert event.task_id is not None
                del rebuilt[event.task_id]  # told only of what it holds
    assert rebuilt == selected(truth)
    assert state.revision == len(ops)


def test_in_a_flood_the_feed_goes_out_at_most_every_coalesce_interval_and_at_once_when_idle() -> None:
    clock = Clock()
    recorder = Recorder()
    feed = ChangeFeed(recorder, name="a", instance="i", log_name="log", clock=clock)  # type: ignore[arg-type]
    feed.start(5)
    feed.changed(6, "t1", b"{}", ())
    assert feed.publish_due(6, idle=False)  # the first change of a burst goes out at once
    feed.changed(7, "t2", b"{}", ())
    clock.now += COALESCE_S / 2
    assert not feed.publish_due(7, idle=False)  # more keep coming: it waits a little
    assert feed.publish_due(7, idle=True)  # nothing more to read: out now
    feed.changed(8, "t3", b"{}", ())
    clock.now += COALESCE_S * 1.5
    assert feed.publish_due(8, idle=False)  # or once the interval has passed
    assert [m["revision"] for m in recorder.published] == [6, 7, 8]


def collector_on_unless_paused() -> bool:
    """The collector is on, or a thread is inside a pause: a thread a test left behind (a
    watcher decoding) may hold one at any moment, so ``gc.isenabled()`` alone is flaky here."""
    with codec.GcPaused._lock:
        return codec.GcPaused._pauses > 0 or gc.isenabled()


def test_a_feed_message_is_decoded_with_the_collector_back_on_after_it_whatever_came() -> None:
    message = feed(0, 3, change(3, "t1", ["spm"], {"v": 1}))
    assert collector_on_unless_paused()
    assert decode_feed(codec.dumps(message)) == message
    assert collector_on_unless_paused()
    with pytest.raises(codec.DecodeError):
        decode_feed(b'{"changes": [')
    assert collector_on_unless_paused()
    with pytest.raises(TypeError, match="object"):
        decode_feed(b"[1, 2]")
    assert collector_on_unless_paused()


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"revision": "eleven"}, ValueError),
        ({"tags": "spm"}, TypeError),
        ({"id": None, "revision": None}, TypeError),
    ],
)
def test_a_malformed_change_raises_and_leaves_the_revision_where_it_was(
    bad: dict[str, Any], error: type[Exception]
) -> None:
    state = WatchState()
    state.on_listing(listing(10, {}))
    item = {**change(11, "t1", ["spm"], {"v": 1}), **bad}
    with pytest.raises(error):
        state.on_feed(feed(10, 11, item))
    assert state.revision == 10
    for key in ("revision", "id", "task", "tags"):
        missing = {k: v for k, v in change(11, "t1", [], {"v": 1}).items() if k != key}
        with pytest.raises(KeyError):
            state.on_feed(feed(10, 11, missing))
    assert state.revision == 10


def test_a_filtered_watcher_skips_changes_it_does_not_select_but_its_revision_moves_on() -> None:
    state = WatchState(("spm",), bookmark_s=0.0)
    state.on_listing(listing(10, {}))
    events = state.on_feed(
        feed(10, 14, change(12, "t1", ["gluster"], {"v": 1}), change(13, "t2", ["spm"], {"v": 2}))
    )
    assert [(e.kind, e.task_id, e.revision) for e in events] == [("changed", "t2", 13)]
    assert state.revision == 14
    assert [
        (e.kind, e.revision) for e in state.on_feed(feed(14, 16, change(15, "t1", ["gluster"], {"v": 3})))
    ] == [("bookmark", 16)]


class Refusing(Recorder):
    """Refuses messages over ``limit`` bytes (as a broker's size limit), or fails the
    ``fail_at``-th publish as a lost connection would."""

    def __init__(self, limit: int = 1 << 30, fail_at: int = 0) -> None:
        super().__init__()
        self.limit = limit
        self.fail_at = fail_at
        self.tries = 0

    def publish(self, body: bytes, **more: Any) -> None:
        self.tries += 1
        if self.tries == self.fail_at:
            raise ConnectionResetError("lost")
        if len(body) > self.limit:
            raise PublishRefused(f"406 over {self.limit}")
        super().publish(body, **more)


def feed_on(recorder: Recorder, max_message_bytes: int) -> ChangeFeed:
    feed = ChangeFeed(
        recorder,  # type: ignore[arg-type]
        name="a",
        instance="i-a",
        log_name="log",
        max_message_bytes=max_message_bytes,
    )
    feed.start(0)
    return feed


def told(recorder: Recorder) -> list[int]:
    return [c["revision"] for message in recorder.published for c in message["changes"]]


def test_a_refused_turn_goes_out_again_in_smaller_messages_each_change_once() -> None:
    recorder = Refusing(limit=MIN_MESSAGE_BYTES)
    feed = feed_on(recorder, 4 * MIN_MESSAGE_BYTES)
    for revision in range(1, 41):
        feed.changed(revision, f"t{revision}", b'{"pad":"%b"}' % (b"x" * 200), ("spm",))

    assert feed.publish(40)

    assert feed.max_message_bytes == MIN_MESSAGE_BYTES
    assert told(recorder) == list(range(1, 41))
    assert recorder.published[-1]["revision"] == 40
    assert not feed.publish(40)  # nothing left over


def test_changes_published_before_a_lost_connection_are_not_published_again() -> None:
    recorder = Refusing(fail_at=2)
    feed = feed_on(recorder, MIN_MESSAGE_BYTES)
    for revision in range(1, 41):
        feed.changed(revision, f"t{revision}", b'{"pad":"%b"}' % (b"x" * 200), ("spm",))

    with pytest.raises(ConnectionResetError):
        feed.publish(40)
    first = told(recorder)
    assert feed.publish(40)

    assert len(first) > 0  # the first message went out, the second was lost
    assert told(recorder) == list(range(1, 41))
