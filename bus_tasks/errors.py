"""One root error; each error knows its VDSM or JSON-RPC code and crosses the wire as data."""

from __future__ import annotations

from typing import Any, ClassVar


class BusTasksError(Exception):
    """Raised when bus_tasks cannot do what was asked; the root of every bus_tasks error."""

    code: ClassVar[int] = 100
    title: ClassVar[str] = "General Exception"

    def __init__(self, *args: Any, message: str | None = None) -> None:
        super().__init__(*args)
        self.args_detail = args
        self._message = message

    @property
    def message(self) -> str:
        """The wire message, in VDSM's ``Title: ('arg', ...)`` form."""
        if self._message is not None:
            return self._message
        if not self.args_detail:
            return self.title
        return f"{self.title}: {self.args_detail!r}"

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class GeneralError(BusTasksError):
    """Raised when a control command was not answered in time, or on an unclassified failure."""


class UnknownTask(BusTasksError):
    """Raised when a task id is not in the view."""

    code = 401
    title = "Task id unknown"


class TaskNotFinished(BusTasksError):
    """Raised when a task that is not done is reverted."""

    code = 403
    title = "Task not finished"


class TaskStateError(BusTasksError):
    """Raised when a task that is not done is cleared."""

    code = 410
    title = "Operation is not allowed in this task state"


class TaskAborted(BusTasksError):
    """Raised when a task that is already aborting is stopped again."""

    code = 411
    title = "Task is aborted"


class InvalidParameter(BusTasksError, ValueError):
    """Raised when a parameter is well-typed but malformed (a task id that is not a UUID, a bad tag)."""

    code = 1000
    title = "Invalid parameter"


class JsonRpcError(BusTasksError):
    """Raised for JSON-RPC 2.0 protocol errors; the message is free text."""

    code = -32603
    title = "Internal error"

    def __init__(self, detail: str = "", *, message: str | None = None) -> None:
        if message is None:
            message = f"{self.title}: {detail}" if detail else self.title
        super().__init__(message=message)


class ParseError(JsonRpcError):
    """Raised when a request body is not valid JSON."""

    code = -32700
    title = "Parse error"


class InvalidRequest(JsonRpcError):
    """Raised when a request is JSON but not a JSON-RPC 2.0 request object."""

    code = -32600
    title = "Invalid request"


class MethodNotFound(JsonRpcError):
    """Raised when a request names a method the service does not have."""

    code = -32601
    title = "Method not found"


class InvalidParams(JsonRpcError):
    """Raised when a request's params have the wrong shape, type, or unknown names."""

    code = -32602
    title = "Invalid params"


class InternalError(JsonRpcError):
    """Raised when the service failed unexpectedly while serving a request."""


class RevisionGone(BusTasksError):
    """Raised when changes are asked after a revision older than the history kept (or on another
    event log): they cannot be replayed, and the caller lists again (docs/watching.md)."""

    code = -32010
    title = "Revision gone"


class ReplyTooLarge(BusTasksError):
    """Raised when a reply would be larger than ``max_reply_bytes`` (a listing of too many tasks
    at once): the caller pages it with ``options.limit`` (SPEC section 14)."""

    code = -32012
    title = "Reply too large"

    def __init__(
        self, tasks: int | None = None, size: int | None = None, *, message: str | None = None
    ) -> None:
        if message is None:
            what = f"{tasks} tasks ({size} bytes)" if tasks is not None else f"{size} bytes"
            message = f"{self.title}: {what}; page it with options.limit"
        super().__init__(message=message)
        self.tasks = tasks
        self.size = size


class PermissionDenied(BusTasksError):
    """Raised when the caller's identity may not make this call (SPEC 16, ``authorization = "on"``):
    the call had no effect. Ask for a role that allows it (docs/authorization.md)."""

    code = -32011
    title = "Permission denied"

    def __init__(self, identity: str = "", call: str = "", *, message: str | None = None) -> None:
        super().__init__(message=message or f"{self.title}: {identity} may not call {call}")


class TooManyRequests(BusTasksError):
    """Raised when a connection of a front door already has as many requests in flight as it may
    (``stomp_max_pending``): the excess is answered at once, never queued; send it again later."""

    code = -32013
    title = "Too many requests in flight"


class DeadlineExceeded(BusTasksError):
    """Raised in the client when no reply arrived before the call's deadline."""

    title = "General Exception"

    def __init__(self, method: str, timeout_s: float) -> None:
        super().__init__(message=f"{self.title}: no reply to {method} within {timeout_s:g}s")


class BrokerUnavailable(BusTasksError):
    """Raised in the client when a call cannot reach the broker: not within its deadline (or the
    connection's ``connect_retries``), or the connection broke in the middle of a call that is
    not safe to send twice."""

    def __init__(self, broker: str, detail: str) -> None:
        super().__init__(message=f"{self.title}: broker {broker} unreachable: {detail}")


class BrokerRefused(BrokerUnavailable):
    """Raised when the broker refuses the connection for good (wrong user or password, no access
    to the vhost): retrying would not help, so it is raised at once."""

    def __init__(self, broker: str, detail: str) -> None:
        message = f"{self.title}: broker {broker} refused the connection: {detail}"
        BusTasksError.__init__(self, message=message)


