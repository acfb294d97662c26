"""JSON-RPC 2.0 method table and dispatch over the view (SPEC section 5). No broker here."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, JsonValue, StrictStr, ValidationError

from bus_tasks import codec
from bus_tasks.core.model import canonical_task_id, check_tag, describe_validation
from bus_tasks.core.view import Entry, TaskView, Tombstone
from bus_tasks.errors import (
    BusTasksError,
    InternalError,
    InvalidParameter,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParseError,
    TaskAborted,
    TaskNotFinished,
)

log = logging.getLogger(__name__)

MAX_QUERY_TAGS = 256
LISTING_CACHE_SIZE = 8  # listings (lists of encoded members) kept while the view is unchanged
RequestId = str | int | float | None


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GetAllTasksOptions(_Params):
    match: Literal["any", "all"] = "any"


class GetAllTasksParams(_Params):
    tags: StrictStr | list[StrictStr] | None = None
    options: GetAllTasksOptions | None = None


class LegacyListParams(_Params):
    spUUID: JsonValue = None
    options: JsonValue = None


class TaskParams(_Params):
    taskID: StrictStr


ControlCommand = Literal["stop", "revert"]


@dataclass(frozen=True, slots=True)
class Forward:
    """A control command to hand to the owning subsystem; the reply waits for its answer."""

    command: ControlCommand
    task_id: str
    subsystem: str


@dataclass(frozen=True, slots=True)
class EncodedObject:
    """A JSON object result, already encoded member by member (``"key":value``).

    It is joined once, straight into the reply: a listing of 100,000 tasks costs one copy of
    its members, not an encoding of every task and then a copy into the envelope.
    """

    members: list[bytes]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    params: type[_Params]
    call: Callable[[Any], Any]


# Canonical name -> flat legacy alias (VDSM's old XML-RPC verbs).
ALIASES: dict[str, str] = {
    "Host.getAllTasks": "getAllTasks",
    "Host.getAllTasksInfo": "getAllTasksInfo",
    "Host.getAllTasksStatuses": "getAllTasksStatuses",
    "Task.getStatus": "getTaskStatus",
    "Task.getInfo": "getTaskInfo",
    "Task.stop": "stopTask",
    "Task.clear": "clearTask",
    "Task.revert": "revertTask",
}


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: an encoded JSON-RPC response, or a command to forward first."""

    request_id: RequestId
    body: bytes | None = None
    forward: Forward | None = None
    method: str = ""


class Dispatcher:
    """Parses JSON-RPC requests, runs the method against the view, and encodes the response."""

    def __init__(
        self,
        view: TaskView,
        *,
        on_clear: Callable[[str, Tombstone], None] | None = None,
        check_writable: Callable[[], None] | None = None,
    ) -> None:
        self.view = view
        self._on_clear = on_clear
        self._check_writable = check_writable  # raises when the view may not change now
        self._listings: OrderedDict[tuple[Any, ...], list[bytes]] = OrderedDict()
        self._listings_version = -1
        table = [
            Method("Host.getAllTasks", GetAllTasksParams, self.get_all_tasks),
            Method("Host.getAllTasksInfo", LegacyListParams, self.get_all_tasks_info),
            Method("Host.getAllTasksStatuses", LegacyListParams, self.get_all_tasks_statuses),
            Method("Task.getStatus", TaskParams, self.get_task_status),
            Method("Task.getInfo", TaskParams, self.get_task_info),
            Method("Task.stop", TaskParams, self.stop_task),
            Method("Task.clear", TaskParams, self.clear_task),
            Method("Task.revert", TaskParams, self.revert_task),
        ]
        self.methods: dict[str, Method] = {}
        for method in table:
            self.methods[method.name] = method
            self.methods[ALIASES[method.name]] = method

    # -- methods ------------------------------------------------------------------------

    def get_all_tasks(self, params: GetAllTasksParams) -> EncodedObject:
        tags = _query_tags(params.tags)
        match_all = params.options is not None and params.options.match == "all"
        return self._listing(
            ("tasks", tuple(tags), match_all),
            lambda: [e.member for e in self.view.select(tags, match_all=match_all)],
        )

    def get_all_tasks_info(self, params: LegacyListParams) -> EncodedObject:
        member = codec.dumps_member
        return self._listing(("info",), lambda: [member(e.id, e.info()) for e in self.view.select(["spm"])])

    def get_all_tasks_statuses(self, params: LegacyListParams) -> EncodedObject:
        member = codec.dumps_member
        return self._listing(
            ("statuses",), lambda: [member(e.id, e.status()) for e in self.view.select(["spm"])]
        )

    def _listing(self, key: tuple[Any, ...], build: Callable[[], list[bytes]]) -> EncodedObject:
        """A listing as encoded members; pollers ask the same question again and again, so while
        the view has not changed the members are reused as they are."""
        if self._listings_version != self.view.version:
            self._listings.clear()
            self._listings_version = self.view.version
        members = self._listings.get(key)
        if members is None:
            members = build()
            self._listings[key] = members
            if len(self._listings) > LISTING_CACHE_SIZE:
                self._listings.popitem(last=False)
        else:
            self._listings.move_to_end(key)
        return EncodedObject(members)

    def get_task_status(self, params: TaskParams) -> dict[str, Any]:
        return self._entry(params).status()

    def get_task_info(self, params: TaskParams) -> dict[str, Any]:
        return self._entry(params).info()

    def stop_task(self, params: TaskParams) -> bool | Forward:
        entry = self._entry(params)
        if entry.state.is_done:
            return True  # VDSM: stopping a finished task is a no-op
        if entry.state.is_aborting:
            raise TaskAborted(entry.id, entry.state.value)
        return Forward("stop", entry.id, entry.subsystem)

    def revert_task(self, params: TaskParams) -> Forward:
        entry = self._entry(params)
        if not entry.state.is_done:
            raise TaskNotFinished(entry.id, entry.state.value)
        return Forward("revert", entry.id, entry.subsystem)

    def clear_task(self, params: TaskParams) -> bool:
        task_id = _task_id(params.taskID)
        if self._check_writable is not None:
            self._check_writable()
        tombstone = self.view.clear(task_id)
        if self._on_clear is not None:
            self._on_clear(task_id, tombstone)
        return True

    def _method(self, name: str) -> Method:
        method = self.methods.get(name)
        if method is None:
            raise MethodNotFound(repr(name))
        return method

    def _entry(self, params: TaskParams) -> Entry:
        return self.view.get(_task_id(params.taskID))

    # -- protocol -----------------------------------------------------------------------

    def handle(self, body: bytes) -> Reply:
        """Serve one request body; never raises for bad input."""
        request_id: RequestId = None
        method_name = ""
        try:
            request = _parse(body)
            request_id = request.get("id")
            method_name = request["method"]
            method = self._method(method_name)
            params = _bind(method.params, request.get("params"))
            result = method.call(params)
        except BusTasksError as exc:
            if request_id is None:
                request_id = _salvage_id(body)
            log.warning("rpc %r id=%r failed: %d %r", method_name, request_id, exc.code, exc.message)
            return Reply(request_id, error_body(request_id, exc), method=method_name)
        except Exception as exc:
            log.exception("rpc %r id=%r crashed", method_name, request_id)
            error = InternalError(type(exc).__name__)
            return Reply(request_id, error_body(request_id, error), method=method_name)
        if isinstance(result, Forward):
            return Reply(request_id, forward=result, method=method_name)
        return Reply(request_id, result_body(request_id, result), method=method_name)


