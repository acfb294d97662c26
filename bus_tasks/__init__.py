"""bus_tasks: one merged view of every task of a virtualization host, over a message bus.

Subsystems publish task events with :class:`TaskPublisher`; the :class:`Aggregator` keeps the
merged view; clients ask it with :class:`TasksClient` (``get_all_tasks`` and VDSM's legacy calls).
Importing this package opens no connection, and loads nothing until a name is used: the pure
core (``bus_tasks.core.model``, ``bus_tasks.core.view``) never loads kombu.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bus_tasks.aggregator import Aggregator, AggregatorPolicy
    from bus_tasks.client import TasksClient
    from bus_tasks.config import Settings
    from bus_tasks.core.model import Event, State, TaskRecord
    from bus_tasks.core.view import TaskView
    from bus_tasks.errors import BusTasksError
    from bus_tasks.subsystem.publisher import TaskPublisher
    from bus_tasks.subsystem.seq import SeqClock
    from bus_tasks.transport import BusOptions
    from bus_tasks.vdsm_facade import VdsmFacade

# Public name -> the module that defines it; imported on first use (PEP 562).
_EXPORTS = {
    "Aggregator": "bus_tasks.aggregator",
    "AggregatorPolicy": "bus_tasks.aggregator",
    "BusOptions": "bus_tasks.transport",
    "BusTasksError": "bus_tasks.errors",
    "Event": "bus_tasks.core.model",
    "SeqClock": "bus_tasks.subsystem.seq",
    "Settings": "bus_tasks.config",
    "State": "bus_tasks.core.model",
    "TaskPublisher": "bus_tasks.subsystem.publisher",
    "TaskRecord": "bus_tasks.core.model",
    "TaskView": "bus_tasks.core.view",
    "TasksClient": "bus_tasks.client",
    "VdsmFacade": "bus_tasks.vdsm_facade",
}

__all__ = [
    "Aggregator",
    "AggregatorPolicy",
    "BusOptions",
    "BusTasksError",
    "Event",
    "SeqClock",
    "Settings",
    "State",
    "TaskPublisher",
    "TaskRecord",
    "TaskView",
    "TasksClient",
    "VdsmFacade",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bus_tasks' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
