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

# Methods a caller may send again after a failover (SPEC 17), every one: the reads change nothing,
# and a change is named by its call key (correlation id and JSON-RPC id), which the aggregator
# and the owning subsystem answer once: a repeat as the first was.
REPEATABLE: frozenset[MethodName] = READS | {
    MethodName.STOP,
    MethodName.CLEAR,
    MethodName.REVERT,
    MethodName.RETAG,
}

# For this long after a failover, a call unanswered for a quarter of its time (at least
# RESEND_AFTER_S) is sent again on a new connection (the client, a front door's bridge): a channel
# that reached a quorum queue while it elected a leader can have its publishes dropped for ~30 s
# (RabbitMQ 3.10), while a new one is served.
FAILOVER_WINDOW_S, RESEND_AFTER_S = 60.0, 2.0


def canonical(name: str) -> MethodName | None:
    """The method called ``name`` (its canonical name or its flat alias); None for no method."""
    return _BY_NAME.get(name)
