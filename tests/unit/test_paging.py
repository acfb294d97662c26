"""Paged listings (SPEC section 14): pages in id order, every stable task exactly once, tokens, sizes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.factories import make_event, task_id

from bus_tasks.aggregator.methods import Dispatcher
from bus_tasks.core.paging import Pager, PageTooLarge
from bus_tasks.core.view import TaskView
from bus_tasks.errors import InvalidParameter
from bus_tasks.protocol import paging

TAGS = ("a", "b", "c")
IDS = 24

# -- the pager: a property over any page size and any changes between pages ------------------

ops: st.SearchStrategy[tuple[str, int, list[str]]] = st.one_of(
    st.tuples(
        st.just("put"), st.integers(0, IDS - 1), st.lists(st.sampled_from(TAGS), max_size=2, unique=True)
    ),
    st.tuples(st.just("clear"), st.integers(0, IDS - 1), st.just([])),
)


def _put(view: TaskView, seqs: dict[int, int], n: int, tags: list[str]) -> None:
    seqs[n] = seqs.get(n, 0) + 1
    view.apply(make_event(n, seq=seqs[n], tags=tuple(tags)))


@settings(max_examples=200, deadline=None)
@given(
    initial=st.dictionaries(
        st.integers(0, IDS - 1), st.lists(st.sampled_from(TAGS), max_size=2, unique=True)
    ),
    limit=st.integers(1, IDS + 2),
    walk=st.integers(1, 5),
    query=st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
    match_all=st.booleans(),
    between=st.lists(st.tuples(st.lists(ops, max_size=4), st.booleans()), max_size=IDS + 2),
)
def test_paging_lists_every_stable_task_exactly_once_in_id_order_whatever_changes_between_pages(
    initial: dict[int, list[str]],
    limit: int,
    *,
    walk: int,
    query: list[str],
    match_all: bool,
    between: list[tuple[list[tuple[str, int, list[str]]], bool]],
) -> None:
    view = TaskView(clock=lambda: 0.0)
    seqs: dict[int, int] = {}
    for n, tags in initial.items():
        _put(view, seqs, n, tags)

    def matching() -> set[str]:
        return {e.id for e in view.select(query, match_all=match_all)}

    stable = matching()  # narrowed to what matches before and after every change
    pager = Pager(view, walk=walk)
    listed: list[str] = []
    after: str | None = None
    rounds = iter(between)
    while True:
        page = pager.page("listing", query, match_all=match_all, after=after, limit=limit)
        assert len(page.entries) <= limit
        listed.extend(e.id for e in page.entries)
        if page.last_id is None:
            break
        after = page.last_id
        changes, other_process = next(rounds, ([], False))
        for op, n, tags in changes:
            if op == "put" and task_id(n) not in view.tombstones:
                _put(view, seqs, n, tags)
            elif op == "clear" and task_id(n) in view:
                view.clear(task_id(n), force=True)
            stable &= matching()
        if other_process:  # the next page is asked of a process that never saw this listing
            pager = Pager(view, walk=walk)
    assert listed == sorted(set(listed))  # id order, none twice
    assert stable <= set(listed)


def test_a_page_ends_early_when_the_next_task_would_not_fit_its_bytes() -> None:
    view = TaskView()
    for n in range(5):
        view.apply(make_event(n))
    size = len(view.get(task_id(0)).member) + 1
    page = Pager(view).page("l", [], match_all=False, after=None, limit=5, max_bytes=2 * size + 1)
    assert [e.id for e in page.entries] == [task_id(0), task_id(1)]
    assert page.last_id == task_id(1)


@pytest.mark.parametrize("walk", [1, 2, 3, 100])
def test_a_page_cut_by_its_bytes_lists_what_fits_whatever_ids_it_walks_at_a_time(walk: int) -> None:
    view = TaskView()
    for n in range(9):
        view.apply(make_event(n))
    view.sorted_ids()
    view.clear(task_id(1), force=True)  # still in the sorted ids: skipped
    size = len(view.get(task_id(0)).member) + 1
    pager = Pager(view, walk=walk)
    page = pager.page("l", [], match_all=False, after=None, limit=5, max_bytes=3 * size)
    assert [e.id for e in page.entries] == [task_id(0), task_id(2), task_id(3)]
    assert page.members == [e.member for e in page.entries]
    assert page.last_id == task_id(3)
    rest = pager.page("l", [], match_all=False, after=page.last_id, limit=5, max_bytes=9 * size)
    assert [e.id for e in rest.entries] == [task_id(n) for n in range(4, 9)]
    assert rest.last_id is None


def test_a_page_too_small_for_one_task_is_refused() -> None:
    view = TaskView()
    view.apply(make_event(1))
    with pytest.raises(PageTooLarge):
        Pager(view).page("l", [], match_all=False, after=None, limit=5, max_bytes=10)


# -- tokens --------------------------------------------------------------------------------


@given(
    after=st.text(max_size=40),
    revision=st.integers(0, 2**53),
    tags=st.lists(st.sampled_from(TAGS), max_size=3),
    match_all=st.booleans(),
)
def test_a_token_round_trips_for_its_own_filter(
    after: str, revision: int, tags: list[str], match_all: bool
) -> None:
    digest = paging.filter_digest(tags, match_all=match_all)
    cursor = paging.Cursor("listing", revision, after, digest)
    assert paging.decode_token(paging.encode_token(cursor), tags, match_all=match_all) == cursor


def test_a_token_used_with_other_tags_or_match_is_invalid() -> None:
    token = paging.encode_token(paging.Cursor("l", 1, "x", paging.filter_digest(["a"], match_all=False)))
    with pytest.raises(InvalidParameter):
        paging.decode_token(token, ["b"], match_all=False)
    with pytest.raises(InvalidParameter):
        paging.decode_token(token, ["a"], match_all=True)


@pytest.mark.parametrize("token", ["", "!!!", "bm90IGpzb24", "e30", 7, None, ["x"], "A" * 2000])
def test_a_malformed_token_is_invalid(token: Any) -> None:
    with pytest.raises(InvalidParameter):
        paging.decode_token(token, [], match_all=False)


# -- Host.getAllTasks over RPC ----------------------------------------------------------------


def _dispatcher(count: int, **kwargs: Any) -> Dispatcher:
    view = TaskView()
    for n in reversed(range(count)):  # inserted out of id order: pages still come in id order
        view.apply(make_event(n, tags=("spm",) if n % 2 else ("hsm",)))
    view.revision = 42
    return Dispatcher(view, **kwargs)


def _call(dispatcher: Dispatcher, method: str, params: Any) -> dict[str, Any]:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    reply = dispatcher.handle(body)
    assert reply.body is not None
    return dict(orjson.loads(reply.body))


def test_get_all_tasks_pages_in_id_order_with_the_first_pages_revision() -> None:
    dispatcher = _dispatcher(7)
    first = _call(dispatcher, "Host.getAllTasks", {"options": {"limit": 3}})["result"]
    assert set(first) == {"revision", "tasks", "continue"}
    assert list(first["tasks"]) == [task_id(n) for n in range(3)]
    assert first["revision"] == 42
    dispatcher.view.revision = 50  # the view moves on between pages
    listed, token = list(first["tasks"]), first["continue"]
    while token is not None:
        page = _call(dispatcher, "Host.getAllTasks", {"options": {"limit": 3, "continue": token}})["result"]
        assert page["revision"] == 42
        listed.extend(page["tasks"])
        token = page["continue"]
    assert listed == [task_id(n) for n in range(7)]


def test_get_all_tasks_pages_only_the_tasks_of_its_tags() -> None:
    dispatcher = _dispatcher(7)
    page = _call(dispatcher, "Host.getAllTasks", {"tags": ["spm"], "options": {"limit": 100_000}})["result"]
    assert list(page["tasks"]) == [task_id(n) for n in (1, 3, 5)]
    assert page["continue"] is None


@pytest.mark.parametrize("limit", [0, -1, 100_001, "10", True, 2.5, None])
def test_get_all_tasks_with_a_bad_limit_is_invalid_parameter(limit: Any) -> None:
    options: dict[str, Any] = {"limit": limit}
    if limit is None:
        options["continue"] = "e30"  # a token without a limit
    reply = _call(_dispatcher(3), "Host.getAllTasks", {"options": options})
    assert reply["error"]["code"] == 1000


def test_get_all_tasks_with_a_token_of_other_tags_is_invalid_parameter() -> None:
    dispatcher = _dispatcher(5)
    token = _call(dispatcher, "Host.getAllTasks", {"tags": "spm", "options": {"limit": 1}})["result"][
        "continue"
    ]
    reply = _call(dispatcher, "Host.getAllTasks", {"tags": "hsm", "options": {"limit": 1, "continue": token}})
    assert reply["error"]["code"] == 1000


@pytest.mark.parametrize("count", [0, 1, 2, 5])
def test_a_page_of_any_length_is_one_json_object(count: int) -> None:
    dispatcher = _dispatcher(count)
    page = _call(dispatcher, "Host.getAllTasks", {"options": {"limit": 3}})["result"]
    assert list(page["tasks"]) == [task_id(n) for n in range(min(count, 3))]
    assert all(task["taskID"] == key for key, task in page["tasks"].items())
    assert page["revision"] == 42
    assert (page["continue"] is None) == (count <= 3)


def test_a_listing_over_max_reply_bytes_answers_reply_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    dispatcher = _dispatcher(100, max_reply_bytes=16_384)
    size = sum(len(e.member) + 1 for e in dispatcher.view)

    def select(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a listing of every task refused is not built: the view keeps its size")

    monkeypatch.setattr(dispatcher.view, "select", select)
    reply = _call(dispatcher, "Host.getAllTasks", {})
    assert reply["error"] == {
        "code": -32012,
        "message": f"Reply too large: 100 tasks ({size} bytes); page it with options.limit",
    }


@pytest.mark.parametrize("method", ["Host.getAllTasksInfo", "getAllTasksStatuses"])
def test_a_legacy_listing_over_max_reply_bytes_answers_reply_too_large(method: str) -> None:
    reply = _call(_dispatcher(400, max_reply_bytes=16_384), method, {})
    assert reply["error"]["code"] == -32012
    assert reply["error"]["message"].startswith("Reply too large: 200 tasks (")


def test_pages_stay_under_max_reply_bytes_whatever_the_limit() -> None:
    dispatcher = _dispatcher(100, max_reply_bytes=16_384)
    listed: list[str] = []
    token = None
    while True:
        options = {"limit": 100_000} | ({"continue": token} if token else {})
        body = dispatcher.handle(
            orjson.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "Host.getAllTasks", "params": {"options": options}}
            )
        ).body
        assert body is not None
        assert len(body) <= 16_384
        page = orjson.loads(body)["result"]
        listed.extend(page["tasks"])
        token = page["continue"]
        if token is None:
            break
    assert listed == [task_id(n) for n in range(100)]
