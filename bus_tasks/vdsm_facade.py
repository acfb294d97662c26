"""VDSM's Python API over a :class:`~bus_tasks.client.TasksClient`: the wrapped ``{"status": ...}`` forms."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bus_tasks.errors import BusTasksError
from bus_tasks.protocol import vdsm
from bus_tasks.protocol.methods import ALIASES, MethodName


class TaskCalls(Protocol):
    """The calls of :class:`~bus_tasks.client.TasksClient` the facade wraps."""

    def get_all_tasks(
        self, tags: str | Sequence[str] | None = None, options: dict[str, Any] | None = None
    ) -> dict[str, dict[str, Any]]: ...

    def get_all_tasks_info(self) -> dict[str, dict[str, Any]]: ...

    def get_all_tasks_statuses(self) -> dict[str, dict[str, Any]]: ...

    def get_task_status(self, task_id: str) -> dict[str, Any]: ...

    def get_task_info(self, task_id: str) -> dict[str, Any]: ...

    def stop_task(self, task_id: str) -> bool: ...

    def clear_task(self, task_id: str, *, force: bool = False) -> bool: ...

    def revert_task(self, task_id: str) -> bool: ...


class VdsmFacade:
    """VDSM's Python API: every call returns ``{"status": {"code", "message"}, <key>: result}``."""

    def __init__(self, client: TaskCalls) -> None:
        self._client = client

    def _wrapped(self, method: MethodName, call: Callable[[], Any]) -> dict[str, Any]:
        try:
            return vdsm.wrap(ALIASES[method], call())
        except BusTasksError as exc:
            return vdsm.wrap_error(exc)

    def getAllTasks(
        self, tags: str | Sequence[str] | None = None, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._wrapped(MethodName.GET_ALL_TASKS, lambda: self._client.get_all_tasks(tags, options))

    def getAllTasksInfo(self, spUUID: str | None = None, options: Any = None) -> dict[str, Any]:
        return self._wrapped(MethodName.GET_ALL_TASKS_INFO, self._client.get_all_tasks_info)

    def getAllTasksStatuses(self, spUUID: str | None = None, options: Any = None) -> dict[str, Any]:
        return self._wrapped(MethodName.GET_ALL_TASKS_STATUSES, self._client.get_all_tasks_statuses)

    def getTaskStatus(self, taskID: str) -> dict[str, Any]:
        return self._wrapped(MethodName.GET_STATUS, lambda: self._client.get_task_status(taskID))

    def getTaskInfo(self, taskID: str) -> dict[str, Any]:
        return self._wrapped(MethodName.GET_INFO, lambda: self._client.get_task_info(taskID))

    def stopTask(self, taskID: str) -> dict[str, Any]:
        return self._wrapped(MethodName.STOP, lambda: self._client.stop_task(taskID))

    def clearTask(self, taskID: str) -> dict[str, Any]:
        return self._wrapped(MethodName.CLEAR, lambda: self._client.clear_task(taskID))

    def revertTask(self, taskID: str) -> dict[str, Any]:
        return self._wrapped(MethodName.REVERT, lambda: self._client.revert_task(taskID))
