"""The subsystem side: own tasks, publish their whole record on every change, obey control commands."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from bus_tasks import names
from bus_tasks.config import redact_url
from bus_tasks.core.model import (
    SUBSYSTEM_PATTERN,
    Event,
    EventName,
    State,
    TaskRecord,
    canonical_task_id,
    describe_validation,
    utc_now,
)
from bus_tasks.errors import (
    BrokerUnavailable,
    InvalidParameter,
    UnknownTask,
)
from bus_tasks.subsystem.control import ControlHandler, SubsystemControl
from bus_tasks.subsystem.seq import SeqClock
from bus_tasks.transport import Bus

log = logging.getLogger(__name__)

_UNSET: Any = object()


class TaskPublisher:
    """Owns the tasks of one subsystem and publishes each change as a whole-record event.

    Thread-safe: tasks may be changed from any thread. A change that cannot be published raises
    ``BrokerUnavailable`` (never one of kombu's errors); :meth:`flush` raises ``PublishError``
    when the broker does not confirm in time.
    """

    def __init__(self, connection: Bus, subsystem: str, *, seq: SeqClock | None = None) -> None:
        if not isinstance(subsystem, str) or not _SUBSYSTEM_RE.fullmatch(subsystem):
            raise InvalidParameter("subsystem", subsystem)
        self.subsystem = subsystem
        self.connection = connection
        self._seq = seq or SeqClock()
        self._tasks: dict[str, TaskRecord] = {}
        self._lock = threading.RLock()
        self.control = SubsystemControl(self)

    # -- tasks --------------------------------------------------------------------------

    def create(
        self,
        verb: str,
        tags: Iterable[str] = (),
        *,
        task_id: str | None = None,
        state: State | str = State.INIT,
        message: str = "",
        progress: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> TaskRecord:
        """Create a task owned by this subsystem and publish it.

        Raises:
            InvalidParameter: for a non-UUID id, a bad tag or verb, an unknown state, or an id
                this publisher already has.
        """
        now = utc_now()
        fields = {
            "id": task_id if task_id is not None else str(uuid.uuid4()),
            "subsystem": self.subsystem,
            "verb": verb,
            "tags": tuple(tags),
            "state": state,
            "message": message,
            "progress": progress,
            "data": data if data is not None else {},
            "created_at": now,
            "updated_at": now,
        }
        with self._lock:
            record = _record(fields)
            if record.id in self._tasks:
                raise InvalidParameter(
                    "task_id", record.id, message=f"Invalid parameter: task {record.id} exists"
                )
            self._emit("created", record)
            return record

    def update(
        self,
        task_id: str,
        *,
        state: State | str | None = None,
        message: str | None = None,
        code: int | None = None,
        result: Any = _UNSET,
        progress: int | None = _UNSET,
        data: dict[str, Any] | None = None,
        tags: Iterable[str] | None = None,
    ) -> TaskRecord:
        """Change some fields of a task and publish its whole new record.

        Raises:
            UnknownTask: when this publisher does not own ``task_id``.
            InvalidParameter: when a new value is invalid; nothing is published then.
        """
        changes: dict[str, Any] = {}
        for name, value in (("state", state), ("message", message), ("code", code), ("data", data)):
            if value is not None:
                changes[name] = value
        if tags is not None:
            changes["tags"] = tuple(tags)
        if result is not _UNSET:
            changes["result"] = result
        if progress is not _UNSET:
            changes["progress"] = progress
        with self._lock:
            current = self.get(task_id)
            fields = current.model_dump()
            fields.update(changes, updated_at=utc_now())
            record = _record(fields)
            self._emit("finished" if record.state.is_done else "updated", record)
            return record

    def retag(self, task_id: str, tags: Iterable[str]) -> TaskRecord:
        """Replace the tags of a task."""
        return self.update(task_id, tags=tags)

    def finish(self, task_id: str, *, result: Any = "", message: str = "") -> TaskRecord:
        """Mark a task finished with success."""
        return self.update(task_id, state=State.FINISHED, result=result, message=message, code=0)

    def fail(self, task_id: str, *, code: int, message: str, recovered: bool = False) -> TaskRecord:
        """Mark a task done with an error: ``failed``, or ``recovered`` when its rollback succeeded."""
        state = State.RECOVERED if recovered else State.FAILED
        return self.update(task_id, state=state, code=code, message=message)

    def clear(self, task_id: str) -> None:
        """Drop a task and publish ``cleared``, so the view forgets it too."""
        with self._lock:
            record = self.get(task_id)
            self._emit("cleared", record)
            del self._tasks[record.id]

    def get(self, task_id: str) -> TaskRecord:
        """This subsystem's record of ``task_id``.

        Raises:
            UnknownTask: when this publisher does not own it.
        """
        try:
            key = canonical_task_id(task_id)
        except ValueError:
            raise InvalidParameter("taskID", task_id) from None
        record = self._tasks.get(key)
        if record is None:
            raise UnknownTask(key)
        return record

    def forget(self, task_id: str) -> bool:
        """Drop a task without publishing (the aggregator cleared it); False if it was unknown."""
        with self._lock:
            return self._tasks.pop(canonical_task_id(task_id), None) is not None

    def adopt(self, record: TaskRecord) -> None:
        """Take over an existing task of this subsystem without publishing (e.g. after a restart).

        Raises:
            InvalidParameter: when the record belongs to another subsystem.
        """
        if record.subsystem != self.subsystem:
            raise InvalidParameter("subsystem", record.subsystem)
        with self._lock:
            self._tasks[record.id] = record

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    @property
    def tasks(self) -> dict[str, TaskRecord]:
        """A snapshot of the live tasks."""
        with self._lock:
            return dict(self._tasks)

    def announce(self) -> int:
        """Re-publish every live task (resync); returns how many."""
        with self._lock:
            records = list(self._tasks.values())
            for record in records:
                self._emit("finished" if record.state.is_done else "updated", record)
            return len(records)

    def _emit(self, event_name: EventName, record: TaskRecord) -> None:
        event = Event(event=event_name, seq=self._seq.next(), task=record)
        body = event.model_dump_json(by_alias=True).encode()
        try:
            self.connection.publish(
                body,
                exchange=names.EVENTS_EXCHANGE,
                routing_key=names.event_routing_key(self.subsystem, event_name),
            )
        except self.connection.errors as exc:  # no raw kombu error leaves the library
            raise BrokerUnavailable(redact_url(self.connection.url), str(exc)) from exc
        if event_name != "cleared":
            self._tasks[record.id] = record
        log.debug("published %s task=%s seq=%d", event_name, record.id, event.seq)

    # -- control ------------------------------------------------------------------------

    def on_stop(self, handler: ControlHandler) -> None:
        """Register what stopping one of this subsystem's tasks does (asynchronously)."""
        self.control.on_stop = handler

    def on_revert(self, handler: ControlHandler) -> None:
        """Register what reverting one of this subsystem's done tasks does."""
        self.control.on_revert = handler

    def listen(self, connection: Bus) -> None:
        """Consume this subsystem's control queue on ``connection`` (drained by the caller).

        Announces every live task first (resync), so an aggregator that lost them heals.
        """
        self.control.listen(connection)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker has confirmed every event published so far.

        Raises:
            PublishError: when some are still unconfirmed at ``timeout_s``.
        """
        with self._lock:
            self.connection.flush(timeout_s)

    def close(self) -> None:
        """Flush (bounded), then close the publishing connection."""
        with self._lock:
            self.connection.close()

    def serve_control(self, connection: Bus, stop: threading.Event) -> None:
        """Answer control commands on ``connection`` until ``stop`` is set."""
        self.control.serve(connection, stop)


_SUBSYSTEM_RE = re.compile(SUBSYSTEM_PATTERN)


def _record(fields: dict[str, Any]) -> TaskRecord:
    try:
        return TaskRecord.model_validate(fields)
    except ValidationError as exc:
        raise InvalidParameter(message=f"Invalid parameter: {describe_validation(exc)}") from None
