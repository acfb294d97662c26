"""Watch (SPEC 13, docs/watching.md): list then follow the change feed, on every transport.

A watcher runs in a thread of its own and rebuilds the view from what it is told; changes are
published while it lists and watches; its rebuilt view must equal the aggregator's answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from support.brokers import System
from support.watchers import Watcher

from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.errors import RevisionGone, UnknownTask
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

TIMEOUT_S = 15.0


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def watch(system: System, watchers: list[Watcher], **kwargs: Any) -> Watcher:
    client = system.client()
    watcher = Watcher(client, client.watch(**kwargs))
    watchers.append(watcher)
    return watcher


def settled(system: System, watcher: Watcher, tags: list[str] | None = None, match: str = "any") -> None:
    """Wait until the watcher's rebuilt selection equals the aggregator's answer."""
    client = system.client()
    try:

        def same() -> bool:
            assert watcher.error is None, watcher.error
            answer: dict[str, Any] = client.get_all_tasks(tags, {"match": match, "revision": True})
            return bool(watcher.revision >= answer["revision"] and watcher.tasks == answer["tasks"])

        try:
            wait_until(same, timeout_s=TIMEOUT_S, what="the watcher's view equals the aggregator's")
        except TimeoutError:
            answer = client.get_all_tasks(tags, {"match": match, "revision": True})
            theirs, ours = answer["tasks"], watcher.tasks
            differ = {t for t in set(theirs) | set(ours) if theirs.get(t) != ours.get(t)}
            raise AssertionError(
                f"at {watcher.revision} (aggregator {answer['revision']}) they differ on"
                f" {len(differ)}: "
                + "; ".join(f"{t}: {ours.get(t)} != {theirs.get(t)}" for t in sorted(differ)[:3])
            ) from None
    finally:
        client.close()


def finished(client: TasksClient, task_id: str) -> bool:
    try:
        return bool(client.get_task_status(task_id)["taskState"] == "finished")
    except UnknownTask:
        return False  # its events are not all applied yet


def test_a_watcher_lists_then_sees_each_change_and_its_view_equals_the_aggregators(
    system: System, watchers: list[Watcher]
) -> None:
    pub = system.publisher("vdsm")
    first = pub.create("copyImage", ["spm"], state=State.RUNNING)
    wait_until(lambda: first.id in system.aggregator.view, timeout_s=TIMEOUT_S, what="applied")

    watcher = watch(system, watchers)
    wait_until(lambda: watcher.events, timeout_s=TIMEOUT_S, what="the listing")
    listing = watcher.events[0]
    assert listing.kind == "listing"
    assert listing.tasks is not None
    assert set(listing.tasks) == {first.id}

    second = pub.create("createVolume", ["spm", "pool:1"])
    pub.update(first.id, progress=50)
    pub.finish(second.id)
    # The aggregator applied them (in order: the finish last) before the watcher is compared with it.
    client = system.client()
    wait_until(
        lambda: client.get_all_tasks().get(second.id, {}).get("state") == "finished",
        timeout_s=TIMEOUT_S,
        what="the changes applied",
    )
    settled(system, watcher)
    assert watcher.tasks[first.id]["progress"] == 50
    assert watcher.tasks[second.id]["state"] == "finished"

    system.client().clear_task(second.id)
    wait_until(lambda: second.id not in watcher.tasks, timeout_s=TIMEOUT_S, what="the clear seen")
    assert watcher.kinds()[-1] == "removed"
    settled(system, watcher)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_changes_published_while_a_watcher_lists_and_watches_leave_it_with_the_aggregators_view(
    system: System, watchers: list[Watcher], seed: int
) -> None:
    # Property-style: random creates, updates, finishes, clears and retags race the listing.
    rng = random.Random(seed)
    pub = system.publisher("vdsm", listen=True)
    live: list[str] = []
    done: list[str] = []
    tags = ["spm", "pool:1", "pool:2", "gluster"]
    clients = [system.client() for _ in range(2)]

    def step() -> None:
        roll = rng.random()
        if roll < 0.35 or not live:
            live.append(pub.create("copyImage", rng.sample(tags, rng.randint(0, 2))).id)
        elif roll < 0.6:
            pub.update(rng.choice(live), progress=rng.randint(0, 100), message=f"m{rng.random():.3f}")
        elif roll < 0.75:
            task = rng.choice(live)
            live.remove(task)
            pub.finish(task)
            done.append(task)
        elif roll < 0.85 and done:
            task = done.pop(rng.randrange(len(done)))
            client = rng.choice(clients)
            pub.flush()
            wait_until(lambda: finished(client, task), timeout_s=TIMEOUT_S, what="the finish applied")
            client.clear_task(task)
        else:
            pub.retag(rng.choice(live), rng.sample(tags, rng.randint(0, 3)))

    for _ in range(30):
        step()
    everything = watch(system, watchers)
    spm = watch(system, watchers, tags="spm")
    pools = watch(system, watchers, tags=["pool:1", "pool:2"], match="all")
    for _ in range(150):
        step()
    pub.flush()
    settled(system, everything)
    settled(system, spm, ["spm"])
    settled(system, pools, ["pool:1", "pool:2"], "all")
    for watcher in (everything, spm, pools):
        assert watcher.kinds()[0] == "listing"
        assert "listing" not in watcher.kinds()[1:], "no reason to list again"
    for client in clients:
        client.close()


def test_a_filtered_watcher_advances_on_bookmarks_while_nothing_it_selects_changes(
    system: System, watchers: list[Watcher]
) -> None:
    pub = system.publisher("gluster")
    watcher = watch(system, watchers, tags="volume:gv1")
    wait_until(lambda: watcher.events, timeout_s=TIMEOUT_S, what="the listing")
    start = watcher.revision
    for _ in range(5):
        pub.create("rebalance", ["gluster", "volume:gv2"])
    pub.flush()
    wait_until(
        lambda: any(e.kind == "bookmark" and e.revision >= start + 5 for e in watcher.events),
        timeout_s=TIMEOUT_S,
        what="a bookmark past the other volume's changes",
    )
    assert [e.kind for e in watcher.events if e.kind in ("changed", "removed")] == []


def test_a_retag_out_of_the_selection_is_told_as_a_removal(system: System, watchers: list[Watcher]) -> None:
    pub = system.publisher("vdsm", listen=True)
    task = pub.create("copyImage", ["spm"])
    wait_until(lambda: task.id in system.aggregator.view, timeout_s=TIMEOUT_S, what="applied")
    watcher = watch(system, watchers, tags="spm")
    wait_until(lambda: task.id in watcher.tasks, timeout_s=TIMEOUT_S, what="listed")

    system.client().retag_task(task.id, ["pool:1"])
    wait_until(lambda: task.id not in watcher.tasks, timeout_s=TIMEOUT_S, what="retagged away")
    assert watcher.events[-1].kind == "removed"


def test_resuming_from_a_revision_replays_what_came_after_it(system: System, watchers: list[Watcher]) -> None:
    pub = system.publisher("vdsm")
    first = watch(system, watchers)
    wait_until(lambda: first.events, timeout_s=TIMEOUT_S, what="the listing")
    early = pub.create("copyImage", ["spm"])
    settled(system, first)
    mark = first.revision
    first.stop()
    late = pub.create("createVolume", ["spm"])
    pub.update(early.id, progress=70)
    pub.flush()
    wait_until(lambda: late.id in system.aggregator.view, timeout_s=TIMEOUT_S, what="applied")

    resumed = watch(system, watchers, since=mark)
    wait_until(
        lambda: late.id in resumed.tasks and resumed.tasks.get(early.id, {}).get("progress") == 70,
        timeout_s=TIMEOUT_S,
        what="the replay",
    )
    assert "listing" not in resumed.kinds()
    assert {e.task_id for e in resumed.events if e.kind == "changed"} == {early.id, late.id}


def test_a_revision_older_than_the_history_is_gone_and_a_fresh_watch_lists_again(
    broker: Any, start_system: Any, watchers: list[Watcher]
) -> None:
    from bus_tasks.aggregator.service import AggregatorPolicy

    system = start_system(broker, policy=AggregatorPolicy(watch_history=3))
    pub = TaskPublisher(broker.connection(), "vdsm")
    for _ in range(6):
        pub.create("copyImage", ["spm"])
    pub.flush()
    wait_until(lambda: len(system.aggregator.view) == 6, timeout_s=TIMEOUT_S, what="applied")

    client = system.client()
    gone = Watcher(client, client.watch(since=1))
    watchers.append(gone)
    wait_until(lambda: gone.error is not None, timeout_s=TIMEOUT_S, what="the watch to fail")
    assert isinstance(gone.error, RevisionGone)
    assert gone.error.code == -32010
    assert "list again" in gone.error.message

    fresh = watch(system, watchers)
    settled(system, fresh)
    assert fresh.kinds()[0] == "listing"
    assert len(fresh.tasks) == 6
