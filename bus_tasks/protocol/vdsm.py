"""VDSM's own forms: the wrapped ``{"status": ...}`` results of its Python API, and the ``spm`` rule."""

from __future__ import annotations

from typing import Any

from bus_tasks.errors import BusTasksError
from bus_tasks.protocol.methods import ALIASES, MethodName

OK_STATUS: dict[str, Any] = {"code": 0, "message": "OK"}

# VDSM's legacy listings (getAllTasksInfo, getAllTasksStatuses) return only the tasks of this tag.
LEGACY_LISTING_TAG = "spm"

# Flat VDSM verb -> the key its wrapped (Python API) result is found under.
WRAPPED_KEYS: dict[str, str] = {
    ALIASES[MethodName.GET_ALL_TASKS]: "tasks",
    ALIASES[MethodName.GET_ALL_TASKS_INFO]: "allTasksInfo",
    ALIASES[MethodName.GET_ALL_TASKS_STATUSES]: "allTasksStatus",
    ALIASES[MethodName.GET_STATUS]: "taskStatus",
    ALIASES[MethodName.GET_INFO]: "TaskInfo",
}


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
