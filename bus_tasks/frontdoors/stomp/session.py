"""One STOMP client connection: an asyncio protocol that parses its frames and answers all but SEND.

It is bounded (SPEC 18, ``StompLimits``): CONNECT (and the TLS handshake before it) within
``connect_timeout_s`` of the accept, no silence past twice the heart-beat it offered, and no more
than ``max_outbuf_bytes`` of replies waiting for it to read; over a bound it is closed, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

from bus_tasks.config import (
    DEFAULT_STOMP_CONNECT_TIMEOUT_S,
    DEFAULT_STOMP_MAX_CONNECTIONS,
    DEFAULT_STOMP_MAX_OUTBUF_BYTES,
    DEFAULT_STOMP_MAX_PENDING,
)
from bus_tasks.frontdoors.stomp.frames import (
    HEARTBEAT,
    MAX_BODY_BYTES,
    Frame,
    FrameError,
    FrameParser,
    encode,
)

log = logging.getLogger("bus_tasks.frontdoors.stomp")

MIN_HEARTBEAT_MS = 1000
READ_BYTES = 64 * 1024  # read into one buffer per session: no 256 KiB bytes object per read


class BadClient(Exception):
    """Raised when a client sent what this front door refuses: it gets ERROR and is closed."""


@dataclass(frozen=True, slots=True)
class StompLimits:
    """What one client may hold of the front door (SPEC 18); the settings ``stomp_*``."""

    connect_timeout_s: float = DEFAULT_STOMP_CONNECT_TIMEOUT_S
    max_connections: int = DEFAULT_STOMP_MAX_CONNECTIONS
    max_pending: int = DEFAULT_STOMP_MAX_PENDING  # requests in flight per connection
    max_outbuf_bytes: int = DEFAULT_STOMP_MAX_OUTBUF_BYTES
    max_body_bytes: int = MAX_BODY_BYTES


def negotiate_heartbeat(header: str | None) -> tuple[int, int]:
    """The server's ``heart-beat`` (sx, sy) for a client's ``cx,cy``: send every cy, and expect
    one every cx when the client offers to send (each at least ``MIN_HEARTBEAT_MS``)."""
    try:
        cx_text, cy_text = (header or "0,0").split(",")
        cx, cy = int(cx_text), int(cy_text)
    except ValueError as exc:
        raise BadClient(f"bad heart-beat header {header!r}") from exc
    if cx < 0 or cy < 0:
        raise BadClient(f"bad heart-beat header {header!r}")
    return (max(cy, MIN_HEARTBEAT_MS) if cy > 0 else 0), (max(cx, MIN_HEARTBEAT_MS) if cx > 0 else 0)


def common_name(peercert: Any) -> str | None:
    """The subject CN of a verified client certificate (``ssl``'s decoded form), if it has one."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and isinstance(value, str):
                return value
    return None


def peer_of(transport: asyncio.BaseTransport) -> str:
    """``host:port`` of the other end, for log lines."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "-")


class Door(Protocol):
    """What a session needs of its front door."""

    def opened(self, session: Session) -> bool:
        """A client connected (TLS not yet shaken hands): False when it is one too many."""
        ...

    def dropped(self, session: Session) -> None:
        """The session is closed: forget it and what it waits for."""
        ...

    def forward(self, session: Session, frame: Frame) -> None:
        """Bridge a SEND (raises BadClient when it cannot be)."""
        ...

    def refused(self, reason: str) -> None:
        """A connection closed for a limit (a ``REFUSALS`` reason of its metrics), counted."""
        ...


class Session(asyncio.BufferedProtocol):
    """One client connection: its subscriptions (id -> destination) and its heart-beat task.

    Frames are handled as their bytes arrive, in ``buffer_updated``; while the client does not
    read what it is sent (the transport's buffer is full), its frames are not read either.
    Under TLS the connection is accepted as TCP and shakes hands here (``start_tls``), so that
    the handshake counts against the connect deadline and a failed one is logged with its peer.
    """

    def __init__(
        self, door: Door, number: int, limits: StompLimits, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.number = number
        self.peer = "-"
        self.subscriptions: dict[str, str] = {}
        self.heartbeat: asyncio.Task[None] | None = None
        self.handshake: asyncio.Task[None] | None = None
        self.identity: str | None = None  # the CN of the client's certificate (TLS with --tls-ca)
        self.in_flight = 0  # requests forwarded and not answered yet (the door counts)
        self.over_pending = 0  # requests answered at once for being over max_pending
        self.closed = False
        self._door = door
        self._limits = limits
        self._ssl_context = ssl_context
        self._parser = FrameParser(max_body_bytes=limits.max_body_bytes)
        self._transport: asyncio.Transport | None = None
        self._tcp: asyncio.Transport | None = None  # under TLS: the transport beneath
        self._read_buffer = memoryview(bytearray(READ_BYTES))
        self._early = bytearray()  # bytes read in the handshake's last turn, before start_tls returned
        self._admitted = False
        self._connected = False  # CONNECT came
        self._deadline: asyncio.TimerHandle | None = None  # for CONNECT
        self._silence: asyncio.TimerHandle | None = None
        self._expect_s = 0.0  # the client's heart-beat interval (0: none expected)
        self._heard_at = 0.0
        self._reading_paused = False

    # -- asyncio.BufferedProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        loop = asyncio.get_running_loop()
        self._transport = transport
        self.peer = peer_of(transport)
        self._heard_at = loop.time()
        self._admitted = self._door.opened(self)
        self._deadline = loop.call_later(self._limits.connect_timeout_s, self._connect_expired)
        if self._ssl_context is None:
            self._ready()
            return
        self._tcp = transport
        transport.pause_reading()  # start_tls resumes it under the TLS protocol
        self.handshake = loop.create_task(self._shake_hands(transport, self._ssl_context))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        if self.handshake is not None:  # start_tls has not returned the transport to answer on yet
            self._early += self._read_buffer[:nbytes]
            return
        self._receive(self._read_buffer[:nbytes])

    def eof_received(self) -> None:
        log.debug("stomp client %d gone", self.number)  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("stomp client %d gone: %s", self.number, exc)
        self.close()

    def pause_writing(self) -> None:
        self._reading_paused = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._reading_paused = False
        self._heard_at = asyncio.get_running_loop().time()  # its bytes waited unread: not its silence
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # -- the session -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write unless closed; a vanished client never makes the server raise; one that leaves
        more than ``max_outbuf_bytes`` unread is dropped."""
        transport = self._transport
        if self.closed or transport is None or transport.is_closing():
            return
        with contextlib.suppress(Exception):
            transport.write(data)
        waiting = transport.get_write_buffer_size()
        if self._tcp is not None:  # TLS: and the encrypted bytes beneath
            waiting += self._tcp.get_write_buffer_size()
        if waiting > self._limits.max_outbuf_bytes:
            log.warning(
                "stomp client %d from %s dropped: %d bytes of replies wait unread (at most %d)",
                self.number,
                self.peer,
                waiting,
                self._limits.max_outbuf_bytes,
            )
            self._door.refused("outbuf")
            self.close(abort=True)

    def close(self, *, abort: bool = False) -> None:
        """Close after what was written is sent (``abort``: at once); forget the session (once)."""
        if self.closed:
            return
        self.closed = True
        for timer in (self._deadline, self._silence):
            if timer is not None:
                timer.cancel()
        for task in (self.heartbeat, self.handshake):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._door.dropped(self)
        # Closing the top transport lets TLS send what waits, then its close_notify; an abort
        # cuts the TCP connection beneath at once.
        for transport in (self._transport, self._tcp if abort else None):
            if transport is None:
                continue
            with contextlib.suppress(Exception):
                if abort:
                    transport.abort()
                else:
                    transport.close()

    def tasks(self) -> list[asyncio.Task[None]]:
        """Its heart-beat and handshake tasks, to wait for at shutdown."""
        return [t for t in (self.heartbeat, self.handshake) if t is not None]

    def _receive(self, data: bytes | bytearray | memoryview) -> None:
        """Each whole frame in order; a malformed one (or one refused) ends it, after those before."""
        self._heard_at = asyncio.get_running_loop().time()
        try:
            for frame in self._parser.frames(data):
                self._handle(frame)
                if self.closed:
                    return
        except (FrameError, BadClient) as exc:
            self._refuse(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _refuse(self, message: str) -> None:
        log.warning("stomp client %d from %s refused: %s", self.number, self.peer, message)
        self.write(encode(Frame("ERROR", {"message": message})))
        self.close()

    async def _shake_hands(self, tcp: asyncio.Transport, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                tcp, self, context, server_side=True, ssl_handshake_timeout=self._limits.connect_timeout_s
            )
        except Exception as exc:  # the client's doing (refused certificate, reset, timeout): one line
            if not self.closed:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning(
                    "stomp client %d from %s: TLS handshake failed: %s", self.number, self.peer, reason
                )
                self._door.refused("tls_handshake")
                self.close()
            return
        self.handshake = None
        if self.closed or transport is None:
            return
        self._transport = transport
        self.identity = common_name(transport.get_extra_info("peercert"))
        self._ready()
        if self._early and not self.closed:
            early, self._early = bytes(self._early), bytearray()
            self._receive(early)

    def _ready(self) -> None:
        """Connected (TLS: after the handshake): one too many gets ERROR and is closed."""
        if not self._admitted:
            self._door.refused("connections")
            self._refuse(f"too many connections (at most {self._limits.max_connections})")

    def _connect_expired(self) -> None:
        if self._connected or self.closed:
            return
        what = "TLS handshake failed: not done" if self.handshake is not None else "closed: no CONNECT"
        log.warning(
            "stomp client %d from %s: %s within %gs",
            self.number,
            self.peer,
            what,
            self._limits.connect_timeout_s,
        )
        self._door.refused("connect_timeout")
        self.close(abort=True)

    def _watch_silence(self) -> None:
        self._silence = None
        if self.closed:
            return
        now = asyncio.get_running_loop().time()
        if self._reading_paused:
            self._heard_at = now  # we do not read it now: its heart-beats wait in the socket
        allowed_s = 2 * self._expect_s
        quiet_s = now - self._heard_at
        if quiet_s >= allowed_s:
            log.warning(
                "stomp client %d from %s closed: silent for %.1fs (heart-beat every %gs)",
                self.number,
                self.peer,
                quiet_s,
                self._expect_s,
            )
            self._door.refused("heartbeat")
            self.close(abort=True)
            return
        self._silence = asyncio.get_running_loop().call_later(allowed_s - quiet_s, self._watch_silence)

    def _handle(self, frame: Frame) -> None:
        headers = frame.headers
        command = frame.command
        if command != "SEND":  # a SEND's line, with its ids, is logged by the door
            log.debug("stomp client %d: %s %s", self.number, command, headers.get("destination", ""))
        if command == "SEND":
            self._door.forward(self, frame)
        elif command in ("CONNECT", "STOMP"):
            self._connect(headers)
        elif command == "SUBSCRIBE":
            if "id" not in headers or "destination" not in headers:
                raise BadClient("SUBSCRIBE needs id and destination")
            self.subscriptions[headers["id"]] = headers["destination"]
        elif command == "UNSUBSCRIBE":
            self.subscriptions.pop(headers.get("id", ""), None)
        elif command == "DISCONNECT":
            if "receipt" in headers:
                self.write(encode(Frame("RECEIPT", {"receipt-id": headers["receipt"]})))
            self.close()
        elif command in ("ACK", "NACK", "BEGIN", "COMMIT", "ABORT"):
            pass  # ack:auto subscriptions and no transactions: nothing to settle
        else:
            raise BadClient(f"unknown command {command}")
        if "receipt" in headers and command not in ("DISCONNECT", "CONNECT", "STOMP"):
            self.write(encode(Frame("RECEIPT", {"receipt-id": headers["receipt"]})))

    def _connect(self, headers: dict[str, str]) -> None:
        if "1.2" not in headers.get("accept-version", "").split(","):
            raise BadClient("only STOMP 1.2 is supported")
        sx, sy = negotiate_heartbeat(headers.get("heart-beat"))
        self.write(encode(Frame("CONNECTED", {"version": "1.2", "heart-beat": f"{sx},{sy}"})))
        loop = asyncio.get_running_loop()
        if not self._connected:
            self._connected = True
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
        if sx > 0 and self.heartbeat is None:
            self.heartbeat = loop.create_task(self._beat(sx / 1000.0))
        if sy > 0 and self._silence is None:
            self._expect_s = sy / 1000.0
            self._silence = loop.call_later(2 * self._expect_s, self._watch_silence)

    async def _beat(self, interval_s: float) -> None:
        while not self.closed:
            await asyncio.sleep(interval_s)
            self.write(HEARTBEAT)
