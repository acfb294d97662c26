"""A subsystem's complete announce reconciles the view (SPEC 11): what it no longer has leaves."""

from __future__ import annotations

import orjson
import pytest
from support.factories import make_event, task_id

from bus_tasks.core.model import SCHEMA_VERSION, Announced, decode_announced
from bus_tasks.core.view import Outcome, TaskView
from bus_tasks.errors import EventRejected

MAX_BYTES = 1 << 20


def announced(subsystem: str, seq: int, *numbers: int) -> Announced:
    return Announced(
        schema_version=SCHEMA_VERSION,
        event="announced",
        seq=seq,
        subsystem=subsystem,
        tasks=frozenset(task_id(n) for n in numbers),
    )


@pytest.fixture
def view() -> TaskView:
    view = TaskView(clock=lambda: 1000.0)
    for n in (1, 2, 3):
        view.apply(make_event(n, seq=10 + n))
    view.apply(make_event(4, seq=14, subsystem="gluster", tags=("gluster",)))
    return view


def test_tasks_of_the_subsystem_missing_from_its_announce_leave_the_view_as_tombstones(
    view: TaskView,
) -> None:
    gone = view.reconcile(announced("vdsm", 100, 2))

    assert sorted(e.id for e in gone) == [task_id(1), task_id(3)]
    assert [e.id for e in view] == [task_id(2), task_id(4)]
    assert set(view.tombstones) == {task_id(1), task_id(3)}


def test_a_late_event_of_a_reconciled_task_does_not_bring_it_back(view: TaskView) -> None:
    view.reconcile(announced("vdsm", 100, 2))

    assert view.apply(make_event(1, seq=99)) is Outcome.STALE
    assert task_id(1) not in view


def test_an_announce_leaves_the_tasks_of_other_subsystems_alone(view: TaskView) -> None:
    view.reconcile(announced("vdsm", 100))

    assert [e.id for e in view] == [task_id(4)]


def test_a_task_updated_after_the_announce_began_is_kept_though_the_marker_does_not_list_it(
    view: TaskView,
) -> None:
    view.apply(make_event(5, seq=101))  # created after the marker's seq was taken

    gone = view.reconcile(announced("vdsm", 100, 1, 2, 3))

    assert gone == []
    assert task_id(5) in view


def test_a_marker_listing_tasks_whose_events_come_later_removes_nothing_of_them(view: TaskView) -> None:
    # Redelivery may put the marker before the announced tasks' own events.
    gone = view.reconcile(announced("vdsm", 100, 1, 2, 3, 7))
    view.apply(make_event(7, seq=99))

    assert gone == []
    assert task_id(7) in view


def test_a_marker_listing_a_task_of_another_subsystem_is_rejected_and_changes_nothing(view: TaskView) -> None:
    with pytest.raises(EventRejected, match=r"lists task .* of subsystem 'gluster'"):
        view.reconcile(announced("vdsm", 100, 4))

    assert len(view) == 4


def test_the_marker_decodes_from_the_wire_and_lists_its_tasks_sorted() -> None:
    marker = announced("vdsm", 7, 2, 1)
    body = orjson.dumps(marker.to_wire())

    assert orjson.loads(body)["tasks"] == [task_id(1), task_id(2)]
    assert decode_announced(body, max_bytes=MAX_BYTES) == marker


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"schema":1,"event":"announced","seq":1,"subsystem":"vdsm"}', "tasks: Field required"),
        (b'{"schema":1,"event":"announced","seq":1,"subsystem":"vdsm","tasks":["x"]}', "tasks.0"),
        (b'{"schema":2,"event":"announced","seq":1,"subsystem":"vdsm","tasks":[]}', "schema"),
        (b"[]", "invalid announce marker"),
    ],
)
def test_a_bad_marker_is_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(EventRejected, match="invalid announce marker") as caught:
        decode_announced(body, max_bytes=MAX_BYTES)
    assert reason in caught.value.reason
