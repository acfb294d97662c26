"""Every RPC method's name, spelled once: the aggregator's table, the client, the front doors
and the CLI use these (SPEC section 5). No I/O."""

from __future__ import annotations

from enum import StrEnum


class MethodName(StrEnum):
    """The canonical name of each method the aggregator serves (a ``str``: it goes on the wire as is)."""

    GET_ALL_TASKS = "Host.getAllTasks"
    GET_ALL_TASKS_INFO = "Host.getAllTasksInfo"
    GET_ALL_TASKS_STATUSES = "Host.getAllTasksStatuses"
    GET_TASK_CHANGES = "Host.getTaskChanges"  # a watcher's listing or replay (docs/watching.md)
    GET_SUBSYSTEMS = "Host.getSubsystems"
    GET_AGGREGATORS = "Host.getAggregators"
    GET_STATUS = "Task.getStatus"
    GET_INFO = "Task.getInfo"
    GET_DETAILS = "Task.getDetails"
    STOP = "Task.stop"
    CLEAR = "Task.clear"
    REVERT = "Task.revert"
    RETAG = "Task.retag"


# Canonical name -> flat legacy alias (VDSM's old XML-RPC verbs); bus_tasks' own methods have none.
ALIASES: dict[MethodName, str] = {
    MethodName.GET_ALL_TASKS: "getAllTasks",
    MethodName.GET_ALL_TASKS_INFO: "getAllTasksInfo",
    MethodName.GET_ALL_TASKS_STATUSES: "getAllTasksStatuses",
    MethodName.GET_STATUS: "getTaskStatus",
    MethodName.GET_INFO: "getTaskInfo",
    MethodName.STOP: "stopTask",
    MethodName.CLEAR: "clearTask",
    MethodName.REVERT: "revertTask",
}

_BY_NAME: dict[str, MethodName] = {
    **{str(name): name for name in MethodName},
    **{alias: name for name, alias in ALIASES.items()},
}

# Methods that change nothing: a client may send one again after a reconnect.
READS: frozenset[MethodName] = frozenset(
    {
        MethodName.GET_ALL_TASKS,
        MethodName.GET_ALL_TASKS_INFO,
        MethodName.GET_ALL_TASKS_STATUSES,
        MethodName.GET_TASK_CHANGES,
        MethodName.GET_SUBSYSTEMS,
        MethodName.GET_AGGREGATORS,
        MethodName.GET_STATUS,
        MethodName.GET_INFO,
        MethodName.GET_DETAILS,
    }
)


def canonical(name: str) -> MethodName | None:
    """The method called ``name`` (its canonical name or its flat alias); None for no method."""
    return _BY_NAME.get(name)
