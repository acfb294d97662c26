"""Listings of any size over every transport (SPEC section 14): -32012 over max_reply_bytes, and
the client pages by itself so that callers get every task."""

from __future__ import annotations

import time

import pytest
from support.brokers import Broker, System, SystemFactory

from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.errors import InvalidParameter, ReplyTooLarge
from bus_tasks.testing import wait_until

MAX_REPLY_BYTES = 16_384  # the smallest allowed: some 30 tasks
TASKS = 300  # 200 of them tagged spm: too many for one reply of the legacy listings too


@pytest.fixture
def crowded(broker: Broker, start_system: SystemFactory) -> tuple[System, list[str]]:
    """An aggregator whose replies may carry far fewer tasks than it holds."""
    system = start_system(broker, policy=AggregatorPolicy(max_reply_bytes=MAX_REPLY_BYTES))
    vdsm = system.publisher("vdsm")
    ids = [vdsm.create("copyImage", ["spm"] if n % 3 else ["hsm"]).id for n in range(TASKS)]
    wait_until(lambda: len(system.aggregator.view) == TASKS, timeout_s=30, what=f"{TASKS} tasks in the view")
    return system, ids


def test_get_all_tasks_returns_every_task_of_a_view_too_large_for_one_reply(
    crowded: tuple[System, list[str]],
) -> None:
    system, ids = crowded
    client = system.client()
    assert set(client.get_all_tasks()) == set(ids)
    assert set(client.get_all_tasks("spm")) == {i for n, i in enumerate(ids) if n % 3}
    listed = client.get_all_tasks(options={"revision": True})
    assert set(listed) == {"revision", "tasks"}
    assert set(listed["tasks"]) == set(ids)


def test_an_unpaged_listing_too_large_answers_reply_too_large_and_the_aggregator_serves_on(
    crowded: tuple[System, list[str]],
) -> None:
    system, ids = crowded
    client = system.client()
    with pytest.raises(ReplyTooLarge) as raised:
        client.call("Host.getAllTasks", {})
    assert raised.value.code == -32012
    assert raised.value.message.startswith(f"Reply too large: {TASKS} tasks (")
    assert raised.value.message.endswith("bytes); page it with options.limit")
    with pytest.raises(ReplyTooLarge):
        client.get_all_tasks_info()
    with pytest.raises(ReplyTooLarge):
        client.get_all_tasks_statuses()
    assert client.get_task_status(ids[0])["taskID"] == ids[0]


def test_a_page_asked_by_the_caller_is_answered_as_it_is(crowded: tuple[System, list[str]]) -> None:
    system, ids = crowded
    client = system.client()
    first = client.get_all_tasks(options={"limit": 10})
    assert list(first["tasks"]) == sorted(ids)[:10]
    second = client.get_all_tasks(options={"limit": 10, "continue": first["continue"]})
    assert list(second["tasks"]) == sorted(ids)[10:20]
    assert second["revision"] == first["revision"]
    with pytest.raises(InvalidParameter):
        client.get_all_tasks("spm", {"limit": 10, "continue": first["continue"]})


def test_a_watch_of_a_view_too_large_for_one_reply_lists_every_task_then_follows_changes(
    crowded: tuple[System, list[str]],
) -> None:
    system, ids = crowded
    client = system.client()
    events = client.watch().events()
    listing = next(events)
    assert (listing.kind, set(listing.tasks or {})) == ("listing", set(ids))
    late = system.publisher("late").create("copyImage", ["spm"]).id
    deadline = time.monotonic() + 20.0
    for event in events:  # idle turns yield bookmarks: the deadline is checked at least each poll
        if event.task_id == late:
            assert event.kind == "changed"
            break
        assert time.monotonic() < deadline, "the late task's change not seen within 20s"
