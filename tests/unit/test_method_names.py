"""Method names, spelled once in bus_tasks.protocol.methods: pinned here to the SPEC's own spelling."""

from __future__ import annotations

import pytest

from bus_tasks.aggregator.methods import Dispatcher
from bus_tasks.core.view import TaskView
from bus_tasks.protocol.methods import ALIASES, READS, MethodName, canonical

# SPEC section 5's table, then bus_tasks' own methods (docs/protocol.md).
WIRE_NAMES = {
    *("Host.getAllTasks", "Host.getAllTasksInfo", "Host.getAllTasksStatuses"),
    *("Task.getStatus", "Task.getInfo", "Task.stop", "Task.clear", "Task.revert"),
    *("Task.getDetails", "Task.retag", "Host.getSubsystems", "Host.getAggregators", "Host.getTaskChanges"),
}


def test_the_names_are_the_specs_and_bus_tasks_own_and_nothing_else() -> None:
    assert {str(name) for name in MethodName} == WIRE_NAMES


def test_the_aggregator_serves_every_name_under_it_and_its_alias() -> None:
    table = Dispatcher(TaskView()).methods
    assert {method.name for method in table.values()} == set(MethodName)
    assert all(table[name].name is name for name in MethodName)
    assert all(table[alias].name is name for name, alias in ALIASES.items())


@pytest.mark.parametrize(
    ("called", "method"),
    [
        ("Host.getAllTasks", MethodName.GET_ALL_TASKS),
        ("getAllTasks", MethodName.GET_ALL_TASKS),
        ("stopTask", MethodName.STOP),
        ("Host.getTaskChanges", MethodName.GET_TASK_CHANGES),
        ("Host.getAllTask", None),
        ("gettaskstatus", None),
        ("", None),
    ],
)
def test_a_name_as_called_resolves_to_its_method_or_none(called: str, method: MethodName | None) -> None:
    assert canonical(called) is method


def test_only_calls_that_change_nothing_are_reads() -> None:
    writes = {MethodName.STOP, MethodName.CLEAR, MethodName.REVERT, MethodName.RETAG}
    assert set(MethodName) - writes == READS
