"""The HTTP front door (docs/watching.md): the API, the watch as server-sent events, health,
metrics and the web view, on one aiohttp application in the front door's own loop.

Reads and control go over RPC (:class:`~bus_tasks.frontdoors.http.rpc.RpcCaller`), so they are
answered by the aggregator's loop exactly as RPC answers them; the watch is served from the
front door's own mirror. Nothing here touches the aggregator's objects.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr

from bus_tasks.authorization import Action, allowed_calls, authorize, shown
from bus_tasks.config import (
    DEFAULT_HTTP_IDLE_TIMEOUT_S,
    DEFAULT_HTTP_MAX_BODY_BYTES,
    DEFAULT_HTTP_MAX_WATCHERS,
)
from bus_tasks.errors import BusTasksError, GeneralError, PermissionDenied, ReplyTooLarge
from bus_tasks.frontdoors.http import openapi as http_openapi
from bus_tasks.frontdoors.http import sse as http_sse
from bus_tasks.frontdoors.http.access import HttpAccess
from bus_tasks.frontdoors.http.answers import (
    Refused,
    error_response,
    json_response,
    page_of,
    revision_of,
    selection_of,
)
from bus_tasks.frontdoors.http.metrics import HttpDoorMetrics
from bus_tasks.frontdoors.http.mirror import Mirror
from bus_tasks.frontdoors.http.rpc import RpcCaller
from bus_tasks.protocol import paging
from bus_tasks.protocol.methods import MethodName

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
REVISION_HEADER = "X-Bus-Tasks-Revision"
WEB_FILE = r"{name:[A-Za-z0-9_-]+\.(?:html|js|css|svg|png|ico)}"
WEB_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


class Health(Protocol):
    """What the front door reads of the aggregator it serves beside: thread-safe facts only."""

    def problem(self) -> str | None:
        """Why it is not serving now (None: connected and serving)."""
        ...

    def ready(self) -> bool: ...


@dataclass(frozen=True)
class HttpOptions:
    """What the front door is told beyond its parts."""

    control_token: SecretStr | None = None  # None: stop and clear from HTTP are off
    web_dir: Path = WEB_DIR
    sse: http_sse.SseTimings = field(default_factory=http_sse.SseTimings)
    listing_timeout_s: float = 10.0  # how long /api/watch waits for the mirror's first listing
    max_watchers: int = DEFAULT_HTTP_MAX_WATCHERS  # /api/watch streams at once
    max_body_bytes: int = DEFAULT_HTTP_MAX_BODY_BYTES
    idle_timeout_s: float = DEFAULT_HTTP_IDLE_TIMEOUT_S  # for a whole request (HttpServer's)
    # authorization = "on": every call needs a token of http_tokens, the role decides (SPEC 16);
    # control_token is then unused. None: off.
    access: HttpAccess | None = None


def _level(status: int) -> int:
    """A caller's mistake (4xx) is theirs to see: INFO; refused credentials and our failures: WARNING."""
    return logging.INFO if status < 500 and status not in (401, 403) else logging.WARNING


