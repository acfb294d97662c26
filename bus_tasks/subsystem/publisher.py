"""The subsystem side: own tasks, publish their whole record on every change, obey control commands."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bus_tasks import codec, names
from bus_tasks.aggregator import methods as rpc
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
    BusTasksError,
    GeneralError,
    InvalidParameter,
    TaskAborted,
    TaskNotFinished,
    UnknownTask,
)
from bus_tasks.transport import Bus, Delivery, ShutdownRequested

log = logging.getLogger(__name__)

ControlHandler = Callable[[str], None]
_UNSET: Any = object()


class SeqClock:
    """Strictly increasing sequence numbers: microseconds of the wall clock, bumped past the last.

    With ``path``, a high-water mark is leased ahead in blocks and kept on disk, so numbers keep
    increasing across restarts even if the clock steps back.
    """

    def __init__(self, path: Path | None = None, *, lease: int = 10_000_000) -> None:
        self._path = path
        self._lease = lease
        self._last = 0
        self._leased = 0
        self._lock = threading.Lock()
        if path is not None and path.is_file():
            text = path.read_text().strip()
            self._last = self._leased = int(text) if text else 0

    def next(self) -> int:
        with self._lock:
            value = max(self._last + 1, time.time_ns() // 1000)
            if self._path is not None and value > self._leased:
                self._leased = value + self._lease
                tmp = self._path.with_suffix(".tmp")
                tmp.write_text(str(self._leased))
                os.replace(tmp, self._path)
            self._last = value
            return value


class TaskPublisher:
    """Owns the tasks of one subsystem and publishes each change as a whole-record event.

    Thread-safe: tasks may be changed from any thread.
    """

    def __init__(self, connection: Bus, subsystem: str, *, seq: SeqClock | None = None) -> None:
        if not isinstance(subsystem, str) or not _SUBSYSTEM_RE.fullmatch(subsystem):
            raise InvalidParameter("subsystem", subsystem)
        self.subsystem = subsystem
        self.connection = connection
        self._seq = seq or SeqClock()
        self._tasks: dict[str, TaskRecord] = {}
        self._lock = threading.RLock()
        self._on_stop: ControlHandler | None = None
        self._on_revert: ControlHandler | None = None

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
        self.connection.publish(
            body,
            exchange=names.EVENTS_EXCHANGE,
            routing_key=names.event_routing_key(self.subsystem, event_name),
        )
        if event_name != "cleared":
            self._tasks[record.id] = record
        log.debug("published %s task=%s seq=%d", event_name, record.id, event.seq)

    # -- control ------------------------------------------------------------------------

    def on_stop(self, handler: ControlHandler) -> None:
        """Register what stopping one of this subsystem's tasks does (asynchronously)."""
        self._on_stop = handler

    def on_revert(self, handler: ControlHandler) -> None:
        """Register what reverting one of this subsystem's done tasks does."""
        self._on_revert = handler

    def listen(self, connection: Bus) -> None:
        """Consume this subsystem's control queue on ``connection`` (drained by the caller).

        Announces every live task first (resync), so an aggregator that lost them heals.
        """
        queue = connection.declare_control_queue(self.subsystem)
        connection.consume(queue, lambda d: self._on_control(connection, d), prefetch=16)
        announced = self.announce()
        log.info("%s listening for control commands; announced %d tasks", self.subsystem, announced)

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
        try:
            self.listen(connection)
            while not stop.is_set():
                try:
                    connection.drain(0.1)
                except connection.errors:
                    connection.recover()
        except ShutdownRequested as exc:
            log.warning("%s", exc)  # the broker was away when the stop came

    def _on_control(self, connection: Bus, delivery: Delivery) -> None:
        request_id: rpc.RequestId = None
        try:
            request = codec.loads(delivery.body)
            request_id = request.get("id")
            method = request["method"]
            task_id = str(request.get("params", {}).get("taskID", ""))
            result = self._control(method, task_id)
            body = rpc.result_body(request_id, result)
        except ShutdownRequested:
            raise  # stopping while the broker is away: no answer to give
        except BusTasksError as exc:
            log.warning("control command for %s failed: %s", self.subsystem, exc)
            body = rpc.error_body(request_id, exc)
        except Exception as exc:
            log.exception("control command for %s crashed", self.subsystem)
            body = rpc.error_body(request_id, GeneralError(type(exc).__name__))
        if request_id is not None and delivery.reply_to:
            connection.publish(
                body,
                routing_key=delivery.reply_to,
                correlation_id=delivery.correlation_id,
                persistent=False,
            )
        delivery.ack()

    def _control(self, method: str, task_id: str) -> bool:
        if method == "resync":
            log.info("resync requested: announced %d tasks", self.announce())
            return True
        if method == "clear":
            with self._lock:
                dropped = self._tasks.pop(canonical_task_id(task_id), None)
            log.info(
                "task %s cleared by the aggregator (%s)",
                task_id,
                "dropped" if dropped else "unknown",
            )
            return True
        record = self.get(task_id)
        handler = {"stop": self._on_stop, "revert": self._on_revert}.get(method, _UNSET)
        if handler is _UNSET:
            raise GeneralError(message=f"General Exception: unknown control command {method!r}")
        if handler is None:
            raise GeneralError(message=f"General Exception: {self.subsystem} cannot {method} tasks")
        if method == "stop":
            if record.state.is_done:
                return True
            if record.state.is_aborting:
                raise TaskAborted(record.id, record.state.value)
            # Stop is asynchronous: the task shows aborting at once, its handler ends it later.
            self.update(record.id, state=State.ABORTING)
        elif not record.state.is_done:
            raise TaskNotFinished(record.id, record.state.value)
        log.info("control %s task=%s", method, record.id)
        handler(record.id)
        return True


_SUBSYSTEM_RE = re.compile(SUBSYSTEM_PATTERN)


def _record(fields: dict[str, Any]) -> TaskRecord:
    try:
        return TaskRecord.model_validate(fields)
    except ValidationError as exc:
        raise InvalidParameter(message=f"Invalid parameter: {describe_validation(exc)}") from None
