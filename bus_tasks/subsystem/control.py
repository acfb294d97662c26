"""A subsystem's side of control commands: stop, revert, clear and resync from the aggregator."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from bus_tasks.core.model import State, TaskRecord
from bus_tasks.errors import (
    BusTasksError,
    GeneralError,
    InvalidParameter,
    ShutdownRequested,
    SubsystemTaken,
    TaskAborted,
    TaskNotFinished,
)
from bus_tasks.identity import OFF, Speech, TrustPolicy, refusal
from bus_tasks.protocol import jsonrpc
from bus_tasks.protocol.control import ControlParams
from bus_tasks.subsystem.repeats import Answered
from bus_tasks.transport import Bus, Delivery, QueueInUse

log = logging.getLogger(__name__)

ControlHandler = Callable[[str], None]


class TaskOwner(Protocol):
    """What control commands need of the publisher that owns the subsystem's tasks
    (:class:`~bus_tasks.subsystem.publisher.TaskPublisher`, which holds its control)."""

    @property
    def subsystem(self) -> str: ...

    @property
    def heartbeat_s(self) -> float: ...

    def announce(self) -> int: ...

    def beat(self, *, stopped: bool = False) -> None: ...

    def get(self, task_id: str) -> TaskRecord: ...

    def update(self, task_id: str, *, state: State | str | None = None) -> TaskRecord: ...

    def retag(self, task_id: str, tags: tuple[str, ...]) -> TaskRecord: ...

    def forget(self, task_id: str) -> bool: ...


class SubsystemControl:
    """Answers the control commands addressed to one publisher's subsystem."""

    def __init__(self, publisher: TaskOwner, *, exclusive: bool = True, trust: TrustPolicy = OFF) -> None:
        """Args:
        exclusive: claim the subsystem name: the broker lets one consumer have its control queue.
        trust: whose commands are carried out (SPEC 15: with identity "broker", aggregators' only).
        """
        self.publisher = publisher
        self.exclusive = exclusive
        self.trust = trust
        self.on_stop: ControlHandler | None = None
        self.on_revert: ControlHandler | None = None
        self._listening: Bus | None = None
        self.answered = Answered()  # what this process carried out, for repeats (SPEC 17)
        # Set by the first announce: until then the owner's tasks are not all known here, so a
        # resync waits for it and stop, revert and retag are refused (nothing is published).
        self.announced = threading.Event()

    def listen(self, connection: Bus, *, announce: bool = True) -> None:
        """Claim the control queue on ``connection`` and consume it; then, with ``announce``,
        announce every live task (without, :meth:`announce` follows once the owner is ready).

        Raises:
            SubsystemTaken: when another live process consumes the queue.
        """
        subsystem = self.publisher.subsystem
        queue = connection.topology.declare_control_queue(subsystem)
        try:
            connection.consume(
                queue, lambda d: self._on_command(connection, d), prefetch=16, exclusive=self.exclusive
            )
        except QueueInUse:
            raise SubsystemTaken(subsystem, f"it consumes the control queue {queue}") from None
        self._listening = connection
        if announce:
            announced = self.announce()
            log.info("%s listening for control commands; announced %d tasks", subsystem, announced)
        else:
            log.info("%s claimed: control commands are queued for it", subsystem)

    def announce(self) -> int:
        """Announce every live task (resync); from now on commands are carried out."""
        announced = self.publisher.announce()
        self.announced.set()
        return announced

    def serve(self, connection: Bus, stop: threading.Event) -> None:
        """Answer control commands on ``connection`` and send heartbeats until ``stop`` is set.

        Listens first, unless :meth:`listen` was called on ``connection`` already (a process
        claims its name at start, in its main thread, then serves in another).

        Raises:
            SubsystemTaken: when another live process owns the subsystem name.
        """
        publisher = self.publisher
        try:
            if self._listening is not connection:
                self.listen(connection)
            next_beat = 0.0
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_beat:
                        publisher.beat()
                        next_beat = time.monotonic() + publisher.heartbeat_s
                    connection.drain(min(0.1, publisher.heartbeat_s))
                except connection.errors:
                    connection.recover()
                except BusTasksError as exc:  # the publishing connection is away: beat later
                    log.debug("heartbeat not sent: %s", exc)
            self._goodbye()
        except ShutdownRequested as exc:
            log.warning("%s", exc)  # the broker was away when the stop came

    def _goodbye(self) -> None:
        """The last heartbeat: the aggregator shows the subsystem stopped, not lost."""
        try:
            self.publisher.beat(stopped=True)
        except BusTasksError as exc:
            log.info("could not say %s stopped: %s", self.publisher.subsystem, exc)

    def _on_command(self, connection: Bus, delivery: Delivery) -> None:
        subsystem = self.publisher.subsystem
        reason = refusal(self.trust, Speech.CONTROL_COMMAND, subsystem, delivery.user_id)
        if reason is not None:
            log.warning("control command for %s refused: %s", subsystem, reason)
            connection.dead_letter(delivery, reason)
            return
        request_id: jsonrpc.RequestId = None
        try:
            request = jsonrpc.parse_request(delivery.body)
            request_id = jsonrpc.request_id_of(request)
            params = jsonrpc.bind(ControlParams, request.get("params"))
            result = self._once(request["method"], params)
            body = jsonrpc.result_body(request_id, result)
        except ShutdownRequested:
            raise  # stopping while the broker is away: no answer to give
        except BusTasksError as exc:
            log.warning("control command for %s failed: %s", subsystem, exc)
            body = jsonrpc.error_body(request_id, exc)
        except Exception as exc:
            log.exception("control command for %s crashed", subsystem)
            body = jsonrpc.error_body(request_id, GeneralError(type(exc).__name__))
        if request_id is not None and delivery.reply_to:
            connection.publish(
                body,
                routing_key=delivery.reply_to,
                correlation_id=delivery.correlation_id,
                persistent=False,
            )
        delivery.ack()

    def _once(self, method: str, params: ControlParams) -> Any:
        """Carry out a command, or answer a repeat of one carried out as it was answered then."""
        key = params.request
        if key is None:
            return self.handle(method, params.taskID, params.tags)
        result = self.answered.get(key, method, params.taskID)
        if result is not None:
            log.info("control %s task=%s repeated by its caller: answered as before", method, params.taskID)
            return result
        result = self.handle(method, params.taskID, params.tags)
        self.answered.remember(key, method, params.taskID, result)
        return result

    def handle(self, method: str, task_id: str, tags: tuple[str, ...] | None = None) -> Any:
        """Carry out one command; ``true``, or for ``retag`` the task's new tags.

        Raises:
            UnknownTask: for a task this subsystem does not own (stop, revert, retag).
            InvalidParameter: for a retag without tags, or with bad ones.
            TaskAborted: for a stop of a task already aborting.
            TaskNotFinished: for a revert of a task that is not done.
            GeneralError: for an unknown command, or one this subsystem has no handler for.
        """
        publisher = self.publisher
        if not self.announced.is_set():
            return self._before_announce(method, task_id)
        if method == "resync":
            log.info("resync requested: announced %d tasks", publisher.announce())
            return True
        if method == "clear":
            return self._clear(task_id)
        if method == "retag":
            if tags is None:
                raise InvalidParameter("tags", None, message="Invalid parameter: retag needs tags")
            record = publisher.retag(task_id, tags)
            log.info("task %s retagged %s by the aggregator", record.id, list(record.tags))
            return list(record.tags)
        handlers = {"stop": self.on_stop, "revert": self.on_revert}
        if method not in handlers:
            raise GeneralError(message=f"General Exception: unknown control command {method!r}")
        record = publisher.get(task_id)
        handler = handlers[method]
        if handler is None:
            raise GeneralError(message=f"General Exception: {publisher.subsystem} cannot {method} tasks")
        if method == "stop":
            if record.state.is_done:
                return True
            if record.state.is_aborting:
                raise TaskAborted(record.id, record.state.value)
            # Stop is asynchronous: the task shows aborting at once, its handler ends it later.
            publisher.update(record.id, state=State.ABORTING)
        elif not record.state.is_done:
            raise TaskNotFinished(record.id, record.state.value)
        log.info("control %s task=%s", method, record.id)
        handler(record.id)
        return True

    def _clear(self, task_id: str) -> bool:
        """The aggregator cleared a done task: drop this subsystem's copy."""
        dropped = self.publisher.forget(task_id)
        log.info("task %s cleared by the aggregator (%s)", task_id, "dropped" if dropped else "unknown")
        return True

    def _before_announce(self, method: str, task_id: str) -> Any:
        """A command that came between the claim and the first announce."""
        subsystem = self.publisher.subsystem
        if method == "resync":  # an announce of a half-known set would bury the rest
            log.info("resync requested before %s announced: its announce comes when it is ready", subsystem)
            return True
        if method == "clear":
            return self._clear(task_id)
        raise GeneralError(
            message=f"General Exception: {subsystem} is starting, its tasks not known yet: {method} {task_id}"
        )
