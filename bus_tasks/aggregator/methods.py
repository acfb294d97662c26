"""JSON-RPC 2.0 method table and dispatch over the view (SPEC section 5). No broker here."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from bus_tasks import codec, config
from bus_tasks.aggregator.changes import ChangeFeed
from bus_tasks.aggregator.listings import answer_page, check_reply_size, refuse_oversize
from bus_tasks.core.model import canonical_task_id, check_tag, check_tags
from bus_tasks.core.paging import Pager
from bus_tasks.core.view import Entry, TaskView
from bus_tasks.errors import (
    BusTasksError,
    InternalError,
    InvalidParameter,
    InvalidParams,
    MethodNotFound,
    TaskAborted,
    TaskNotFinished,
)
from bus_tasks.protocol import changes, jsonrpc, shapes, vdsm
from bus_tasks.protocol.jsonrpc import EncodedObject, RequestId, error_body, result_body

log = logging.getLogger(__name__)

MAX_QUERY_TAGS = 256
LISTING_CACHE_SIZE = 8  # listings (lists of encoded members) kept while the view is unchanged


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GetAllTasksOptions(BaseModel):
    """Known options are checked; unknown ones are ignored (logged at debug): ``options`` is for
    extension, so a newer client's options must not break an older server."""

    model_config = ConfigDict(extra="allow", frozen=True)

    match: Literal["any", "all"] = "any"
    # Answer {"revision": N, "tasks": {...}}: the tasks, and the revision of the view they are
    # from (the event log's position; see TaskView.revision). Off: VDSM's shape, {id: details}.
    revision: StrictBool = False
    # Paging (SPEC 14): checked by the listing, so that a bad limit or token is code 1000.
    limit: JsonValue = None
    continue_: JsonValue = Field(default=None, alias="continue")

    @model_validator(mode="after")
    def _ignore_unknown(self) -> GetAllTasksOptions:
        if self.model_extra:
            log.debug("getAllTasks: unknown options ignored: %s", sorted(self.model_extra))
        return self


_DEFAULT_OPTIONS = GetAllTasksOptions()


class GetAllTasksParams(_Params):
    tags: StrictStr | list[StrictStr] | None = None
    options: GetAllTasksOptions | None = None


class LegacyListParams(_Params):
    spUUID: JsonValue = None
    options: JsonValue = None


class TaskParams(_Params):
    taskID: StrictStr


class ClearParams(TaskParams):
    force: StrictBool = False  # an operator's removal of a task in any state (logged)


class RetagParams(TaskParams):
    tags: list[StrictStr]


class NoParams(_Params):
    pass


class ChangesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    match: Literal["any", "all"] = "any"
    log: StrictStr | None = None  # the log the caller's revision counts in (None: this one's)


class GetChangesParams(_Params):
    since: StrictInt | None = Field(default=None, ge=0)  # None: a listing; else changes after it
    tags: StrictStr | list[StrictStr] | None = None
    options: ChangesOptions | None = None


ControlCommand = Literal["stop", "revert", "retag"]


@dataclass(frozen=True, slots=True)
class Forward:
    """A control command to hand to the owning subsystem; the reply waits for its answer."""

    command: ControlCommand
    task_id: str
    subsystem: str
    tags: tuple[str, ...] | None = None  # retag: the new tags


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    params: type[_Params]
    call: Callable[[Any], Any]


# Canonical name -> flat legacy alias (VDSM's old XML-RPC verbs); bus_tasks' own methods have none.
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


