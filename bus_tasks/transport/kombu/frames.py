"""The AMQP frames that have arrived, read in chunks and handed to py-amqp's own frame handler.

py-amqp reads a frame in three reads of exact sizes (its 7-byte header, its payload, its end
octet), each in ``blocking_read`` under ``having_timeout`` (a context manager): nine reads a
delivery (method, content header, body), each a system call on plain AMQP or an SSL read over
TLS, a quarter of an aggregator thread's ingest CPU. Here the non-blocking socket is read a
chunk at a time and each complete frame goes to ``on_inbound_frame``, py-amqp's handler behind
``blocking_read``: the same checks, heart-beat accounting and dispatch. What is left of an
incomplete frame stays where py-amqp's next read of its own starts (its ``_read_buffer``).
"""

from __future__ import annotations

import contextlib
import ssl
import struct
from collections.abc import Callable
from typing import Any

from amqp.exceptions import UnexpectedFrame

CHUNK_BYTES = 65536  # a read's most; over TLS a read returns one record (16 KiB) at most
FRAME_END = 206
_METHOD = 1  # a method frame's type (a content header is 2, a body 3, a heart-beat 8)
_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_HEADER_BYTES = _HEADER.size
_NOTHING_YET = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def read_ready(connection: Any, more: Callable[[], bool]) -> None:
    """Hand each frame the socket of ``connection`` (py-amqp's) has, or holds already, to its
    frame handler, while ``more()`` (asked before each read and each frame, but not right after
    a method frame: a third as often on a flood of deliveries); returns when none is complete.
    The socket is non-blocking for the whole loop, and gets its time-out back after.

    Raises:
        OSError: the socket's error, or a closed connection (the transport is marked
            disconnected, as py-amqp marks it).
        UnexpectedFrame: a frame that does not end with its end octet.
        whatever py-amqp's handler raises for a frame (a connection or channel closed).
    """
    transport = connection.transport
    sock = transport.sock
    on_frame = connection.on_inbound_frame
    unpack_from = _HEADER.unpack_from
    buffer: bytes = transport._read_buffer
    start = 0
    was = sock.gettimeout()
    sock.settimeout(0)
    try:
        ask = True
        while not ask or more():
            if len(buffer) - start >= _HEADER_BYTES:
                frame_type, channel, size = unpack_from(buffer, start)
                end = start + _HEADER_BYTES + size
                if end < len(buffer):
                    if buffer[end] != FRAME_END:
                        raise UnexpectedFrame(f"Received frame_end {buffer[end]:#04x} while expecting 0xce")
                    payload = buffer[start + _HEADER_BYTES : end]
                    start = end + 1  # taken before it is handled, as py-amqp's read takes it
                    on_frame((frame_type, channel, payload))
                    # A delivery ends with its content header or body frame, never with its
                    # method frame: more() (how many deliveries are in) is not asked after one.
                    ask = frame_type != _METHOD
                    continue
            ask = True
            chunk = _receive(transport, sock)
            if chunk is None:
                return
            buffer = buffer[start:] + chunk
            start = 0
    finally:
        transport._read_buffer = buffer[start:]
        with contextlib.suppress(OSError):  # closed meanwhile: its own error tells why
            sock.settimeout(was)


def _receive(transport: Any, sock: Any) -> bytes | None:
    """What the socket has now, None if nothing yet."""
    try:
        chunk: bytes = sock.recv(CHUNK_BYTES)
    except _NOTHING_YET:
        return None
    except OSError:
        transport.connected = False
        raise
    if not chunk:
        transport.connected = False
        raise OSError("Server unexpectedly closed connection")  # py-amqp's words for it
    return chunk
