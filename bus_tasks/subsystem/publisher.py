"""The subsystem side: own tasks, publish their whole record on every change, obey control commands."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from bus_tasks import codec, names
from bus_tasks.config import redact_url
from bus_tasks.core.model import (
    ANNOUNCED,
    HEARTBEAT,
    SCHEMA_VERSION,
    SUBSYSTEM_PATTERN,
    Announced,
    Event,
    EventName,
    Heartbeat,
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
DEFAULT_HEARTBEAT_S = 5.0


class TaskPublisher:
    """Owns the tasks of one subsystem and publishes each change as a whole-record event.

    Thread-safe: tasks may be changed from any thread. A change that cannot be published raises
    ``BrokerUnavailable`` (never one of kombu's errors); :meth:`flush` raises ``PublishError``
    when the broker does not confirm in time.

    Run one publisher process per subsystem name: :meth:`listen` claims the name, and refuses
    with ``SubsystemTaken`` while a live process holds it.
    """

    def __init__(
        self,
        connection: Bus,
        subsystem: str,
        *,
        seq: SeqClock | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        if not isinstance(subsystem, str) or not _SUBSYSTEM_RE.fullmatch(subsystem):
            raise InvalidParameter("subsystem", subsystem)
        if not heartbeat_s > 0:
            raise InvalidParameter("heartbeat_s", heartbeat_s)
        self.subsystem = subsystem
        self.connection = connection
        self.heartbeat_s = heartbeat_s
        self.instance = uuid.uuid4().hex  # this process's claim on the name, in its heartbeats
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

    def adopt(self, record: TaskRecord, *, seq: int = 0) -> None:
        """Take over an existing task of this subsystem without publishing (e.g. after a restart).

        ``seq``: the highest seq the record was published with, if known elsewhere; later events
        of this publisher number past it.

        Raises:
            InvalidParameter: when the record belongs to another subsystem.
        """
        if record.subsystem != self.subsystem:
            raise InvalidParameter("subsystem", record.subsystem)
        with self._lock:
            self._seq.advance_past(seq)
            self._tasks[record.id] = record

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    @property
    def tasks(self) -> dict[str, TaskRecord]:
        """A snapshot of the live tasks."""
        with self._lock:
            return dict(self._tasks)

    def announce(self) -> int:
        """Publish every live task, then the end marker listing them all (resync); returns how many.

        The aggregator removes this subsystem's tasks that the marker does not list: after a
        restart, the tasks the subsystem lost leave the view. Tasks taken over with
        :meth:`adopt` (e.g. persisted ones) are announced and stay.
        """
        with self._lock:
            records = list(self._tasks.values())
            for record in records:
                self._emit("finished" if record.state.is_done else "updated", record)
            marker = Announced(
                schema_version=SCHEMA_VERSION,
                event=ANNOUNCED,
                seq=self._seq.next(),
                subsystem=self.subsystem,
                tasks=frozenset(r.id for r in records),
            )
            self._publish(codec.dumps(marker.to_wire()), names.event_routing_key(self.subsystem, ANNOUNCED))
            return len(records)

    def beat(self, *, stopped: bool = False) -> None:
        """Publish one heartbeat (``stopped``: the last one, on a clean stop).

        :meth:`serve_control` sends them every ``heartbeat_s``; a process that drains its control
        connection itself calls this as often.
        """
        heartbeat = Heartbeat(
            schema_version=SCHEMA_VERSION,
            event=HEARTBEAT,
            subsystem=self.subsystem,
            instance=self.instance,
            state="stopped" if stopped else "alive",
            interval_s=self.heartbeat_s,
            tasks=len(self._tasks),
            host=_HOST,
            pid=os.getpid(),
            sent_at=utc_now(),
        )
        with self._lock:
            # Worth nothing once stale: not persistent, and gone from the queue when it expires.
            self._publish(
                codec.dumps(heartbeat.to_wire()),
                names.heartbeat_routing_key(self.subsystem),
                persistent=False,
                expiration_s=3 * self.heartbeat_s,
            )

    def _emit(self, event_name: EventName, record: TaskRecord) -> None:
        event = Event(event=event_name, seq=self._seq.next(), task=record)
        self._publish(
            event.model_dump_json(by_alias=True).encode(),
            names.event_routing_key(self.subsystem, event_name),
        )
        if event_name != "cleared":
            self._tasks[record.id] = record
        log.debug("published %s task=%s seq=%d", event_name, record.id, event.seq)

    def _publish(
        self, body: bytes, routing_key: str, *, persistent: bool = True, expiration_s: float | None = None
    ) -> None:
        try:
            self.connection.publish(
                body,
                exchange=names.EVENTS_EXCHANGE,
                routing_key=routing_key,
                persistent=persistent,
                expiration_s=expiration_s,
            )
        except self.connection.errors as exc:  # no raw kombu error leaves the library
            raise BrokerUnavailable(redact_url(self.connection.url), str(exc)) from exc

    # -- control ------------------------------------------------------------------------

    def on_stop(self, handler: ControlHandler) -> None:
        """Register what stopping one of this subsystem's tasks does (asynchronously)."""
        self.control.on_stop = handler

    def on_revert(self, handler: ControlHandler) -> None:
        """Register what reverting one of this subsystem's done tasks does."""
        self.control.on_revert = handler

    def listen(self, connection: Bus) -> None:
        """Claim the subsystem name and consume its control queue on ``connection`` (drained by
        the caller); then announce every live task (resync), so the view heals.

        Raises:
            SubsystemTaken: when a live process already owns this subsystem name.
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
        """Listen (unless :meth:`listen` was called on ``connection``), then answer control
        commands on it and send heartbeats until ``stop`` is set; the last heartbeat says the
        subsystem stopped.

        Raises:
            SubsystemTaken: when a live process already owns this subsystem name.
        """
        self.control.serve(connection, stop)


_SUBSYSTEM_RE = re.compile(SUBSYSTEM_PATTERN)
_HOST = socket.gethostname()[:255]


def _record(fields: dict[str, Any]) -> TaskRecord:
    try:
        return TaskRecord.model_validate(fields)
    except ValidationError as exc:
        raise InvalidParameter(message=f"Invalid parameter: {describe_validation(exc)}") from None
