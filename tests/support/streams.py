"""The deterministic stream publishers (``procs/stream.py``) and the view they must leave behind."""

from __future__ import annotations

import signal
import sys
from collections.abc import Set
from typing import Any

from support.processes import SUBSYSTEM_SCRIPT, Process
from support.procs.stream import expected, task_id

STREAM_SCRIPT = SUBSYSTEM_SCRIPT.parent / "stream.py"
SUBSYSTEMS = ("vdsm", "gluster")
# The fields a stream sets: the rest (timestamps, result, data) are not compared.
VISIBLE_FIELDS = ("subsystem", "verb", "tags", "state", "code", "message", "progress")


def start_stream(
    broker_url: str,
    subsystem: str,
    *,
    tasks: int,
    updates: int,
    events_per_s: float | None = None,
    listen: bool = False,
) -> Process:
    """A publisher of ``tasks`` tasks (created, ``updates`` updates, finished), paced at
    ``events_per_s`` if given; with ``listen`` it stays, to answer resync requests."""
    argv = [sys.executable, str(STREAM_SCRIPT), "--broker", broker_url, "--subsystem", subsystem]
    argv += ["--tasks", str(tasks), "--updates", str(updates)]
    if events_per_s is not None:
        argv += ["--events-per-s", str(events_per_s)]
    if listen:
        argv.append("--listen")
    return Process(argv)


def hurry(publisher: Process) -> None:
    """The rest of ``publisher``'s stream unpaced: for a test whose paced part has done its work."""
    if publisher.popen.poll() is None:
        publisher.popen.send_signal(signal.SIGUSR1)


def visible(task: dict[str, Any]) -> dict[str, Any]:
    """The fields of a listed task that a stream publisher decides."""
    return {key: task[key] for key in VISIBLE_FIELDS}


def expected_view(tasks: int, *, cleared: Set[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """``{id: visible fields}`` once every stream of :data:`SUBSYSTEMS` published ``tasks`` tasks
    and the ``cleared`` ones were cleared."""
    return {
        task_id(subsystem, index): expected(subsystem, index)
        for subsystem in SUBSYSTEMS
        for index in range(tasks)
        if task_id(subsystem, index) not in cleared
    }
