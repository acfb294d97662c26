"""The view's sorted ids (core/order.py) and its members' sum, kept as tasks come and go."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support.factories import make_event, task_id

from bus_tasks.core import order
from bus_tasks.core.view import Entry, TaskView

IDS = 40

ops: st.SearchStrategy[tuple[str, int]] = st.tuples(
    st.sampled_from(["put", "put", "update", "clear", "expire", "restore", "read"]), st.integers(0, IDS - 1)
)


class Changes:
    """Applies one op at a time to a view, as ingest, clears, expiry and a restore would."""

    def __init__(self, view: TaskView) -> None:
        self.view = view
        self.seqs: dict[int, int] = {}
        self.now = 0.0

    def do(self, op: str, n: int) -> None:
        view = self.view
        if op in ("put", "update"):
            self.seqs[n] = self.seqs.get(n, 0) + 1
            state = "finished" if op == "update" else "running"
            message = "x" * (n % 7 + self.seqs[n] % 3)  # members of many sizes, changing too
            view.apply(make_event(n, seq=self.seqs[n], state=state, message=message))
        elif op == "clear" and task_id(n) in view:
            view.clear(task_id(n), force=True)
        elif op == "expire":  # done tasks buried, every tombstone forgotten: ids can come back
            self.now += 10.0
            view.expire(tombstone_ttl_s=0.0, done_ttl_s=0.0, now=self.now)
        elif op == "restore":
            self.seqs[n] = self.seqs.get(n, 0) + 1
            record = make_event(n, seq=self.seqs[n]).task
            view.restore(Entry.from_record(record, self.seqs[n], view.encode_member(record)))
        elif op == "read":
            check(view)


def check(view: TaskView) -> list[str]:
    """The view's sorted ids are in order, each once, hold every live id, and few others."""
    ids = view.sorted_ids()
    assert ids == sorted(set(ids))
    assert [i for i in ids if i in view] == sorted(e.id for e in view)
    assert len(ids) - len(view) <= len(view) // order.MERGE_FRACTION
    return ids


@settings(max_examples=300, deadline=None)
@given(before=st.lists(ops, max_size=60), after=st.lists(ops, max_size=120))
def test_the_sorted_ids_hold_every_live_id_in_order_whatever_comes_and_goes(
    before: list[tuple[str, int]], after: list[tuple[str, int]]
) -> None:
    view = TaskView(clock=lambda: 0.0)
    changes = Changes(view)
    for op, n in before:
        changes.do(op, n)
    first = check(view)
    kept = list(first)
    for op, n in after:
        changes.do(op, n)
    check(view)
    assert first == kept  # a list once answered is never changed: a page may still walk it


@settings(max_examples=200, deadline=None)
@given(st.lists(ops, max_size=150))
def test_member_bytes_is_the_sum_of_the_live_members(steps: list[tuple[str, int]]) -> None:
    view = TaskView(clock=lambda: 0.0)
    changes = Changes(view)
    for op, n in steps:
        changes.do(op, n)
        assert view.member_bytes == sum(len(e.member) for e in view)


def test_an_order_nobody_reads_is_let_go_and_sorted_again_when_asked() -> None:
    view = TaskView()
    view.apply(make_event(0))
    assert view.sorted_ids() == [task_id(0)]
    for n in range(order.SLACK + 2, 0, -1):  # more new ids than the order holds, and the slack
        view.apply(make_event(n))
    assert not view._order.kept
    assert view.sorted_ids() == [task_id(n) for n in range(order.SLACK + 3)]
    assert view._order.kept


def test_a_few_new_ids_are_merged_into_the_order_without_a_sort_of_every_id() -> None:
    view = TaskView()
    for n in range(0, 200, 2):
        view.apply(make_event(n))
    view.sorted_ids()
    for n in (1, 101, 199, 250):
        view.apply(make_event(n))
    sorts: list[int] = []
    real_sorted = sorted

    def counting_sorted(items: object, **kwargs: object) -> list[str]:
        result = real_sorted(items, **kwargs)  # type: ignore[call-overload]
        sorts.append(len(result))
        return result  # type: ignore[no-any-return]

    order.sorted = counting_sorted  # type: ignore[attr-defined]
    try:
        ids = view.sorted_ids()
    finally:
        del order.sorted  # type: ignore[attr-defined]
    assert ids == sorted(task_id(n) for n in [*range(0, 200, 2), 1, 101, 199, 250])
    assert sorts == [4]  # the new ids only


def test_ids_gone_past_a_quarter_of_the_live_ones_are_dropped_from_the_order() -> None:
    view = TaskView()
    for n in range(40):
        view.apply(make_event(n))
    view.sorted_ids()
    for n in range(8):
        view.clear(task_id(n), force=True)
    assert len(view.sorted_ids()) == 40  # as many gone as a quarter of the 32 left: a page skips them
    view.clear(task_id(8), force=True)
    assert view.sorted_ids() == [task_id(n) for n in range(9, 40)]
