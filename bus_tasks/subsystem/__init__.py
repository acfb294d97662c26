"""The subsystem side: a publisher of its tasks' records, its control handling, its seq clock, and
the runner of a subsystem process."""

from bus_tasks.subsystem.control import SubsystemControl
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.subsystem.runner import SubsystemRunner
from bus_tasks.subsystem.seq import SeqClock

__all__ = ["SeqClock", "SubsystemControl", "SubsystemRunner", "TaskPublisher"]
