"""The owner of test tasks: the aggregator answers for the tasks ``bus-tasks inject`` publishes.

Injected tasks belong to a one-shot command that is gone once it printed their ids, so no
process would answer their control commands: a retag would time out. In test-task mode the
aggregator consumes the control queue of the test subsystem itself and answers as the owner,
from its own view: a retag publishes the task again with its new tags (so it sticks), a stop
ends it ``recovered`` with code 411, a revert marks it ``recovered``.
"""

from __future__ import annotations

import logging

from bus_tasks import codec
from bus_tasks.core.model import EventName, State, TaskRecord, canonical_task_id
from bus_tasks.core.view import TaskView
from bus_tasks.errors import InvalidParameter
from bus_tasks.protocol.shapes import record_from_details
from bus_tasks.subsystem.control import SubsystemControl
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.transport import Bus

log = logging.getLogger(__name__)

DEFAULT_TEST_SUBSYSTEM = "test"


class TestTaskOwner(TaskPublisher):
    """A publisher of the test subsystem whose records are the view's (it holds none of its own)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, connection: Bus, subsystem: str, view: TaskView) -> None:
        super().__init__(connection, subsystem)
        self.view = view
        # Every aggregator (replicas too) may answer: the name is not claimed exclusively.
        self.control = SubsystemControl(self, exclusive=False)
        self.on_stop(self._stop)
        self.on_revert(self._revert)

    def get(self, task_id: str) -> TaskRecord:
        """The view's record of ``task_id``, taken over for this command."""
        try:
            key = canonical_task_id(task_id)
        except ValueError:
            raise InvalidParameter("taskID", task_id) from None
        entry = self.view.get(key)
        record = record_from_details(codec.loads(entry.details))
        self.adopt(record, seq=entry.seq)
        return record

    def _emit(self, event_name: EventName, record: TaskRecord) -> None:
        """Publish the change; keep no copy (the view's record is the one that counts)."""
        super()._emit(event_name, record)
        self._tasks.pop(record.id, None)

    def announce(self) -> int:
        """Nothing to announce: the view holds these tasks, and must not lose them to a resync."""
        return 0

    def _stop(self, task_id: str) -> None:
        self.fail(task_id, code=411, message="Task is aborted: stopped by Task.stop", recovered=True)

    def _revert(self, task_id: str) -> None:
        self.update(task_id, state=State.RECOVERED, message="reverted by Task.revert")
