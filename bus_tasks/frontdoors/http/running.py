"""The HTTP front door on a thread and loop of its own, with broker connections of its own.

``bus-tasks serve --http`` runs it beside the aggregator's loop, which it never touches: the
loop's ``RpcBridge`` carries its RPC calls, and one unfiltered watch (in a thread: it blocks)
feeds the mirror that ``/api/watch`` serves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from bus_tasks.client import TasksClient
from bus_tasks.errors import BusTasksError
from bus_tasks.frontdoors.bridge import RpcBridge
from bus_tasks.frontdoors.http.mirror import Mirror
from bus_tasks.frontdoors.http.rpc import RpcCaller
from bus_tasks.frontdoors.http.server import HttpFrontDoor, HttpOptions
from bus_tasks.identity import OFF, TrustPolicy
from bus_tasks.transport import Bus, ShutdownRequested
from bus_tasks.watching import Watch, WatchEvent

log = logging.getLogger("bus_tasks.frontdoors.http")

SHUTDOWN_TIMEOUT_S = 5.0  # open requests get this long at shutdown (streams end at once)
READY_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class ServingHealth:
    """The aggregator's facts ``/healthz`` reads from another thread: events, thread-safe."""

    ready_event: threading.Event
    connected_event: threading.Event

    def problem(self) -> str | None:
        if not self.ready_event.is_set():
            return "the aggregator is not ready yet"
        if not self.connected_event.is_set():
            return "the aggregator's broker connection is down"
        return None

    def ready(self) -> bool:
        return self.ready_event.is_set()


def apply_event(mirror: Mirror, event: WatchEvent, settled: int | None = None) -> None:
    """One event of the watch, in the mirror (the loop's thread); ``settled``: every change up to
    this revision has come before it."""
    if settled is not None:
        mirror.bookmark(settled)
    if event.kind == "listing":
        mirror.listing(event.revision, event.tasks or {})
    elif event.kind == "bookmark" or event.task_id is None:
        mirror.bookmark(event.revision)
    else:
        mirror.changed(event.revision, event.task_id, event.task if event.kind == "changed" else None)


