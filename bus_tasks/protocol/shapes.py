"""The shapes VDSM's clients parse: TaskDetails, a task's status and info. Pure functions of a record."""

from __future__ import annotations

from typing import Any

from bus_tasks import codec
from bus_tasks.core.model import LEGACY_STATE, State, TaskRecord


def task_details(record: TaskRecord) -> dict[str, Any]:
    """The merged info-and-status of one task, as ``getAllTasks`` returns it."""
    # The fields from the model's __dict__ (where pydantic keeps them): an attribute of a model
    # costs ~2.5x a dict's item (BaseModel's __getattr__ slows every attribute read), and this
    # runs for every event applied.
    fields = record.__dict__
    task_id, tags, state = fields["id"], fields["tags"], fields["state"]
    task_state, task_result = LEGACY_STATE[state]
    return {
        "id": task_id,
        "taskID": task_id,
        "verb": fields["verb"],
        "subsystem": fields["subsystem"],
        "tags": list(tags),
        "tag": tags[0] if tags else "",
        "state": state,  # a StrEnum: encoded as its value
        "taskState": task_state,
        "taskResult": task_result,
        "code": fields["code"],
        "message": fields["message"],
        "result": fields["result"],
        "progress": fields["progress"],
        "data": fields["data"],
        "createdAt": fields["created_at"],
        "updatedAt": fields["updated_at"],
    }


def task_details_member(record: TaskRecord) -> bytes:
    """The listing member ``"<id>":{TaskDetails}`` of a record: how the view keeps each task."""
    return codec.dumps_member(record.__dict__["id"], task_details(record))


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
