"""VDSM's shapes: TaskDetails, task status and info, and the wrapped ``{"status": ...}`` form."""

from __future__ import annotations

from typing import Any

from bus_tasks.core.model import LEGACY_STATE, State, TaskRecord
from bus_tasks.errors import BusTasksError

OK_STATUS: dict[str, Any] = {"code": 0, "message": "OK"}

# Flat VDSM verb -> the key its wrapped (Python API) result is found under.
WRAPPED_KEYS: dict[str, str] = {
    "getAllTasks": "tasks",
    "getAllTasksInfo": "allTasksInfo",
    "getAllTasksStatuses": "allTasksStatus",
    "getTaskStatus": "taskStatus",
    "getTaskInfo": "TaskInfo",
}


def task_details(record: TaskRecord) -> dict[str, Any]:
    """The merged info-and-status of one task, as ``getAllTasks`` returns it."""
    task_state, task_result = LEGACY_STATE[record.state]
    return {
        "id": record.id,
        "taskID": record.id,
        "verb": record.verb,
        "subsystem": record.subsystem,
        "tags": list(record.tags),
        "tag": record.tags[0] if record.tags else "",
        "state": record.state,  # a StrEnum: encoded as its value
        "taskState": task_state,
        "taskResult": task_result,
        "code": record.code,
        "message": record.message,
        "result": record.result,
        "progress": record.progress,
        "data": record.data,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
    }


def task_status(task_id: str, state: State, code: int, message: str) -> dict[str, Any]:
    """VDSM's task status: ``taskID, taskState, taskResult, code, message``."""
    task_state, task_result = LEGACY_STATE[state]
    return {
        "taskID": task_id,
        "taskState": task_state,
        "taskResult": task_result,
        "code": code,
        "message": message,
    }


def task_info(task_id: str, verb: str) -> dict[str, Any]:
    """VDSM's task info: ``id, verb``."""
    return {"id": task_id, "verb": verb}


def wrap(verb: str, result: Any) -> dict[str, Any]:
    """The wrapped form of a successful flat-verb result, for scripts written against VDSM's API."""
    key = WRAPPED_KEYS.get(verb)
    wrapped: dict[str, Any] = {"status": dict(OK_STATUS)}
    if key is not None:
        wrapped[key] = result
    return wrapped


def wrap_error(error: BusTasksError) -> dict[str, Any]:
    """The wrapped form of an error: ``{"status": {"code": N, "message": S}}``."""
    return {"status": {"code": error.code, "message": error.message}}


def record_from_details(details: dict[str, Any]) -> TaskRecord:
    """The task record a ``TaskDetails`` object was made from (for tools acting as its subsystem)."""
    return TaskRecord.model_validate(
        {
            "id": details["id"],
            "subsystem": details["subsystem"],
            "verb": details["verb"],
            "tags": details["tags"],
            "state": details["state"],
            "code": details["code"],
            "message": details["message"],
            "result": details["result"],
            "progress": details["progress"],
            "data": details["data"],
            "created_at": details["createdAt"],
            "updated_at": details["updatedAt"],
        }
    )
