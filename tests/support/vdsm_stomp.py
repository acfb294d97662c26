"""A raw-socket STOMP client that sends exactly VDSM's frames, byte for byte (vdsm's yajsonrpc)."""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections import deque
from typing import Any

from bus_tasks import codec
from bus_tasks.frontdoors.stomp.frames import Frame, FrameParser


class RawVdsmClient:
    """CONNECT and SUBSCRIBE back to back, then SEND one-element batches, as VDSM's client does."""

    def __init__(
        self,
        port: int,
        *,
        heartbeat: str = "0,24000",
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.timeout_s = timeout_s
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.sock: socket.socket = (
            ssl_context.wrap_socket(raw, server_hostname="localhost") if ssl_context else raw
        )
        self.heartbeat = heartbeat
        self.reply_to = str(uuid.uuid4())
        self.subscription = str(uuid.uuid4())
        self.parser = FrameParser()
        self.frames: deque[Frame] = deque()
        self.connected: Frame | None = None

    def connect(self) -> Frame:
        """Send CONNECT and SUBSCRIBE in one write, before reading CONNECTED; return it."""
        self.sock.sendall(
            f"CONNECT\naccept-version:1.2\nheart-beat:{self.heartbeat}\n\n\x00".encode()
            + f"SUBSCRIBE\ndestination:{self.reply_to}\nack:auto\nid:{self.subscription}\n\n\x00".encode()
        )
        self.connected = self.read_frame()
        return self.connected

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_request(self, body: bytes, destination: str = "jms.topic.vdsm_requests") -> None:
        self.sock.sendall(
            f"SEND\ndestination:{destination}\ncontent-type:application/json\n"
            f"reply-to:{self.reply_to}\ncontent-length:{len(body)}\n\n".encode()
            + body
            + b"\x00"
        )

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One call as a one-element batch; the one response of the reply array."""
        request_id = str(uuid.uuid4())
        body = codec.dumps([{"jsonrpc": "2.0", "method": method, "params": params or {}, "id": request_id}])
        self.send_request(body)
        message = self.read_frame()
        assert message.command == "MESSAGE", message
        reply = codec.loads(message.body)
        assert isinstance(reply, list), reply
        assert len(reply) == 1
        assert reply[0]["id"] == request_id
        return reply[0]  # type: ignore[no-any-return]

    def read_frame(self, timeout_s: float | None = None) -> Frame:
        """The next frame (heart-beats skipped), within ``timeout_s``.

        Raises:
            TimeoutError: when none came in time; ConnectionError when the server closed.
        """
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while not self.frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.frames.extend(self.parser.feed(data))
        return self.frames.popleft()

    def read_raw(self, timeout_s: float) -> bytes:
        """Whatever bytes come next (heart-beats included), within ``timeout_s``; b"" when closed."""
        self.sock.settimeout(timeout_s)
        return self.sock.recv(65536)

    def closed_by_server(self, timeout_s: float) -> bool:
        """Whether the server closes the connection within ``timeout_s`` (frames before are read)."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, ssl.SSLError):
                return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()