class HttpFrontDoor:
    """The routes; :meth:`application` is served by ``running.HttpServer``."""

    def __init__(
        self,
        caller: RpcCaller,
        mirror: Mirror,
        *,
        health: Health,
        registry: CollectorRegistry | None,
        options: HttpOptions,
    ) -> None:
        self.caller = caller
        self.mirror = mirror
        self.health = health
        self.registry = registry
        self.options = options
        self.watchers = 0  # /api/watch requests being served (waiting for the listing included)
        self.door_metrics = HttpDoorMetrics(lambda: self.watchers, options.max_watchers)
        if registry is not None:
            registry.register(self.door_metrics)

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors], client_max_size=self.options.max_body_bytes)
        get = app.router.add_get
        get("/api/tasks", self.tasks)
        get("/api/tasks/{task_id}", self.task)
        get("/api/watch", self.watch)
        get("/api/config", self.config)
        get("/api/whoami", self.whoami)
        app.router.add_post("/api/tasks/{task_id}/{action:stop|clear}", self.control)
        get("/healthz", self.healthz)
        get("/readyz", self.readyz)
        get("/metrics", self.metrics)
        get("/openapi.json", http_openapi.openapi)
        get("/", self.index)
        get("/" + WEB_FILE, self.web_file)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            self._check_size(request)
            response: web.StreamResponse = await handler(request)
        except Refused as exc:
            log.log(
                _level(exc.status), "http %s %s refused: %d %s", request.method, request.path, exc.status, exc
            )
            return json_response(exc.error.to_wire(), exc.status, exc.headers)
        except BusTasksError as exc:
            answer = error_response(exc)
            log.log(
                _level(answer.status),
                "http %s %s failed: %d %s",
                request.method,
                request.path,
                exc.code,
                exc.message,
            )
            return answer
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # a redirect is no error
            # The router's own 404 and 405 speak JSON too, as every other answer of the API does.
            log.info("http %s %s: %d %s", request.method, request.path, exc.status, exc.reason)
            error = GeneralError(message=f"General Exception: {exc.reason}: {request.method} {request.path}")
            return json_response(
                error.to_wire(),
                exc.status,
                {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None,
            )
        return response

    def _check_size(self, request: web.Request) -> None:
        """A body over ``max_body_bytes`` is refused by its Content-Length, before it is read."""
        length, limit = request.content_length, self.options.max_body_bytes
        if length is not None and length > limit:
            self.door_metrics.refused("body")
            raise Refused(413, f"General Exception: a body of {length} bytes, at most {limit}")

    # -- the API ----------------------------------------------------------------------------

    async def tasks(self, request: web.Request) -> web.Response:
        """getAllTasks' result, every task (paged over RPC when large); its revision in a header.
        With ``limit`` (and ``continue``): that page, ``{"revision", "tasks", "continue"}``."""
        selection = selection_of(request.query, allowed=frozenset({"tag", "match", "limit", "continue"}))
        options: dict[str, Any] = {"match": "all" if selection.match_all else "any", "revision": True}
        params = {"tags": list(selection.tags), "options": options}
        identity = self._caller(request)
        page = page_of(request.query)
        if page:
            options.update(page)
            result = await self.caller.call(MethodName.GET_ALL_TASKS, params, identity=identity)
            return json_response(result, headers={REVISION_HEADER: str(result["revision"])})
        try:
            result = await self.caller.call(MethodName.GET_ALL_TASKS, params, identity=identity)
        except ReplyTooLarge:
            ask = self.caller.call
            pages = paging.Collector(params["tags"], options)
            while (next_params := pages.next_params()) is not None:
                try:
                    pages.take(await ask(MethodName.GET_ALL_TASKS, next_params, identity=identity))
                except ReplyTooLarge:
                    if not pages.smaller():
                        raise
            result = pages.result(with_revision=True)
        return json_response(result["tasks"], headers={REVISION_HEADER: str(result["revision"])})

    async def task(self, request: web.Request) -> web.Response:
        identity = self._caller(request)
        task_id = request.match_info["task_id"]
        details = await self.caller.call(MethodName.GET_DETAILS, {"taskID": task_id}, identity=identity)
        return json_response(details)

    def _caller(self, request: web.Request) -> str | None:
        """Who calls (authorization on; 401 without a known token), else None: nobody in particular."""
        access = self.options.access
        return None if access is None else access.caller(request)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        access = self.options.access
        if access is not None:  # served from the mirror here: this door asks the one decision
            identity = access.caller(request)
            if not authorize(identity, Action.WATCH, access.roles):
                raise PermissionDenied(shown(identity), Action.WATCH)
        limit = self.options.max_watchers
        if self.watchers >= limit:
            self.door_metrics.refused("watchers")
            raise Refused(
                503, f"General Exception: {limit} watchers already; watch again later", {"Retry-After": "5"}
            )
        self.watchers += 1
        try:
            return await self._watch(request)
        finally:
            self.watchers -= 1

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        selection = selection_of(request.query, allowed=frozenset({"tag", "match", "since"}))
        since = revision_of(request.headers.get("Last-Event-ID"), "Last-Event-ID")
        if since is None:
            since = revision_of(request.query.get("since"), "since")
        mirror = self.mirror
        if not mirror.listed.is_set():
            try:
                await asyncio.wait_for(mirror.listed.wait(), self.options.listing_timeout_s)
            except TimeoutError:
                raise Refused(503, "General Exception: the http front door has no listing yet") from None
        return await http_sse.stream(request, mirror, selection, since, self.options.sse)

    async def config(self, request: web.Request) -> web.Response:
        access = self.options.access
        control = access is not None or self.options.control_token is not None
        return json_response({"control": control, "authorization": access is not None})

    async def whoami(self, request: web.Request) -> web.Response:
        """Who is looking and what they may call (the web view offers control by it)."""
        access = self.options.access
        if access is None:
            return json_response({"authorization": "off", "identity": None, "role": None, "calls": None})
        identity = access.caller(request, required=False)
        calls = sorted(allowed_calls(identity, access.roles))
        return json_response(
            {
                "authorization": "on",
                "identity": identity,
                "role": access.roles.role_of(identity),
                "calls": calls,
            }
        )

    async def control(self, request: web.Request) -> web.Response:
        """``Task.stop`` or ``Task.clear`` over RPC: for the identity of a token whose role allows
        it (authorization on), else for a caller with the configured token."""
        task_id, action = request.match_info["task_id"], request.match_info["action"]
        method = MethodName.STOP if action == "stop" else MethodName.CLEAR
        if self.options.access is not None:
            identity = self.options.access.caller(request)
            log.info(
                "http control: %s %s by %s from %s", method, task_id, shown(identity), request.remote or "-"
            )
            return json_response(await self.caller.call(method, {"taskID": task_id}, identity=identity))
        token = self.options.control_token
        if token is None:
            raise Refused(403, "General Exception: control over HTTP is off (bus-tasks serve --http-control)")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Refused(
                401, "General Exception: control needs Authorization: Bearer <http_token>",
                {"WWW-Authenticate": 'Bearer realm="bus_tasks"'},
            )  # fmt: skip
        log.info("http control: %s %s from %s", method, task_id, request.remote or "-")
        return json_response(await self.caller.call(method, {"taskID": task_id}))

    # -- health and metrics -------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        problem = self.health.problem() or self._own_problem()
        if problem is None:
            return json_response({"status": "serving"})
        return json_response({"status": "unavailable", "reason": problem}, 503)

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.health.ready():
            return json_response({"status": "starting", "reason": "the aggregator is not ready yet"}, 503)
        reason = None
        if self.caller.bridge is None:
            reason = "the http front door has not reached the broker yet"
        elif not self.mirror.listed.is_set():
            reason = "the http front door has not listed the tasks yet"
        if reason is not None:
            return json_response({"status": "starting", "reason": reason}, 503)
        return json_response({"status": "ready"})

    def _own_problem(self) -> str | None:
        bridge = self.caller.bridge
        if bridge is None:
            return "the http front door has not reached the broker yet"
        if bridge.recovering:
            return "the http front door's broker connection is down"
        return None

    async def metrics(self, request: web.Request) -> web.Response:
        if self.registry is None:
            raise Refused(404, "General Exception: no metrics here")
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # -- the web view ---------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.FileResponse:
        return self._file("index.html")

    async def web_file(self, request: web.Request) -> web.FileResponse:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.FileResponse:
        path = self.options.web_dir / name
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers=WEB_HEADERS)
