"""JSON-RPC 2.0 method table and dispatch over the view (SPEC section 5): the methods of one task
and of the host here, the listings in :mod:`~bus_tasks.aggregator.listings`. No broker here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bus_tasks import codec, config
from bus_tasks.aggregator.changes import ChangeFeed
from bus_tasks.aggregator.listings import Listings, status_of
from bus_tasks.aggregator.paged import refuse_oversize
from bus_tasks.aggregator.policy import ADMIT_ALL, CallPolicy
from bus_tasks.core.model import canonical_task_id, check_tag, check_tags
from bus_tasks.core.view import Entry, TaskView
from bus_tasks.errors import (
    BusTasksError,
    InternalError,
    InvalidParameter,
    MethodNotFound,
    PermissionDenied,
    TaskAborted,
    TaskNotFinished,
    UnknownTask,
)
from bus_tasks.protocol import control, jsonrpc, shapes
from bus_tasks.protocol.context import LOCAL, CallContext
from bus_tasks.protocol.jsonrpc import RequestId, error_body, result_body
from bus_tasks.protocol.methods import ALIASES, MethodName
from bus_tasks.protocol.params import (
    ClearParams,
    GetAllTasksParams,
    GetChangesParams,
    LegacyListParams,
    NoParams,
    RetagParams,
    TaskParams,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Forward:
    """A control command to hand to the owning subsystem; the reply waits for its answer."""

    command: control.Command
    task_id: str
    subsystem: str
    tags: tuple[str, ...] | None = None  # retag: the new tags
    request: str | None = None  # the call's key: the owner answers a repeat of it from memory


@dataclass(frozen=True, slots=True)
class Attempt:
    """Which call a change is, across its caller's re-sends after a failover (SPEC 17): ``key``
    names it (:meth:`CallContext.call_key`; None: it cannot be told from another), ``resent``:
    its caller says it sent it before."""

    key: str | None = None
    resent: bool = False


FIRST = Attempt()


@dataclass(frozen=True, slots=True)
class Method:
    name: MethodName
    params: type[BaseModel]
    call: Callable[..., Any]
    keyed: bool = False  # a change: called with its Attempt too


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: an encoded JSON-RPC response, or a command to forward first."""

    request_id: RequestId
    body: bytes | None = None
    forward: Forward | None = None
    method: str = ""
    notification: bool = False  # no "id": inside a batch, nothing is answered
    params: BaseModel | None = None  # as bound: the policy is told of a forwarded call with them