RpcObserver = Callable[[str, str, float], None]
"""Told of every call served: (method as called, outcome, seconds); see aggregator/metrics."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: an encoded JSON-RPC response, or a command to forward first."""

    request_id: RequestId
    body: bytes | None = None
    forward: Forward | None = None
    method: str = ""
    notification: bool = False  # no "id": inside a batch, nothing is answered


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
        observe: RpcObserver | None = None,
        max_reply_bytes: int = config.DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.view = view
        self.max_reply_bytes = max_reply_bytes
        self.pager = Pager(view)
        self.feed = feed
        self._observe = observe  # a forwarded call is the relay's to tell, once answered
        self._on_clear = on_clear
        self._check_writable = check_writable  # raises when the view may not change now
        self._subsystems = subsystems
        self._aggregators = aggregators
        self._listings: OrderedDict[tuple[Any, ...], list[bytes]] = OrderedDict()
        self._listings_version = -1
        table = [
            Method("Host.getAllTasks", GetAllTasksParams, self.get_all_tasks),
            Method("Host.getAllTasksInfo", LegacyListParams, self.get_all_tasks_info),
            Method("Host.getAllTasksStatuses", LegacyListParams, self.get_all_tasks_statuses),
            Method("Task.getStatus", TaskParams, self.get_task_status),
            Method("Task.getInfo", TaskParams, self.get_task_info),
            Method("Task.getDetails", TaskParams, self.get_task_details),
            Method("Task.stop", TaskParams, self.stop_task),
            Method("Task.clear", ClearParams, self.clear_task),
            Method("Task.revert", TaskParams, self.revert_task),
            Method("Task.retag", RetagParams, self.retag_task),
            Method("Host.getSubsystems", NoParams, self.get_subsystems),
            Method("Host.getAggregators", NoParams, self.get_aggregators),
            Method(changes.GET_CHANGES, GetChangesParams, self.get_task_changes),
        ]
        self.methods: dict[str, Method] = {}
        for method in table:
            self.methods[method.name] = method
            if method.name in ALIASES:
                self.methods[ALIASES[method.name]] = method

    # -- methods ------------------------------------------------------------------------

    def get_all_tasks(self, params: GetAllTasksParams) -> EncodedObject:
        tags = _query_tags(params.tags)
        options = params.options or _DEFAULT_OPTIONS
        match_all = options.match == "all"
        if options.limit is not None or options.continue_ is not None:
            return answer_page(
                self.pager,
                tags,
                match_all=match_all,
                limit=options.limit,
                token=options.continue_,
                revision=self.view.revision,
                max_reply_bytes=self.max_reply_bytes,
            )
        listing = self._listing(
            ("tasks", tuple(tags), match_all),
            lambda: [e.member for e in self.view.select(tags, match_all=match_all)],
        )
        if not options.revision:
            return listing
        tasks = b'"tasks":{' + b",".join(listing.members) + b"}"
        return EncodedObject([b'"revision":%d' % self.view.revision, tasks])

    def get_task_changes(self, params: GetChangesParams) -> EncodedObject:
        """A watcher's listing (``since`` None) or replay: the changes after ``since``
        (docs/watching.md); RevisionGone when they are no longer kept."""
        feed = self.feed
        if feed is None:
            raise MethodNotFound(repr(changes.GET_CHANGES))
        options = params.options or ChangesOptions()
        tags = _query_tags(params.tags)
        match_all = options.match == "all"
        head = [
            codec.dumps_member("aggregator", feed.name),
            codec.dumps_member("instance", feed.instance),
            codec.dumps_member("log", feed.log_name),
            codec.dumps_member("rpcQueue", feed.rpc_queue),
            b'"revision":%d' % self.view.revision,
        ]
        if params.since is None:
            query = GetAllTasksParams(tags=tags, options=GetAllTasksOptions(match=options.match))
            listing = self.get_all_tasks(query)
            return EncodedObject([*head, b'"tasks":{' + b",".join(listing.members) + b"}"])
        feed.check_log(options.log)
        found = feed.since(params.since, tags, match_all=match_all)
        return EncodedObject([*head, b'"changes":[' + b",".join(found) + b"]"])

    def get_all_tasks_info(self, params: LegacyListParams) -> EncodedObject:
        member = codec.dumps_member
        return self._listing(
            ("info",), lambda: [member(e.id, shapes.task_info(e.id, e.verb)) for e in self._legacy_listing()]
        )

    def get_all_tasks_statuses(self, params: LegacyListParams) -> EncodedObject:
        member = codec.dumps_member
        return self._listing(
            ("statuses",), lambda: [member(e.id, _status(e)) for e in self._legacy_listing()]
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
        check_reply_size(members, self.max_reply_bytes)
        return EncodedObject(members)

    def get_task_status(self, params: TaskParams) -> dict[str, Any]:
        return _status(self._entry(params))

    def get_task_info(self, params: TaskParams) -> dict[str, Any]:
        entry = self._entry(params)
        return shapes.task_info(entry.id, entry.verb)

    def get_task_details(self, params: TaskParams) -> codec.Fragment:
        """One task's whole TaskDetails, as ``getAllTasks`` lists it (bus_tasks' own method)."""
        return codec.Fragment(self._entry(params).details)

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

    def retag_task(self, params: RetagParams) -> Forward:
        """Tags change through the owner, so that its later updates keep them."""
        entry = self._entry(params)
        tags = tuple(params.tags)
        try:
            check_tags(tuple(check_tag(tag) for tag in tags))
        except ValueError as exc:
            raise InvalidParameter("tags", params.tags, message=f"Invalid parameter: {exc}") from None
        return Forward("retag", entry.id, entry.subsystem, tags)

    def clear_task(self, params: ClearParams) -> bool:
        task_id = _task_id(params.taskID)
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
        self.view.clear(task_id, force=params.force)
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

    def _legacy_listing(self) -> list[Entry]:
        """VDSM's rule for its old listings: only the tasks tagged ``spm``."""
        return self.view.select([vdsm.LEGACY_LISTING_TAG])

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
        return self._serve(lambda: jsonrpc.parse_request(body), lambda: jsonrpc.salvage_id(body))

    def handle_member(self, member: Any) -> Reply:
        """Serve one member of a batch (decoded JSON, checked here); never raises for bad input."""
        return self._serve(lambda: jsonrpc.check_request(member), lambda: jsonrpc.id_of(member))

    def _serve(
        self,
        parse: Callable[[], jsonrpc.Request | jsonrpc.Notification],
        salvage_id: Callable[[], RequestId],
    ) -> Reply:
        request_id: RequestId = None
        method_name = ""
        notification = False
        started = time.perf_counter()
        try:
            request = parse()
            request_id = jsonrpc.request_id_of(request)
            notification = jsonrpc.is_notification(request)
            method_name = request["method"]
            method = self._method(method_name)
            params = jsonrpc.bind(method.params, request.get("params"))
            result = method.call(params)
        except BusTasksError as exc:
            if request_id is None:
                request_id = salvage_id()
            log.warning("rpc %r id=%r failed: %d %r", method_name, request_id, exc.code, exc.message)
            self._served(method_name, "error", started)
            return Reply(
                request_id, error_body(request_id, exc), method=method_name, notification=notification
            )
        except Exception as exc:
            log.exception("rpc %r id=%r crashed", method_name, request_id)
            error = InternalError(type(exc).__name__)
            self._served(method_name, "internal_error", started)
            return Reply(
                request_id, error_body(request_id, error), method=method_name, notification=notification
            )
        if isinstance(result, Forward):
            return Reply(request_id, forward=result, method=method_name, notification=notification)
        body = result_body(request_id, result)
        refused = refuse_oversize(method_name, request_id, body, self.max_reply_bytes)
        if refused is not None:  # a reply that no listing's own check foresaw
            self._served(method_name, "error", started)
            return Reply(request_id, refused, method=method_name, notification=notification)
        self._served(method_name, "ok", started)
        return Reply(request_id, body, method=method_name, notification=notification)

    def _served(self, method_name: str, outcome: str, started: float) -> None:
        if self._observe is not None:
            self._observe(method_name, outcome, time.perf_counter() - started)


def _status(entry: Entry) -> dict[str, Any]:
    return shapes.task_status(entry.id, entry.state, entry.code, entry.message)


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
