"""bus_tasks: one merged view of every task of a virtualization host, over a message bus.

Subsystems publish task events with :class:`TaskPublisher`; the :class:`Aggregator` keeps the
merged view; clients ask it with :class:`TasksClient` (``get_all_tasks`` and VDSM's legacy calls).
Importing this package opens no connection.
"""

from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.client import TasksClient, VdsmFacade
from bus_tasks.config import Settings
from bus_tasks.errors import BusTasksError
from bus_tasks.model import Event, State, TaskRecord
from bus_tasks.publisher import SeqClock, TaskPublisher
from bus_tasks.transport import BusConnection
from bus_tasks.view import TaskView

__all__ = [
    "Aggregator",
    "AggregatorPolicy",
    "BusConnection",
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