class Dispatcher:
    """Parses JSON-RPC requests, runs the method against the view, and encodes the response."""

    def __init__(
        self,
        view: TaskView,
        *,
        on_clear: Callable[[Entry], None] | None = None,
        check_writable: Callable[[], None] | None = None,
        subsystems: Callable[[], dict[str, Any]] | None = None,
        aggregators: Callable[[], list[dict[str, Any]]] | None = None,
        feed: ChangeFeed | None = None,
        policy: CallPolicy = ADMIT_ALL,
        max_reply_bytes: int = config.DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        """Args:
        policy: sees every call before its method runs, and is told how each was served (a
            forwarded call is the relay's to tell, once answered): see aggregator/policy.
        max_reply_bytes: no reply is larger: a listing that would be answers -32012 (SPEC 14).
        """
        self.view = view
        self.policy = policy
        self._on_clear = on_clear
        self._check_writable = check_writable  # raises when the view may not change now
        self._subsystems = subsystems
        self._aggregators = aggregators
        self.max_reply_bytes = max_reply_bytes
        self.listings = Listings(view, feed, max_reply_bytes=max_reply_bytes)
        table = [
            Method(MethodName.GET_ALL_TASKS, GetAllTasksParams, self.listings.get_all_tasks),
            Method(MethodName.GET_ALL_TASKS_INFO, LegacyListParams, self.listings.get_all_tasks_info),
            Method(MethodName.GET_ALL_TASKS_STATUSES, LegacyListParams, self.listings.get_all_tasks_statuses),
            Method(MethodName.GET_STATUS, TaskParams, self.get_task_status),
            Method(MethodName.GET_INFO, TaskParams, self.get_task_info),
            Method(MethodName.GET_DETAILS, TaskParams, self.get_task_details),
            Method(MethodName.STOP, TaskParams, self.stop_task, keyed=True),
            Method(MethodName.CLEAR, ClearParams, self.clear_task, keyed=True),
            Method(MethodName.REVERT, TaskParams, self.revert_task, keyed=True),
            Method(MethodName.RETAG, RetagParams, self.retag_task, keyed=True),
            Method(MethodName.GET_SUBSYSTEMS, NoParams, self.get_subsystems),
            Method(MethodName.GET_AGGREGATORS, NoParams, self.get_aggregators),
            Method(MethodName.GET_TASK_CHANGES, GetChangesParams, self.listings.get_task_changes),
        ]
        self.methods: dict[str, Method] = {}
        for method in table:
            self.methods[method.name] = method
            if method.name in ALIASES:
                self.methods[ALIASES[method.name]] = method

    # -- methods ------------------------------------------------------------------------

    def get_task_status(self, params: TaskParams) -> dict[str, Any]:
        return status_of(self._entry(params))

    def get_task_info(self, params: TaskParams) -> dict[str, Any]:
        entry = self._entry(params)
        return shapes.task_info(entry.id, entry.verb)

    def get_task_details(self, params: TaskParams) -> codec.Fragment:
        """One task's whole TaskDetails, as ``getAllTasks`` lists it (bus_tasks' own method)."""
        return codec.Fragment(self._entry(params).details)

    def stop_task(self, params: TaskParams, attempt: Attempt = FIRST) -> bool | Forward:
        task_id = _task_id(params.taskID)
        entry = self.view.find(task_id)
        if entry is not None and entry.state.is_done:
            return True  # VDSM: stopping a finished task is a no-op
        if attempt.resent:
            return self._forward_again("stop", task_id, entry, attempt)
        entry = self.view.get(task_id)
        if entry.state.is_aborting:
            raise TaskAborted(entry.id, entry.state.value)
        return Forward("stop", entry.id, entry.subsystem, request=attempt.key)

    def revert_task(self, params: TaskParams, attempt: Attempt = FIRST) -> Forward:
        task_id = _task_id(params.taskID)
        if attempt.resent:
            return self._forward_again("revert", task_id, self.view.find(task_id), attempt)
        entry = self.view.get(task_id)
        if not entry.state.is_done:
            raise TaskNotFinished(entry.id, entry.state.value)
        return Forward("revert", entry.id, entry.subsystem, request=attempt.key)

    def _forward_again(
        self, command: control.Command, task_id: str, entry: Entry | None, attempt: Attempt
    ) -> Forward:
        """A stop or revert its caller sent before (the reply went with a broker node): to the
        owner whatever the view shows, for the first may have changed it (the task aborting, or
        gone); the owner answers a repeat as it answered the first, and checks a new one itself.

        Raises:
            UnknownTask: when the view holds neither the task nor its tombstone.
        """
        if entry is not None:
            owner = entry.subsystem
        else:
            tombstone = self.view.tombstones.get(task_id)
            if tombstone is None:
                raise UnknownTask(task_id)
            owner = tombstone.subsystem
        return Forward(command, task_id, owner, request=attempt.key)

    def retag_task(self, params: RetagParams, attempt: Attempt = FIRST) -> Forward:
        """Tags change through the owner, so that its later updates keep them."""
        entry = self._entry(params)
        tags = tuple(params.tags)
        try:
            check_tags(tuple(check_tag(tag) for tag in tags))
        except ValueError as exc:
            raise InvalidParameter("tags", params.tags, message=f"Invalid parameter: {exc}") from None
        return Forward("retag", entry.id, entry.subsystem, tags, request=attempt.key)

    def clear_task(self, params: ClearParams, attempt: Attempt = FIRST) -> bool:
        task_id = _task_id(params.taskID)
        tombstone = self.view.tombstones.get(task_id)
        if tombstone is not None and attempt.key is not None and tombstone.cleared_by == attempt.key:
            return True  # a repeat of the clear that buried it, whose reply went with a node
        if self._check_writable is not None:
            self._check_writable()
        entry = self.view.get(task_id)
        if params.force:
            log.warning(
                "task %s of %s force-cleared by an operator (it was %s)",
                task_id,
                entry.subsystem,
                entry.state.value,
            )
        self.view.clear(task_id, force=params.force, by=attempt.key)
        if self._on_clear is not None:
            self._on_clear(entry)
        return True

    def get_aggregators(self, params: NoParams) -> list[dict[str, Any]]:
        """The aggregators serving the broker: the one answering first, then those it heard."""
        return [] if self._aggregators is None else self._aggregators()

    def get_subsystems(self, params: NoParams) -> dict[str, Any]:
        """Every subsystem heard from or holding tasks, with its state (alive, lost ...)."""
        if self._subsystems is None:
            return {}
        return self._subsystems()

    def _method(self, name: str) -> Method:
        method = self.methods.get(name)
        if method is None:
            raise MethodNotFound(repr(name))
        return method

    def _entry(self, params: TaskParams) -> Entry:
        return self.view.get(_task_id(params.taskID))

    # -- protocol -----------------------------------------------------------------------

    def handle(self, body: bytes, context: CallContext = LOCAL) -> Reply:
        """Serve one request body for the caller of ``context``; never raises for bad input."""
        return self._serve(context, lambda: jsonrpc.parse_request(body), lambda: jsonrpc.salvage_id(body))

    def handle_member(self, member: Any, context: CallContext = LOCAL) -> Reply:
        """Serve one member of a batch (decoded JSON, checked here); never raises for bad input."""
        return self._serve(context, lambda: jsonrpc.check_request(member), lambda: jsonrpc.id_of(member))

    def _serve(
        self,
        context: CallContext,
        parse: Callable[[], jsonrpc.Request | jsonrpc.Notification],
        salvage_id: Callable[[], RequestId],
    ) -> Reply:
        request_id: RequestId = None
        method_name = ""
        notification = False
        params: BaseModel | None = None
        started = time.perf_counter()
        try:
            request = parse()
            request_id = jsonrpc.request_id_of(request)
            notification = jsonrpc.is_notification(request)
            method_name = request["method"]
            method = self._method(method_name)
            params = jsonrpc.bind(method.params, request.get("params"))
            self.policy.admit(context, method.name, params)
            if method.keyed:
                result = method.call(params, Attempt(context.call_key(request_id), context.resent))
            else:
                result = method.call(params)
        except BusTasksError as exc:
            if request_id is None:
                request_id = salvage_id()
            log.warning("rpc %r id=%r failed: %d %r", method_name, request_id, exc.code, exc.message)
            outcome = "denied" if isinstance(exc, PermissionDenied) else "error"
            self._served(context, method_name, outcome, started, params)
            return Reply(
                request_id, error_body(request_id, exc), method=method_name, notification=notification
            )
        except Exception as exc:
            log.exception("rpc %r id=%r crashed", method_name, request_id)
            error = InternalError(type(exc).__name__)
            self._served(context, method_name, "internal_error", started, params)
            return Reply(
                request_id, error_body(request_id, error), method=method_name, notification=notification
            )
        if isinstance(result, Forward):
            return Reply(
                request_id, forward=result, method=method_name, notification=notification, params=params
            )
        body = result_body(request_id, result)
        refused = refuse_oversize(method_name, request_id, body, self.max_reply_bytes)
        if refused is not None:  # a reply that no listing's own check foresaw
            self._served(context, method_name, "error", started, params)
            return Reply(request_id, refused, method=method_name, notification=notification)
        self._served(context, method_name, "ok", started, params)
        return Reply(request_id, body, method=method_name, notification=notification)

    def _served(
        self, context: CallContext, method_name: str, outcome: str, started: float, params: BaseModel | None
    ) -> None:
        self.policy.served(context, method_name, outcome, time.perf_counter() - started, params=params)


def _task_id(value: str) -> str:
    try:
        return canonical_task_id(value)
    except ValueError:
        raise InvalidParameter("taskID", value) from None
