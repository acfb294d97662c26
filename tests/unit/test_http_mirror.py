"""The HTTP front door's mirror: snapshots and resumes per selection, ids never past what is
complete, a bounded ring (gone when a revision is older), bounded client queues."""

from __future__ import annotations

from typing import Any

import pytest
from support.factories import task_id

from bus_tasks.errors import RevisionGone
from bus_tasks.frontdoors.http.mirror import Change, Mirror, Opening, Selection

A, B, C = task_id(1), task_id(2), task_id(3)


def details(n: int, *tags: str, state: str = "running") -> dict[str, Any]:
    return {"id": task_id(n), "tags": list(tags), "state": state}


def listed(**tasks: dict[str, Any]) -> Mirror:
    mirror = Mirror(history=100)
    mirror.listing(10, {t["id"]: t for t in tasks.values()})
    return mirror


def test_a_snapshot_holds_the_tasks_of_the_selection_any_or_all_of_its_tags() -> None:
    mirror = listed(
        a=details(1, "spm"), b=details(2, "gluster", "volume:gv1"), c=details(3, "spm", "gluster")
    )
    assert set(mirror.snapshot(Selection()).tasks or {}) == {A, B, C}
    assert set(mirror.snapshot(Selection(("spm", "volume:gv1"))).tasks or {}) == {A, B, C}
    assert set(mirror.snapshot(Selection(("spm", "gluster"), match_all=True)).tasks or {}) == {C}
    assert mirror.snapshot(Selection(("pm",))).tasks == {}  # exact tags, not substrings


def test_resuming_replays_only_the_changes_after_the_revision_that_the_selection_sees() -> None:
    mirror = listed(a=details(1, "spm"))
    mirror.changed(11, A, details(1, "spm", state="finished"))
    mirror.changed(12, B, details(2, "hsm"))
    mirror.changed(13, C, details(3, "spm"))
    mirror.bookmark(13)

    opening = mirror.opening(Selection(("spm",)), since=11)

    assert opening == Opening(11, replay=(Change(13, C, details(3, "spm"), ("spm",), None),))


def test_a_task_that_leaves_the_view_or_the_selection_is_replayed_as_a_change_to_none() -> None:
    mirror = listed(a=details(1, "spm"), b=details(2, "spm"))
    mirror.changed(11, A, None)  # cleared
    mirror.changed(12, B, details(2, "hsm"))  # retagged out of the selection
    mirror.changed(13, B, details(2, "other"))  # and on, still out: nothing to say
    mirror.bookmark(13)

    replay = mirror.opening(Selection(("spm",)), since=10).replay

    assert [(c.revision, c.task_id, c.task, c.tags) for c in replay] == [
        (11, A, None, ("spm",)),
        (12, B, None, ("hsm",)),
    ]


def test_a_revision_older_than_the_ring_or_past_what_is_complete_is_gone_then_snapshot() -> None:
    mirror = Mirror(history=3)
    mirror.listing(10, {})
    for revision in range(11, 16):
        mirror.changed(revision, task_id(revision), details(revision, "spm"))
    mirror.bookmark(15)
    assert mirror.floor == 12  # 11 and 12 left the ring: changes after 12 are all still there

    assert [c.revision for c in mirror.opening(Selection(), since=12).replay] == [13, 14, 15]
    for since in (11, 16):
        opening = mirror.opening(Selection(), since=since)
        assert isinstance(opening.gone, RevisionGone)
        assert opening.gone.code == -32010
        assert (opening.revision, len(opening.tasks or {})) == (15, 5)


def test_a_revision_is_complete_only_once_a_later_change_or_a_bookmark_came() -> None:
    mirror = listed()
    mirror.changed(11, A, details(1, "spm"))
    mirror.changed(11, B, details(2, "spm"))  # one event, two changes: more may follow
    assert (mirror.revision, mirror.complete) == (11, 10)
    assert mirror.snapshot(Selection()).revision == 10  # a resume from it replays revision 11

    mirror.changed(12, C, details(3, "spm"))
    assert mirror.complete == 11
    mirror.bookmark(12)
    assert mirror.complete == 12


def test_a_subscriber_gets_the_live_changes_of_its_selection_after_its_opening() -> None:
    mirror = listed(a=details(1, "spm"))
    subscriber, opening = mirror.subscribe(Selection(("spm",)), since=None)
    assert opening.tasks == {A: details(1, "spm")}

    mirror.changed(11, B, details(2, "hsm"))
    mirror.changed(12, A, details(1, "hsm"))

    assert subscriber.take() == [Change(12, A, None, ("hsm",), ("spm",))]
    mirror.unsubscribe(subscriber)
    mirror.changed(13, C, details(3, "spm"))
    assert subscriber.take() == []


def test_a_subscriber_that_does_not_keep_up_is_dropped_at_its_bound_and_its_queue_freed() -> None:
    mirror = Mirror(max_pending=3)
    mirror.listing(0, {})
    dropped: list[bool] = []
    subscriber, _ = mirror.subscribe(Selection(), since=None)
    subscriber.on_overflow = lambda: dropped.append(True)

    for revision in range(1, 4):
        mirror.changed(revision, task_id(revision), details(revision))
    assert (len(subscriber.pending), subscriber.overflowed, dropped) == (3, False, [])

    mirror.changed(4, task_id(4), details(4))
    mirror.changed(5, task_id(5), details(5))
    assert (len(subscriber.pending), subscriber.overflowed, dropped) == (0, True, [True])


def test_a_new_listing_restarts_the_ring_and_asks_every_subscriber_for_a_snapshot() -> None:
    mirror = listed(a=details(1, "spm"))
    subscriber, _ = mirror.subscribe(Selection(), since=None)
    mirror.changed(11, B, details(2, "spm"))

    mirror.listing(5, {C: details(3, "spm")})  # another log: its revisions start anew

    assert (subscriber.relisted, subscriber.take()) == (True, [])
    assert mirror.snapshot(Selection()) == Opening(5, tasks={C: details(3, "spm")})
    assert mirror.opening(Selection(), since=5) == Opening(5, replay=())
    assert mirror.opening(Selection(), since=11).gone is not None


@pytest.mark.parametrize(
    ("tags", "match_all", "task_tags", "selected"),
    [
        ((), False, (), True),
        (("a",), False, ("b", "a"), True),
        (("a", "c"), False, ("b",), False),
        (("a", "b"), True, ("a",), False),
        (("a", "b"), True, ("b", "a", "c"), True),
    ],
)
def test_selection_matches_as_get_all_tasks_selects(
    tags: tuple[str, ...], match_all: bool, task_tags: tuple[str, ...], selected: bool
) -> None:
    assert Selection(tags, match_all).matches(task_tags) is selected
