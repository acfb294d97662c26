"""The engine side: call the aggregator with a real deadline; typed errors; a VDSM facade."""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bus_tasks import codec, names
from bus_tasks.config import DEFAULT_RPC_TIMEOUT_S, redact_url
from bus_tasks.errors import (
    BrokerUnavailable,
    BusTasksError,
    DeadlineExceeded,
    InternalError,
    InvalidParameter,
)
from bus_tasks.protocol import jsonrpc, vdsm
from bus_tasks.transport import Bus, BusConnection, Delivery

log = logging.getLogger(__name__)

# Methods that change nothing may be re-sent after a reconnect.
_SAFE_TO_RESEND = frozenset(
    {
        "Host.getAllTasks",
        "Host.getAllTasksInfo",
        "Host.getAllTasksStatuses",
        "Task.getStatus",
        "Task.getInfo",
        "Task.getDetails",
    }
)


class TasksClient:
    """Calls the aggregator over the request/reply queue. Thread-safe (one call at a time)."""

    def __init__(
        self,
        connection: Bus | str,
        *,
        timeout_s: float = DEFAULT_RPC_TIMEOUT_S,
    ) -> None:
        self.connection: Bus = BusConnection(connection) if isinstance(connection, str) else connection
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._replies: dict[str, bytes] = {}
        self._waiting: str | None = None
        self._queue = ""  # the reply queue's name, once declared
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self.connection.connect()
            self._queue = self.connection.declare_reply_queue(names.REPLY_QUEUE_PREFIX)
            self._started = True  # from here on, a reconnect re-declares and re-consumes it
            self.connection.consume(self._queue, self._on_reply, no_ack=True)

    def _on_reply(self, delivery: Delivery) -> None:
        if delivery.correlation_id is not None and delivery.correlation_id == self._waiting:
            self._replies[delivery.correlation_id] = delivery.body
        else:
            log.debug("stale reply %r dropped", delivery.correlation_id)

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """Call ``method`` and return its result, within ``timeout_s`` from now.

        Raises:
            DeadlineExceeded: when no reply arrived in time.
            BrokerUnavailable: when the broker could not be reached in time; or the connection
                broke during a call that changes something (it is not sent twice).
            BusTasksError: the typed error the aggregator answered (UnknownTask, InvalidParams ...).
        """
        correlation_id = uuid.uuid4().hex
        body = jsonrpc.request_body(correlation_id, method, params or {})
        reply = self._round_trip(method, body, correlation_id, method in _SAFE_TO_RESEND, timeout_s)
        return _unpack(reply)

    def batch(
        self, calls: Sequence[tuple[str, dict[str, Any] | None]], *, timeout_s: float | None = None
    ) -> list[Outcome]:
        """Send ``calls`` as one JSON-RPC batch; their outcomes, in the order of ``calls``.

        A call that failed does not fail the others: its outcome carries the typed error, and
        :meth:`Outcome.result` raises it.

        Raises:
            InvalidParameter: for an empty batch.
            DeadlineExceeded, BrokerUnavailable: as :meth:`call`, for the batch as a whole.
            BusTasksError: the error the aggregator answered for the whole batch (e.g. too large).
        """
        if not calls:
            raise InvalidParameter("calls", "[]", message="Invalid parameter: a batch needs a call")
        ids = [uuid.uuid4().hex for _ in calls]
        body = jsonrpc.batch_body(
            [
                jsonrpc.request_body(i, method, params or {})
                for i, (method, params) in zip(ids, calls, strict=True)
            ]
        )
        safe = all(method in _SAFE_TO_RESEND for method, _ in calls)
        label = f"a batch of {len(calls)} calls"
        reply = self._round_trip(label, body, uuid.uuid4().hex, safe, timeout_s)
        return _unpack_batch(reply, ids, [method for method, _ in calls])

    def _round_trip(
        self, method: str, body: bytes, correlation_id: str, safe: bool, timeout_s: float | None
    ) -> bytes:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        with self._lock, self.connection.bounded(deadline):
            self._waiting = correlation_id
            try:
                return self._exchange(method, body, correlation_id, deadline, timeout, safe=safe)
            except self.connection.errors as exc:
                # Connecting counts against the deadline too (bounded() above).
                raise BrokerUnavailable(redact_url(self.connection.url), str(exc)) from exc
            finally:
                self._waiting = None
                self._replies.clear()

    def _exchange(
        self, method: str, body: bytes, correlation_id: str, deadline: float, timeout: float, *, safe: bool
    ) -> bytes:
        """Send the request and wait for its reply. After a lost connection, reconnect and send
        it again, unless it may have reached the aggregator and changes something."""
        sent = False
        while correlation_id not in self._replies:
            try:
                if not sent:
                    self._start()
                    sent = True  # from here the aggregator may get it, even if publishing fails
                    self._send(body, correlation_id, deadline)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded(method, timeout)
                self.connection.drain(min(remaining, 1.0))
            except self.connection.errors:
                if sent and not safe:
                    raise
                self.connection.recover()
                sent = False
        return self._replies.pop(correlation_id)

    def _send(self, body: bytes, correlation_id: str, deadline: float) -> None:
        remaining = max(deadline - time.monotonic(), 0.001)
        self.connection.publish(
            body,
            routing_key=names.RPC_QUEUE,
            reply_to=self._queue,
            correlation_id=correlation_id,
            expiration_s=remaining,
            headers={names.HEADER_SENT_AT: time.time()},
            persistent=False,
        )

    # -- the API ------------------------------------------------------------------------

    def get_all_tasks(
        self, tags: str | Sequence[str] | None = None, options: dict[str, Any] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every task (``tags=None``), or those carrying any of ``tags`` (all with ``{"match": "all"}``)."""
        tag_param = list(tags) if tags is not None and not isinstance(tags, str) else tags
        return self.call("Host.getAllTasks", {"tags": tag_param, "options": options})  # type: ignore[no-any-return]

    def get_all_tasks_info(self) -> dict[str, dict[str, Any]]:
        """VDSM's ``getAllTasksInfo``: ``{id: {"id", "verb"}}`` of tasks tagged ``spm``."""
        return self.call("Host.getAllTasksInfo")  # type: ignore[no-any-return]

    def get_all_tasks_statuses(self) -> dict[str, dict[str, Any]]:
        """VDSM's ``getAllTasksStatuses``: ``{id: status}`` of tasks tagged ``spm``."""
        return self.call("Host.getAllTasksStatuses")  # type: ignore[no-any-return]

    def get_task_status(self, task_id: str) -> dict[str, Any]:
        return self.call("Task.getStatus", {"taskID": task_id})  # type: ignore[no-any-return]

    def get_task_info(self, task_id: str) -> dict[str, Any]:
        return self.call("Task.getInfo", {"taskID": task_id})  # type: ignore[no-any-return]

    def get_task_details(self, task_id: str) -> dict[str, Any]:
        """One task's whole record (TaskDetails, as :meth:`get_all_tasks` lists it)."""
        return self.call("Task.getDetails", {"taskID": task_id})  # type: ignore[no-any-return]

    def stop_task(self, task_id: str) -> bool:
        """Ask the owning subsystem to stop a task (asynchronous: it moves on to aborting)."""
        return bool(self.call("Task.stop", {"taskID": task_id}))

    def revert_task(self, task_id: str) -> bool:
        """Ask the owning subsystem to revert a done task."""
        return bool(self.call("Task.revert", {"taskID": task_id}))

    def clear_task(self, task_id: str) -> bool:
        """Remove a done task from the view (410 while it is not done)."""
        return bool(self.call("Task.clear", {"taskID": task_id}))

    @property
    def vdsm(self) -> VdsmFacade:
        """The wrapped VDSM Python-API form of the same calls."""
        return VdsmFacade(self)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> TasksClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VdsmFacade:
    """VDSM's Python API: every call returns ``{"status": {"code", "message"}, <key>: result}``."""

    def __init__(self, client: TasksClient) -> None:
        self._client = client

    def _wrapped(self, verb: str, call: Callable[[], Any]) -> dict[str, Any]:
        try:
            return vdsm.wrap(verb, call())
        except BusTasksError as exc:
            return vdsm.wrap_error(exc)

    def getAllTasks(
        self, tags: str | Sequence[str] | None = None, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._wrapped("getAllTasks", lambda: self._client.get_all_tasks(tags, options))

    def getAllTasksInfo(self, spUUID: str | None = None, options: Any = None) -> dict[str, Any]:
        return self._wrapped("getAllTasksInfo", self._client.get_all_tasks_info)

    def getAllTasksStatuses(self, spUUID: str | None = None, options: Any = None) -> dict[str, Any]:
        return self._wrapped("getAllTasksStatuses", self._client.get_all_tasks_statuses)

    def getTaskStatus(self, taskID: str) -> dict[str, Any]:
        return self._wrapped("getTaskStatus", lambda: self._client.get_task_status(taskID))

    def getTaskInfo(self, taskID: str) -> dict[str, Any]:
        return self._wrapped("getTaskInfo", lambda: self._client.get_task_info(taskID))

    def stopTask(self, taskID: str) -> dict[str, Any]:
        return self._wrapped("stopTask", lambda: self._client.stop_task(taskID))

    def clearTask(self, taskID: str) -> dict[str, Any]:
        return self._wrapped("clearTask", lambda: self._client.clear_task(taskID))

    def revertTask(self, taskID: str) -> dict[str, Any]:
        return self._wrapped("revertTask", lambda: self._client.revert_task(taskID))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one call of a batch came to: its result, or the typed error it was answered with."""

    method: str
    value: Any = None
    error: BusTasksError | None = None

    def result(self) -> Any:
        """The call's result.

        Raises:
            BusTasksError: the error the call was answered with.
        """
        if self.error is not None:
            raise self.error
        return self.value


def _unpack_batch(body: bytes, ids: list[str], methods: list[str]) -> list[Outcome]:
    """Match a batch's responses to its calls by id (JSON-RPC 2.0 allows any order)."""
    with _without_gc():
        try:
            responses = codec.loads(body)
        except codec.DecodeError as exc:
            raise InternalError(f"reply is not JSON: {exc}") from None
    if isinstance(responses, dict):  # an error for the batch as a whole
        jsonrpc.outcome(jsonrpc.check_response(responses))
        raise InternalError("a batch was answered with one result")
    if not isinstance(responses, list):
        raise InternalError("a batch reply is not a JSON array")
    by_id: dict[Any, jsonrpc.Response] = {}
    for response in responses:
        checked = jsonrpc.check_response(response)
        by_id[checked.get("id")] = checked
    outcomes = []
    for request_id, method in zip(ids, methods, strict=True):
        response = by_id.get(request_id)
        if response is None:
            outcomes.append(Outcome(method, error=InternalError(f"no response for {method} in the batch")))
            continue
        try:
            outcomes.append(Outcome(method, value=jsonrpc.outcome(response)))
        except BusTasksError as exc:
            outcomes.append(Outcome(method, error=exc))
    return outcomes


def _unpack(body: bytes) -> Any:
    with _without_gc():
        response = jsonrpc.parse_response(body)
    return jsonrpc.outcome(response)


@contextmanager
def _without_gc() -> Iterator[None]:
    # Decoding a large listing builds ~10 objects per task; the cyclic garbage collector would
    # run many times meanwhile for nothing (JSON cannot make cycles): halves the decode time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
