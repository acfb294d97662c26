"""The end of a soak: is every task where it should be? The churning subsystems' own records
(the truth) against each replica's listing, the replicas against each other, the watchers'
views against the replicas."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bus_tasks.client import TasksClient
from bus_tasks.errors import BusTasksError

Listing = dict[str, dict[str, Any]]
# What a subsystem's record and a listing's TaskDetails must agree on.
FIELDS = ("subsystem", "verb", "tags", "state", "code", "message", "progress")
CALL_TIMEOUT_S = 10.0


def essence(task: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(tuple(task[f]) if f == "tags" else task[f] for f in FIELDS)


def differences(what: str, expected: Listing, actual: Listing) -> list[str]:
    """One line per task missing, extra or different in ``actual``; none when they agree."""
    lines = [
        f"{what}: {task_id} missing ({essence(expected[task_id])})"
        for task_id in sorted(expected.keys() - actual.keys())
    ]
    lines += [
        f"{what}: {task_id} extra ({essence(actual[task_id])})"
        for task_id in sorted(actual.keys() - expected.keys())
    ]
    for task_id in sorted(expected.keys() & actual.keys()):
        want, got = essence(expected[task_id]), essence(actual[task_id])
        if want != got:
            lines.append(f"{what}: {task_id} is {got}, not {want}")
    return lines


def read_truth(paths: Mapping[str, Path]) -> Listing:
    """Every task the churning subsystems have, by id, from the files they wrote when stopped."""
    truth: Listing = {}
    for path in paths.values():
        for record in json.loads(path.read_text()):
            truth[record["id"]] = record
    return truth


def replica_listings(url: str, names: tuple[str, ...]) -> dict[str, Listing]:
    """Each replica's listing of every task, asked through its own request queue.

    Raises:
        BusTasksError: when a call fails; LookupError when a replica is not serving.
    """
    with TasksClient(url, timeout_s=CALL_TIMEOUT_S) as client:
        rows = sorted(client.aggregators(), key=lambda row: -float(row["uptimeS"]))
    queues = {row["name"]: row["rpcQueue"] for row in rows}  # the newest instance of each name last
    listings: dict[str, Listing] = {}
    for name in names:
        if name not in queues:
            raise LookupError(f"replica {name} is not listed among {sorted(queues)}")
        with TasksClient(url, timeout_s=CALL_TIMEOUT_S, rpc_queue=queues[name]) as client:
            listings[name] = client.get_all_tasks()
    return listings


def compare(truth: Listing, listings: dict[str, Listing], subsystems: tuple[str, ...]) -> list[str]:
    """Each replica against the truth (the churning subsystems' tasks), and against the first."""
    problems: list[str] = []
    names = list(listings)
    for name in names:
        own = {t: d for t, d in listings[name].items() if d["subsystem"] in subsystems}
        problems += differences(f"replica {name} vs the subsystems", truth, own)
    for name in names[1:]:
        problems += differences(f"replica {name} vs replica {names[0]}", listings[names[0]], listings[name])
    return problems


def settle(
    url: str,
    names: tuple[str, ...],
    truth: Listing,
    subsystems: tuple[str, ...],
    *,
    timeout_s: float,
    wait: Callable[[float], bool],
    clock: Callable[[], float],
) -> tuple[list[str], dict[str, Listing]]:
    """Ask the replicas until they agree with the truth and each other, or ``timeout_s`` passes;
    the last differences (none: settled) and listings. ``wait(s)`` pauses between rounds."""
    deadline = clock() + timeout_s
    problems: list[str] = ["never asked"]
    listings: dict[str, Listing] = {}
    while True:
        try:
            listings = replica_listings(url, names)
            problems = compare(truth, listings, subsystems)
        except (BusTasksError, LookupError) as exc:
            problems = [f"replicas not answering: {exc}"]
        if not problems or clock() >= deadline or wait(2.0):
            return problems, listings


def watcher_problems(
    report: dict[str, Any], listing: Listing, selections: Mapping[str, list[str] | None]
) -> list[str]:
    """Each watcher's view against the replica's listing of its selection."""
    problems: list[str] = []
    views: dict[str, Listing] = report.get("views", {})
    for name, tags in selections.items():
        if name not in views:
            problems.append(f"watcher {name} never saw a listing")
            continue
        selected = {t: d for t, d in listing.items() if tags is None or set(tags) & set(d["tags"])}
        problems += differences(f"watcher {name} vs the replica", selected, views[name])
    return problems
