"""The subsystem side: a publisher of its tasks' records, its control handling, its seq clock."""

from bus_tasks.subsystem.publisher import SeqClock, TaskPublisher

__all__ = ["SeqClock", "TaskPublisher"]
