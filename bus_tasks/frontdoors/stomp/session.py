"""One STOMP client connection: an asyncio protocol that parses its frames and answers all but SEND."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from bus_tasks.frontdoors.stomp.frames import HEARTBEAT, Frame, FrameError, FrameParser, encode

log = logging.getLogger("bus_tasks.frontdoors.stomp")

MIN_HEARTBEAT_MS = 1000
READ_BYTES = 64 * 1024  # read into one buffer per session: no 256 KiB bytes object per read


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


class Door(Protocol):
    """What a session needs of its front door."""

    def opened(self, session: Session) -> None: ...

    def dropped(self, session: Session) -> None:
        """The session is closed: forget it and what it waits for."""
        ...

    def forward(self, session: Session, frame: Frame) -> None:
        """Bridge a SEND (raises BadClient when it cannot be)."""
        ...


class Session(asyncio.BufferedProtocol):
    """One client connection: its subscriptions (id -> destination) and its heart-beat task.

    Frames are handled as their bytes arrive, in ``buffer_updated``; while the client does not
    read what it is sent (the transport's buffer is full), its frames are not read either.
    """

    def __init__(self, door: Door, number: int, max_body_bytes: int) -> None:
        self.number = number
        self.subscriptions: dict[str, str] = {}
        self.heartbeat: asyncio.Task[None] | None = None
        self.closed = False
        self._door = door
        self._parser = FrameParser(max_body_bytes=max_body_bytes)
        self._transport: asyncio.Transport | None = None
        self._read_buffer = memoryview(bytearray(READ_BYTES))

    # -- asyncio.BufferedProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._door.opened(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        try:
            for frame in self._parser.feed(self._read_buffer[:nbytes]):
                self._handle(frame)
                if self.closed:
                    return
        except (FrameError, BadClient) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("stomp client %d refused: %s", self.number, message)
            self.write(encode(Frame("ERROR", {"message": message})))
            self.close()

    def eof_received(self) -> None:
        log.debug("stomp client %d gone", self.number)  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("stomp client %d gone: %s", self.number, exc)
        self.close()

    def pause_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # -- the session -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write unless closed; a vanished client never makes the server raise."""
        transport = self._transport
        if self.closed or transport is None or transport.is_closing():
            return
        with contextlib.suppress(Exception):
            transport.write(data)

    def close(self) -> None:
        """Close after what was written is sent; forget the session (once)."""
        if self.closed:
            return
        self.closed = True
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        self._door.dropped(self)
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()

    def _handle(self, frame: Frame) -> None:
        headers = frame.headers
        command = frame.command
        if command != "SEND":  # a SEND's line, with its ids, is logged by the door
            log.debug("stomp client %d: %s %s", self.number, command, headers.get("destination", ""))
        if command == "SEND":
            self._door.forward(self, frame)
        elif command in ("CONNECT", "STOMP"):
            if "1.2" not in headers.get("accept-version", "").split(","):
                raise BadClient("only STOMP 1.2 is supported")
            sx, sy = negotiate_heartbeat(headers.get("heart-beat"))
            self.write(encode(Frame("CONNECTED", {"version": "1.2", "heart-beat": f"{sx},{sy}"})))
            if sx > 0 and self.heartbeat is None:
                self.heartbeat = asyncio.get_running_loop().create_task(self._beat(sx / 1000.0))
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

    async def _beat(self, interval_s: float) -> None:
        while not self.closed:
            await asyncio.sleep(interval_s)
            self.write(HEARTBEAT)