def result_body(request_id: RequestId, result: Any) -> bytes:
    if isinstance(result, EncodedObject):
        head = b'{"jsonrpc":"2.0","id":%b,"result":{' % codec.dumps(request_id)
        members = result.members
        if len(members) < 2:
            return b"".join((head, *members, b"}}"))
        # One join, one copy of each member (a listing can be hundreds of MB): the envelope's
        # head and tail go onto the first and last member of a copy of the list.
        parts = list(members)
        parts[0] = head + parts[0]
        parts[-1] += b"}}"
        return b",".join(parts)
    return codec.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def error_body(request_id: RequestId, error: BusTasksError) -> bytes:
    return codec.dumps({"jsonrpc": "2.0", "id": request_id, "error": error.to_wire()})


def request_body(request_id: str, method: str, params: dict[str, Any]) -> bytes:
    return codec.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


_REQUEST_KEYS = frozenset({"jsonrpc", "id", "method", "params"})


def _parse(body: bytes) -> dict[str, Any]:
    try:
        request = codec.loads(body)
    except codec.DecodeError as exc:
        raise ParseError(str(exc)) from None
    if isinstance(request, list):
        raise InvalidRequest("batch requests are not supported")
    if not isinstance(request, dict):
        raise InvalidRequest("a request is a JSON object")
    if request.get("jsonrpc") != "2.0":
        raise InvalidRequest('"jsonrpc" must be "2.0"')
    if not isinstance(request.get("method"), str):
        raise InvalidRequest('"method" must be a string')
    request_id = request.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, str | int | float)
    ):
        raise InvalidRequest('"id" must be a string, a number or null')
    extra = request.keys() - _REQUEST_KEYS
    if extra:
        raise InvalidRequest(f"unknown members {sorted(extra)}")
    params = request.get("params")
    if params is not None and not isinstance(params, dict | list):
        raise InvalidRequest('"params" must be an object or an array')
    return request


def _salvage_id(body: bytes) -> RequestId:
    """The id of a request that failed validation, when it has a well-formed one."""
    try:
        request = codec.loads(body)
    except codec.DecodeError:
        return None
    request_id = request.get("id") if isinstance(request, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | float):
        return None
    return request_id


def _bind(model: type[_Params], params: dict[str, Any] | list[Any] | None) -> _Params:
    if params is None:
        params = {}
    elif isinstance(params, list):
        names = list(model.model_fields)
        if len(params) > len(names):
            raise InvalidParams(f"at most {len(names)} positional params ({', '.join(names)})")
        params = dict(zip(names, params, strict=False))
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise InvalidParams(describe_validation(exc)) from None


def _task_id(value: str) -> str:
    try:
        return canonical_task_id(value)
    except ValueError:
        raise InvalidParameter("taskID", value) from None


def _query_tags(tags: str | list[str] | None) -> list[str]:
    if tags is None or tags == "":
        return []
    listed = [tags] if isinstance(tags, str) else tags
    if len(listed) > MAX_QUERY_TAGS:
        raise InvalidParams(f"tags: at most {MAX_QUERY_TAGS} tags, got {len(listed)}")
    for tag in listed:
        try:
            check_tag(tag)
        except ValueError:
            raise InvalidParameter("tags", tag) from None
    return listed