class MirrorFeed:
    """One unfiltered watch in a thread of its own; each event goes to the mirror's loop.

    A watch that fails is started again, after a back-off, on a new client: its listing
    replaces the mirror's (and every SSE client gets a new snapshot).
    """

    def __init__(
        self,
        new_client: Callable[[], TasksClient],
        mirror: Mirror,
        loop: asyncio.AbstractEventLoop,
        *,
        ready: Callable[[], bool] = lambda: True,
        retry_s: float = 0.5,
        max_retry_s: float = 10.0,
    ) -> None:
        self._new_client = new_client
        self._ready = ready
        self._mirror = mirror
        self._loop = loop
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._watch: Watch | None = None
        self._client: TasksClient | None = None
        self._thread = threading.Thread(target=self._run, name="http-mirror", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop watching (the watch ends at its next turn); waits at most ``timeout_s``."""
        self._closing.set()
        with self._lock:
            watch, client = self._watch, self._client
        if watch is not None:
            watch.close()
        if client is not None:
            client.abandon()  # a watch failing over waits in a call: it gives up at once
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("http mirror: the watch did not end within %gs", timeout_s)

    def _run(self) -> None:
        # Asked before the aggregator serves, the first listing would wait for its deadline.
        while not self._ready():
            if self._closing.wait(READY_POLL_S):
                return
        delay_s = self._retry_s
        while not self._closing.is_set():
            client: TasksClient | None = None
            try:
                client = self._new_client()
                watch = client.watch()
                with self._lock:
                    self._watch, self._client = watch, client
                if self._closing.is_set():
                    watch.close()
                    client.abandon()
                batch: int | None = None
                for event in watch:
                    # The watch hands out each message's events at once, after moving its revision
                    # to the message's: when its revision moved, the previous message is all out.
                    revision = watch.state.revision
                    settled = batch if batch is not None and revision != batch else None
                    batch = revision
                    self._loop.call_soon_threadsafe(apply_event, self._mirror, event, settled)
                    delay_s = self._retry_s
            except ShutdownRequested:
                return
            except RuntimeError:  # the loop is closed: the server stopped
                if self._loop.is_closed():
                    return
                log.exception("http mirror: the watch failed; watching again in %.1fs", delay_s)
            except BusTasksError as exc:
                log.warning(
                    "http mirror: the watch failed: %s; watching again in %.1fs", exc.message, delay_s
                )
            except Exception:
                log.exception("http mirror: the watch failed; watching again in %.1fs", delay_s)
            finally:
                if client is not None:
                    client.close()
            if self._closing.wait(delay_s):
                return
            delay_s = min(delay_s * 2, self._max_retry_s)


class HttpServer:
    """``start()`` listens on ``host:port`` (0: a free port, then in ``port``); ``stop()``."""

    def __init__(
        self,
        door: HttpFrontDoor,
        bridge: RpcBridge,
        new_client: Callable[[], TasksClient],
        *,
        host: str,
        port: int,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.door = door
        self.bridge = bridge
        self.host = host
        self.port = port
        self._new_client = new_client
        self._start_timeout_s = start_timeout_s
        self._loop = asyncio.new_event_loop()
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="http-door", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Listen (the broker is reached later, in the background).

        Raises:
            OSError: when the address cannot be listened on; TimeoutError when it took too long.
        """
        self._thread.start()
        if not self._listening.wait(self._start_timeout_s):
            raise TimeoutError("the http front door did not start listening in time")
        if self._error is not None:
            raise self._error

    def stop(self, timeout_s: float = 15.0) -> None:
        stopping = self._stopping
        if stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("the http front door did not stop within %gs", timeout_s)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self.door.application(),
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            # From its start or its last answer, a connection has this long for a whole request:
            # one that trickles its head, or says nothing, is closed (aiohttp's default is an hour).
            keepalive_timeout=self.door.options.idle_timeout_s,
        )
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException as exc:
            self._error = exc
            self._listening.set()
            await runner.cleanup()
            return
        self.port = runner.addresses[0][1]  # the port the system chose, for port 0
        log.info("http serving on %s", self.url)
        self._listening.set()
        feed = MirrorFeed(self._new_client, self.door.mirror, self._loop, ready=self.door.health.ready)
        feed.start()
        loop = asyncio.get_running_loop()
        # Reaching the broker may take long: the loop serves health meanwhile.
        connecting = loop.run_in_executor(None, self.bridge.start)
        connecting.add_done_callback(self._connected)
        try:
            await self._stopping.wait()
        finally:
            self.door.mirror.close()  # every SSE stream ends
            await runner.cleanup()
            feed.close()
            # Still connecting: the serve's stop makes its retries give up.
            done, _ = await asyncio.wait({connecting}, timeout=10.0)
            if done:  # else the executor's thread still owns the connection; the process exits anyway
                self.bridge.close()
        log.info("http front door stopped")

    def _connected(self, connecting: asyncio.Future[None]) -> None:
        """The bridge reached the broker (or gave up): serve RPC calls through it from now on."""
        if connecting.cancelled() or self._stopping is None or self._stopping.is_set():
            return
        error = connecting.exception()
        if isinstance(error, ShutdownRequested):
            return
        if error is not None:
            log.error("the http front door could not reach the broker: %s", error)
            return
        self.bridge.attach(self._loop)
        self.door.caller.attach(self.bridge)
        log.info("http front door connected to the broker")


def serving_beside(
    health: ServingHealth,
    registry: CollectorRegistry | None,
    new_connection: Callable[[], Bus],
    *,
    host: str,
    port: int,
    rpc_timeout_s: float,
    options: HttpOptions,
    broker: str = "",
    trust: TrustPolicy = OFF,
) -> HttpServer:
    """The HTTP front door beside an aggregator (``serve --http``, and tests), not started yet.

    Args:
        health, registry: the aggregator's thread-safe facts and its metrics.
        new_connection: a broker connection, not connected yet: one for the RPC bridge, one for
            each watch that feeds the mirror.
        broker: the broker's redacted URL, for errors.
        trust: whose replies and changes are believed (SPEC 15: with identity "broker", aggregators').
    """
    caller = RpcCaller(timeout_s=rpc_timeout_s, broker=broker)
    door = HttpFrontDoor(caller, Mirror(), health=health, registry=registry, options=options)

    def watcher() -> TasksClient:
        return TasksClient(new_connection(), timeout_s=rpc_timeout_s, wait_for_aggregator=True, trust=trust)

    bridge = RpcBridge(new_connection(), caller.on_reply, trust=trust, door="http")
    return HttpServer(door, bridge, watcher, host=host, port=port)
