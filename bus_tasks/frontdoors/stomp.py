"""The STOMP 1.2 front door (VDSM's wire): an asyncio server that bridges SENDs to ``bus_tasks.rpc``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bus_tasks import codec
from bus_tasks.errors import DeadlineExceeded
from bus_tasks.frontdoors.bridge import RpcBridge
from bus_tasks.frontdoors.stomp_frames import (
    HEARTBEAT,
    MAX_BODY_BYTES,
    Frame,
    FrameError,
    FrameParser,
    encode,
)
from bus_tasks.protocol import jsonrpc

log = logging.getLogger(__name__)

REQUEST_DESTINATIONS = frozenset({"jms.topic.vdsm_requests", "jms.topic.vdsm_irs_requests"})
MIN_HEARTBEAT_MS = 1000


class BadClient(Exception):
    """Raised when a client sent what this front door refuses: it gets ERROR and is closed."""


def negotiate_heartbeat(header: str | None) -> tuple[int, int]:
    """The server's ``heart-beat`` (sx, sy) for a client's ``cx,cy``: send every cy, expect none."""
    try:
        cx_text, cy_text = (header or "0,0").split(",")
        cx, cy = int(cx_text), int(cy_text)
    except ValueError as exc:
        raise BadClient(f"bad heart-beat header {header!r}") from exc
    if cx < 0 or cy < 0:
        raise BadClient(f"bad heart-beat header {header!r}")
    return (max(cy, MIN_HEARTBEAT_MS) if cy > 0 else 0), 0


@dataclass(eq=False)
class Session:
    """One client connection: its writer, its subscriptions, its heart-beat task."""

    number: int
    writer: asyncio.StreamWriter
    subscriptions: dict[str, str] = field(default_factory=dict)  # id -> destination
    heartbeat: asyncio.Task[None] | None = None
    closed: bool = False

    def write(self, data: bytes) -> None:
        """Write unless closed; a vanished client never makes the server raise."""
        if self.closed or self.writer.is_closing():
            return
        with contextlib.suppress(Exception):
            self.writer.write(data)


@dataclass(eq=False)
class Pending:
    """A forwarded request waiting for its reply until ``timer`` fires."""

    session: Session
    reply_to: str
    body: bytes
    timer: asyncio.TimerHandle


class StompFrontDoor:
    """Serves STOMP clients on one ``RpcBridge``; many clients, one broker connection."""

    def __init__(
        self,
        *,
        timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        self.max_body_bytes = max_body_bytes
        self._pending: dict[str, Pending] = {}
        self._sessions: set[Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._numbers = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bridge: RpcBridge | None = None

    @property
    def pending(self) -> int:
        """Forwarded requests still waiting for their reply."""
        return len(self._pending)

    @property
    def sessions(self) -> int:
        """Connected clients."""
        return len(self._sessions)

    def reply_from_bridge(self, correlation_id: str, body: bytes) -> None:
        """The bridge's ``on_reply``: runs in the bridge thread, hands over to the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._on_reply, correlation_id, body)

    async def start(self, bridge: RpcBridge, host: str, port: int) -> asyncio.Server:
        """Listen on ``host:port`` (port 0: a free one) with ``bridge`` already started."""
        self._loop = asyncio.get_running_loop()
        self.bridge = bridge
        return await asyncio.start_server(self._serve, host, port, ssl=self.ssl_context)

    async def close_sessions(self, timeout_s: float = 5.0) -> None:
        """Close every client connection and wait for their tasks (at shutdown)."""
        for session in list(self._sessions):
            self._drop(session)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    # -- replies ---------------------------------------------------------------------------

    def _on_reply(self, correlation_id: str, body: bytes) -> None:
        pending = self._pending.pop(correlation_id, None)
        if pending is None:
            log.debug("stale reply %s dropped", correlation_id)
            return
        pending.timer.cancel()
        self._deliver(pending.reply_to, body)

    def _on_timeout(self, correlation_id: str) -> None:
        pending = self._pending.pop(correlation_id, None)
        if pending is not None:
            log.warning("no reply to %s within %gs", correlation_id, self.timeout_s)
            self._deliver(pending.reply_to, timeout_reply(pending.body, self.timeout_s))

    def _deliver(self, destination: str, body: bytes) -> None:
        """A MESSAGE to every subscription of ``destination``, across all sessions."""
        for session in self._sessions:
            for sub_id, subscribed in session.subscriptions.items():
                if subscribed == destination:
                    headers = {
                        "destination": destination,
                        "subscription": sub_id,
                        "message-id": uuid.uuid4().hex,
                        "content-type": "application/json",
                        "content-length": str(len(body)),
                    }
                    session.write(encode(Frame("MESSAGE", headers, body)))

    # -- sessions --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(next(self._numbers), writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._sessions.add(session)
        parser = FrameParser(max_body_bytes=self.max_body_bytes)
        try:
            while not session.closed:
                data = await reader.read(65536)
                if not data:
                    break
                for frame in parser.feed(data):
                    self._handle(session, frame)
                    if session.closed:
                        break
                await writer.drain()
        except (FrameError, BadClient) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("stomp client %d refused: %s", session.number, message)
            session.write(encode(Frame("ERROR", {"message": message})))
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("stomp client %d gone: %s", session.number, exc)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), 1.0)
            self._drop(session)

    def _drop(self, session: Session) -> None:
        session.closed = True
        self._sessions.discard(session)
        if session.heartbeat is not None:
            session.heartbeat.cancel()
        for correlation_id, pending in list(self._pending.items()):
            if pending.session is session:
                pending.timer.cancel()
                del self._pending[correlation_id]
        with contextlib.suppress(Exception):
            session.writer.close()

    def _handle(self, session: Session, frame: Frame) -> None:
        headers = frame.headers
        if frame.command != "SEND":  # a SEND's line, with its ids, is logged by _send
            log.debug("stomp client %d: %s %s", session.number, frame.command, headers.get("destination", ""))
        if frame.command in ("CONNECT", "STOMP"):
            if "1.2" not in headers.get("accept-version", "").split(","):
                raise BadClient("only STOMP 1.2 is supported")
            sx, sy = negotiate_heartbeat(headers.get("heart-beat"))
            session.write(encode(Frame("CONNECTED", {"version": "1.2", "heart-beat": f"{sx},{sy}"})))
            if sx > 0:
                session.heartbeat = asyncio.create_task(self._beat(session, sx / 1000.0))
        elif frame.command == "SUBSCRIBE":
            if "id" not in headers or "destination" not in headers:
                raise BadClient("SUBSCRIBE needs id and destination")
            session.subscriptions[headers["id"]] = headers["destination"]
        elif frame.command == "UNSUBSCRIBE":
            session.subscriptions.pop(headers.get("id", ""), None)
        elif frame.command == "SEND":
            self._send(session, frame)
        elif frame.command == "DISCONNECT":
            if "receipt" in headers:
                session.write(encode(Frame("RECEIPT", {"receipt-id": headers["receipt"]})))
            session.closed = True
        elif frame.command in ("ACK", "NACK", "BEGIN", "COMMIT", "ABORT"):
            pass  # ack:auto subscriptions and no transactions: nothing to settle
        else:
            raise BadClient(f"unknown command {frame.command}")
        if "receipt" in headers and frame.command not in ("DISCONNECT", "CONNECT", "STOMP"):
            session.write(encode(Frame("RECEIPT", {"receipt-id": headers["receipt"]})))

    def _send(self, session: Session, frame: Frame) -> None:
        destination = frame.headers.get("destination")
        reply_to = frame.headers.get("reply-to")
        if destination is None or reply_to is None:
            raise BadClient("SEND needs destination and reply-to")
        if destination not in REQUEST_DESTINATIONS:
            raise BadClient(f"SEND to {destination[:80]!r}: not a request destination")
        assert self._loop is not None
        assert self.bridge is not None
        correlation_id = uuid.uuid4().hex
        log.debug(
            "stomp client %d: SEND request %s reply-to %s ovirtCorrelationId %s",
            session.number,
            correlation_id,
            reply_to,
            frame.headers.get("ovirtCorrelationId", "-"),
        )
        timer = self._loop.call_later(self.timeout_s, self._on_timeout, correlation_id)
        self._pending[correlation_id] = Pending(session, reply_to, frame.body, timer)
        self.bridge.submit(frame.body, correlation_id, time.monotonic() + self.timeout_s)

    async def _beat(self, session: Session, interval_s: float) -> None:
        while not session.closed:
            await asyncio.sleep(interval_s)
            session.write(HEARTBEAT)


def timeout_reply(body: bytes, timeout_s: float) -> bytes:
    """A General Exception (100) response for each id of the request (or batch) in ``body``."""
    try:
        request = codec.loads(body)
    except codec.DecodeError:
        return jsonrpc.error_body(None, DeadlineExceeded("the request", timeout_s))
    members = request if isinstance(request, list) else [request]
    responses = [
        jsonrpc.error_body(m["id"], DeadlineExceeded(str(m.get("method", "the request")), timeout_s))
        for m in members
        if isinstance(m, dict) and m.get("id") is not None
    ]
    if isinstance(request, list):
        return jsonrpc.batch_body(responses)
    return responses[0] if responses else jsonrpc.error_body(None, DeadlineExceeded("the request", timeout_s))
