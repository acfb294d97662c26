"""The HTTP front door against hostile clients (SPEC 18): watchers at once, body sizes, a client
that never sends a whole request, and one that stops reading its watch; each over a real socket,
while a well-behaved client's request answers within a second."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import ClientSession
from support.brokers import Broker
from test_http_sse import QUICK, details, next_event
from test_http_support import make_door, serving

from bus_tasks.aggregator import Aggregator
from bus_tasks.frontdoors.http.mirror import Mirror
from bus_tasks.frontdoors.http.running import HttpServer, ServingHealth, serving_beside
from bus_tasks.frontdoors.http.server import HttpOptions
from bus_tasks.frontdoors.http.sse import SseTimings
from bus_tasks.testing import RunningAggregator, wait_until

pytestmark = pytest.mark.timeout(60)

ANSWER_S = 1.0
MARGIN_S = 3.0
IDLE_TIMEOUT_S = 0.5


async def answers(session: ClientSession) -> None:
    """A well-behaved client's request answers, within ``ANSWER_S``."""
    async with asyncio.timeout(ANSWER_S), session.get("/api/tasks") as response:
        assert response.status == 200
        assert isinstance(await response.json(), dict)


async def within(timeout_s: float, what: str, predicate: Any) -> None:
    """Polls ``predicate`` until true; fails at ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s}s"
        await asyncio.sleep(0.01)


def listed(count: int, payload_bytes: int = 0) -> Mirror:
    mirror = Mirror()
    tasks = {}
    for n in range(1, count + 1):
        task = details(n, "spm")
        if payload_bytes:
            task["data"] = {"padding": "x" * payload_bytes}
        tasks[task["id"]] = task
    mirror.listing(10, tasks)
    return mirror


def test_a_watch_over_max_watchers_is_503_and_its_slot_comes_back_when_one_ends() -> None:
    door = make_door(mirror=listed(1), options=HttpOptions(sse=QUICK, max_watchers=2)).door

    async def run() -> tuple[int, str | None, Any]:
        async with serving(door) as session:
            first = await session.get("/api/watch")
            second = await session.get("/api/watch")
            for response in (first, second):
                assert (await next_event(response)).event == "snapshot"
            async with session.get("/api/watch") as over:
                refused = over.status, over.headers.get("Retry-After"), await over.json()
            await answers(session)
            first.close()
            await within(MARGIN_S, "the first watch ended", lambda: door.watchers == 1)
            async with session.get("/api/watch") as again:
                assert (await next_event(again)).event == "snapshot"
            second.close()
            return refused

    assert asyncio.run(run()) == (
        503,
        "5",
        {"code": 100, "message": "General Exception: 2 watchers already; watch again later"},
    )


def test_a_body_over_max_body_bytes_is_413_before_the_handler_and_one_within_reaches_it() -> None:
    door = make_door(options=HttpOptions(max_body_bytes=1024)).door
    path = "/api/tasks/00000000-0000-4000-8000-000000000001/stop"

    async def run() -> tuple[tuple[int, Any], tuple[int, Any]]:
        async with serving(door) as session:
            async with session.post(path, data=b"x" * 1025) as over:
                refused = over.status, await over.json()
            async with session.post(path, data=b"x" * 1024) as within_limit:
                reached = within_limit.status, await within_limit.json()
            await answers(session)
            return refused, reached

    refused, reached = asyncio.run(run())
    assert refused == (413, {"code": 100, "message": "General Exception: a body of 1025 bytes, at most 1024"})
    assert reached[0] == 403  # the handler's answer: control over HTTP is off


def test_a_watcher_that_stops_reading_is_dropped_when_a_write_waits_past_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timings = SseTimings(bookmark_s=0.3, keep_alive_s=60.0, tick_s=0.05, write_timeout_s=0.5)
    mirror = listed(80, payload_bytes=100_000)  # a snapshot of 8 MB: more than the kernel buffers
    door = make_door(mirror=mirror, options=HttpOptions(sse=timings)).door

    async def run() -> None:
        async with serving(door) as session:
            loop = asyncio.get_running_loop()
            async with session.get("/api/tasks") as response:
                port = response.url.port
            assert port is not None
            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
            stalled.setblocking(False)
            try:
                await loop.sock_connect(stalled, ("127.0.0.1", port))
                await loop.sock_sendall(stalled, b"GET /api/watch HTTP/1.1\r\nHost: x\r\n\r\n")
                await within(MARGIN_S, "a watcher", lambda: door.watchers == 1)
                await answers(session)
                await within(0.5 + MARGIN_S, "dropped", lambda: door.watchers == 0)
                await answers(session)
            finally:
                stalled.close()

    with caplog.at_level(logging.WARNING, logger="bus_tasks.frontdoors.http.sse"):
        asyncio.run(run())
    assert mirror.subscribers == set()
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert lines == [
        "sse client 127.0.0.1 dropped: a write waited 0.5s for it to read (it does not read); it may resume"
    ]


# -- a connection that never sends a whole request ------------------------------------------


@pytest.fixture
def server(memory_broker: Broker) -> Iterator[HttpServer]:
    """The front door as ``serve --http`` runs it (its own thread and loop), ``IDLE_TIMEOUT_S`` idle."""
    aggregator = Aggregator(memory_broker.connection())
    with RunningAggregator(aggregator):
        server = serving_beside(
            ServingHealth(aggregator.ready, aggregator.connected),
            None,
            lambda: memory_broker.connection(confirm_publish=False),
            host="127.0.0.1",
            port=0,
            rpc_timeout_s=5.0,
            options=HttpOptions(idle_timeout_s=IDLE_TIMEOUT_S),
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()


def closed_within(sock: socket.socket, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def test_connections_that_never_send_a_whole_request_are_closed_at_the_idle_timeout(
    server: HttpServer,
) -> None:
    good = http.client.HTTPConnection("127.0.0.1", server.port, timeout=ANSWER_S)
    wait_until(lambda: get_status(good, "/readyz") == 200, timeout_s=10, what="ready")
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as trickler,
    ):
        opened = time.monotonic()
        closed = False
        for byte in b"GET /api/tasks HTTP/1.1\r\nHost: x\r\n" * 4:
            try:
                trickler.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_within(trickler, 0.05):
                closed = True
                break
        assert closed
        assert time.monotonic() - opened < IDLE_TIMEOUT_S + MARGIN_S
        assert closed_within(silent, IDLE_TIMEOUT_S + MARGIN_S - (time.monotonic() - opened))
        assert get_status(good, "/api/tasks") == 200  # a fresh connection: the good one idled out
    good.close()


def get_status(connection: http.client.HTTPConnection, path: str) -> int:
    connection.close()  # a new connection each time: an idle one is closed by the server
    connection.request("GET", path)
    response = connection.getresponse()
    json.loads(response.read())
    return response.status


def test_a_watch_streaming_longer_than_the_idle_timeout_is_not_cut(server: HttpServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    wait_until(lambda: get_status(connection, "/readyz") == 200, timeout_s=10, what="ready")
    connection.close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as watcher:
        watcher.sendall(b"GET /api/watch HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"event: snapshot" not in received:
            data = watcher.recv(65536)
            assert data, f"closed after {received!r}"
            received += data
        assert received.startswith(b"HTTP/1.1 200")
        # The idle timeout bounds the wait for a whole request, not an answer that streams.
        assert not closed_within(watcher, IDLE_TIMEOUT_S * 3)