class NoAggregator(BusTasksError):
    """Raised in the client when no aggregator serves the broker: the RPC queue does not exist, or
    nothing consumes it. Said within a second or two, not at the call's deadline."""

    def __init__(self, broker: str, detail: str) -> None:
        super().__init__(message=f"{self.title}: no aggregator serving on {broker}: {detail}")


class QueueInUse(BusTasksError):
    """Raised by an exclusive consume when another connection already consumes the queue."""

    def __init__(self, queue: str) -> None:
        super().__init__(message=f"{self.title}: queue {queue} is consumed by another connection")
        self.queue = queue


class TopologyMismatch(BusTasksError):
    """Raised when a queue exists on the broker with other arguments than this configuration
    declares (e.g. a classic bus_tasks.rpc and queue_type = "quorum"): the broker keeps a queue's
    arguments for its life, so an operator must delete it or align the configuration."""

    def __init__(self, queue: str, detail: str) -> None:
        super().__init__(
            message=f"{self.title}: queue {queue} exists with other arguments than this configuration"
            f" declares ({detail}); delete it (rabbitmqctl delete_queue {queue}) or align the setting"
        )
        self.queue = queue


class TopologyMissing(BusTasksError):
    """Raised when the topology should exist (identity = "broker": declared beforehand by
    ``bus-tasks broker-setup``, as least-privilege users may not declare it) and part of it does not."""

    title = "Topology missing"

    def __init__(self, entity: str) -> None:
        super().__init__(
            message=f'{self.title}: {entity} does not exist on the broker; with identity = "broker" the'
            " topology is declared beforehand: import the output of bus-tasks broker-setup"
        )
        self.entity = entity


class SubsystemTaken(BusTasksError):
    """Raised when a publisher claims a subsystem name that a live process already owns: control
    commands for its tasks would go to the wrong process."""

    def __init__(self, subsystem: str, detail: str) -> None:
        super().__init__(
            message=f"{self.title}: subsystem {subsystem!r} is already owned by a live process ({detail}):"
            " run one publisher process per subsystem name"
        )


class RemoteError(BusTasksError):
    """Raised in the client for a wire error whose code no local class knows."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message=message)
        self.code = code  # type: ignore[misc]


_BY_CODE: dict[int, type[BusTasksError]] = {
    cls.code: cls
    for cls in (
        GeneralError,
        UnknownTask,
        TaskNotFinished,
        TaskStateError,
        TaskAborted,
        InvalidParameter,
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        RevisionGone,
        ReplyTooLarge,
        PermissionDenied,
        TooManyRequests,
    )
}


def from_wire(error: dict[str, Any]) -> BusTasksError:
    """Rebuild the typed error for a wire ``{"code", "message"}`` object."""
    code = error.get("code")
    message = str(error.get("message") or "")
    if not isinstance(code, int):
        return RemoteError(-32603, f"malformed error object: {error!r}")
    cls = _BY_CODE.get(code)
    if cls is None:
        return RemoteError(code, message)
    return cls(message=message)  # the message as the other side worded it


class EventRejected(BusTasksError):
    """Raised when an event is malformed or may not be applied (e.g. a task owned by another subsystem)."""

    code = 1000
    title = "Event rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(message=reason)
        self.reason = reason


class PublishError(BusTasksError):
    """Raised when the broker has not confirmed published messages (bound reached, or a deadline)."""

    def __init__(self, detail: str) -> None:
        super().__init__(message=f"{self.title}: {detail}")


class PublishRefused(PublishError):
    """Raised when the broker refuses a message for good (over its size limit, access refused to
    its exchange): it is not re-sent, and a reply refused so is answered -32012 instead."""


class StoreUnavailable(BusTasksError):
    """Raised when the store cannot be read or written for now (disk full, read-only, Redis away).

    The aggregator pauses ingest and retries; nothing that is not stored is acked.
    """

    def __init__(self, store: str, detail: str) -> None:
        super().__init__(message=f"store {store} unavailable: {detail}")
        self.detail = detail


class StoreUnusable(BusTasksError):
    """Raised when the store can never be used as it is (a file that is not a bus_tasks database,
    a newer schema): retrying would not help, an operator must act."""

    def __init__(self, store: str, detail: str) -> None:
        super().__init__(message=f"store {store} cannot be used: {detail}")


class DataDirInUse(BusTasksError):
    """Raised when another process holds the lock of the data directory."""

    def __init__(self, data_dir: str, holder: str) -> None:
        super().__init__(message=f"data directory {data_dir} is in use by another bus-tasks serve ({holder})")


class ConfigError(BusTasksError, ValueError):
    """Raised when settings cannot be used: an unknown ``BUS_TASKS_*`` variable, a bad broker URL."""

    code = 1000
    title = "Invalid parameter"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, message=detail)


class ShutdownRequested(BusTasksError):
    """Raised while waiting for the broker once the connection's ``stop`` event is set."""

    def __init__(self, detail: str) -> None:
        super().__init__(message=detail)


class PublishUnreachable(PublishError, BrokerUnavailable):
    """Raised by a flush when published messages still wait because the broker is unreachable
    (at the flush's deadline, or at once when the connection's ``connect_retries`` are spent):
    it names the broker and the connection's last error, not the messages."""

    def __init__(self, broker: str, detail: str, waiting: int) -> None:
        plural = "message" if waiting == 1 else "messages"
        BusTasksError.__init__(
            self, message=f"{self.title}: broker {broker} unreachable: {detail} ({waiting} {plural} not sent)"
        )
