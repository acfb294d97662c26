"""Pure mapping of gluster's tasks to bus_tasks records (SPEC section 8, GLUSTER.md's tables)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bus_tasks.core.model import TAG_PATTERN, State, TaskRecord
from bus_tasks.errors import GeneralError, TaskAborted
from bus_tasks.plugins.gluster.xml import Counters, ListedTask, MigrationStatus

# gluster's <type> -> (the verb, VDSM's taskType)
KINDS: dict[str, tuple[str, str]] = {
    "Rebalance": ("rebalance", "REBALANCE"),
    "Remove brick": ("removeBrick", "REMOVE_BRICK"),
    "Replace brick": ("replaceBrick", "REPLACE_BRICK"),
}
REMOVE_BRICK = "Remove brick"

# statusStr -> what it means for a task; fix-layout states as their plain twins (GLUSTER.md).
_OUTCOMES: dict[str, str] = {
    "not started": "init",
    "in progress": "running",
    "stopped": "stopped",
    "completed": "finished",
    "failed": "failed",
    "fix-layout in progress": "running",
    "fix-layout stopped": "stopped",
    "fix-layout completed": "finished",
    "fix-layout failed": "failed",
    "reset due to replace-brick": "failed",
    "reset due to reset-brick": "failed",
    "unknown": "unknown",
}
# The <status> integers, read only when statusStr is one gluster's tables do not have.
_STATUS_STRS = dict(enumerate(_OUTCOMES))
_STATES = {
    "init": State.INIT,
    "running": State.RUNNING,
    "stopped": State.FAILED,
    "finished": State.FINISHED,
    "failed": State.FAILED,
    "unknown": State.UNKNOWN,
}
_TAG_RE = re.compile(TAG_PATTERN)


class UnknownTaskType(ValueError):
    """Raised for a gluster task type that has no verb here."""


@dataclass(frozen=True)
class Desired:
    """What the record of a listed gluster task should say now."""

    task_id: str
    verb: str
    tags: tuple[str, ...]
    state: State
    code: int
    message: str
    data: dict[str, Any]


def desired(task: ListedTask, status: MigrationStatus | None) -> Desired:
    """The record fields of ``task``; ``status`` (its counters) is None for a replace-brick.

    Raises:
        UnknownTaskType: for a ``<type>`` not in :data:`KINDS`.
    """
    if task.kind not in KINDS:
        raise UnknownTaskType(f"gluster task type {task.kind!r} is not one of {sorted(KINDS)}")
    verb, task_type = KINDS[task.kind]
    status_str = status.aggregate.status_str if status is not None else task.status_str
    number = status.aggregate.status if status is not None else task.status
    outcome = outcome_of(status_str, number)
    data: dict[str, Any] = {"volume": task.volume, "type": task_type, "bricks": list(task.bricks)}
    data["status"] = status_str
    if status is not None:
        data.update(_status_data(status))
    message = status_str
    if task.kind == REMOVE_BRICK:
        data["commitPending"] = outcome == "finished"
        if outcome == "finished":
            message = f"{status_str}: migration complete, commit pending"
    code = 0
    if outcome == "stopped":
        code, message = TaskAborted.code, f"{TaskAborted.title}: {verb} {status_str}"
    elif outcome == "failed":
        code, message = GeneralError.code, f"{GeneralError.title}: gluster reports {verb} {status_str!r}"
    return Desired(
        task_id=task.task_id,
        verb=verb,
        tags=tags_for(task.volume, task_type),
        state=_STATES[outcome],
        code=code,
        message=message,
        data=data,
    )


def outcome_of(status_str: str, status: int | None) -> str:
    """``init``, ``running``, ``finished``, ``stopped``, ``failed`` or ``unknown`` for a status."""
    if status_str in _OUTCOMES:
        return _OUTCOMES[status_str]
    return _OUTCOMES[_STATUS_STRS[status]] if status in _STATUS_STRS else "unknown"


def tags_for(volume: str, task_type: str) -> tuple[str, ...]:
    """``gluster``, ``volume:<name>``, ``type:<type>``; one that is not a valid tag is left out."""
    tags = ("gluster", f"volume:{volume}", f"type:{task_type}")
    return tuple(tag for tag in tags if _TAG_RE.fullmatch(tag))


def changes(current: TaskRecord, want: Desired) -> dict[str, Any]:
    """The fields of ``current`` that differ from ``want`` (tags stay: retagging is the owner's)."""
    fields = {"state": want.state, "code": want.code, "message": want.message, "data": want.data}
    return {name: value for name, value in fields.items() if getattr(current, name) != value}


def vanished(current: TaskRecord) -> dict[str, Any]:
    """What to publish of a task gluster no longer lists (stopped, committed, or replaced)."""
    if not current.state.is_done:
        why = "stopped by request" if current.state.is_aborting else "gluster no longer lists it (stopped)"
        return {"state": State.FAILED, "code": TaskAborted.code, "message": f"{TaskAborted.title}: {why}"}
    if current.data.get("commitPending"):
        return {
            "data": {**current.data, "commitPending": False},
            "message": "completed; gluster no longer lists it (committed, or stopped before commit)",
        }
    return {}  # a completed rebalance that a new task replaced: it stays finished


def stopped(current: TaskRecord, status: MigrationStatus) -> dict[str, Any]:
    """What to publish of a task once its ``stop`` answered ``status`` (the final counters)."""
    data = {**current.data, **_status_data(status)}
    if "commitPending" in data:
        data["commitPending"] = False
    message = f"{TaskAborted.title}: stopped by request"
    return {"state": State.FAILED, "code": TaskAborted.code, "message": message, "data": data}


def _status_data(status: MigrationStatus) -> dict[str, Any]:
    """The aggregate counters, gluster's status words, and the per-node list (VDSM's ``hosts``)."""
    hosts = [
        {
            "name": node.name,
            "id": node.node_id,
            "status": node.counters.status_str,
            **_counters(node.counters),
        }
        for node in status.nodes
    ]
    return {**_counters(status.aggregate), "status": status.aggregate.status_str, "hosts": hosts}


def _counters(counters: Counters) -> dict[str, Any]:
    """VDSM's names for gluster's counters."""
    return {
        "filesScanned": counters.files_scanned,
        "filesMoved": counters.files_moved,
        "filesFailed": counters.files_failed,
        "filesSkipped": counters.files_skipped,
        "totalSizeMoved": counters.total_size_moved,
        "runtime": counters.runtime_s,
    }
