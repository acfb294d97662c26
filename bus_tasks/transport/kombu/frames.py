"""The AMQP frames that have arrived, read in chunks and handed to py-amqp's own frame handler.

py-amqp reads a frame in three reads of exact sizes (its 7-byte header, its payload, its end
octet), each in ``blocking_read`` under ``having_timeout`` (a context manager): nine reads a
delivery (method, content header, body), each a system call on plain AMQP or an SSL read over
TLS, a quarter of an aggregator thread's ingest CPU. Here the non-blocking socket is read a
chunk at a time and each complete frame goes to ``on_inbound_frame``, py-amqp's handler behind
``blocking_read``: the same checks, heart-beat accounting and dispatch. What is left of an
incomplete frame stays where py-amqp's next read of its own starts (its ``_read_buffer``).

A delivery found whole in what was read (its method, content header and body frames) for a
consumer whose callback is a :class:`Receiver` goes to that receiver in parts instead: py-amqp
would build a ``Message``, parse the arguments with its generic parser and dispatch them
through three calls, about a fifth of an aggregator's ingest CPU; here the arguments are read
directly and the properties decoded by py-amqp's own decoder (see :func:`_whole_delivery`).
"""

from __future__ import annotations

import contextlib
import ssl
import struct
from collections.abc import Callable
from typing import Any

from amqp.exceptions import UnexpectedFrame
from amqp.serialization import decode_properties_basic

CHUNK_BYTES = 65536  # a read's most; over TLS a read returns one record (16 KiB) at most
FRAME_END = 206
_METHOD = 1  # a method frame's type (a content header is 2, a body 3, a heart-beat 8)
_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_HEADER_BYTES = _HEADER.size
_DELIVER = b"\x00\x3c\x00\x3c"  # a method frame's payload starting so is a basic.deliver
# A channel.close (20, 40) or connection.close (10, 50) from the broker: py-amqp answers it in its
# handler, and for a channel opens it again and *waits* for the broker's open-ok with reads of its
# own, which need the socket blocking (with its time-out) and the bytes after the close.
_CLOSES = (b"\x00\x14\x00\x28", b"\x00\x0a\x00\x32")
_DELIVER_SIG = (60, 60)
_BASIC = 60  # the content class of basic's messages
_CONTENT_HEADER, _BODY = 2, 3
_TAG = struct.Struct(">Q")
_CONTENT = struct.Struct(">HxxQ")  # a content header's class and body size (the weight skipped)


class Receiver:
    """A consumer's callback that also takes a delivery in parts (:func:`read_ready` hands it the
    deliveries it finds whole in what it read, without py-amqp's ``Message`` and dispatch)."""

    __slots__ = ()

    def deliver(
        self, body: bytes, routing_key: str, properties: dict[str, Any], channel: Any, tag: int
    ) -> bool:
        """Take the delivery ``tag`` of ``channel``; False to leave it to py-amqp instead (it is
        then dispatched as any message, to this receiver's ``__call__``)."""
        raise NotImplementedError


_NOTHING_YET = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
# _whole_delivery's: past it, its frames, the receiver, body, routing key, properties, channel, tag
_Whole = tuple[int, int, Receiver, bytes, str, dict[str, Any], Any, int]


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
    handed_back = False  # the socket and the bytes left are py-amqp's again (a close)
    try:
        ask = True
        while not ask or more():
            if len(buffer) - start >= _HEADER_BYTES:
                frame_type, channel, size = unpack_from(buffer, start)
                end = start + _HEADER_BYTES + size
                if end < len(buffer):
                    if buffer[end] != FRAME_END:
                        raise UnexpectedFrame(f"Received frame_end {buffer[end]:#04x} while expecting 0xce")
                    if frame_type == _METHOD and buffer.startswith(_DELIVER, start + _HEADER_BYTES):
                        whole = _whole_delivery(connection, buffer, start, end, channel)
                        if whole is not None:
                            past, frames, receiver, body, routing_key, properties, of, tag = whole
                            began, start = start, past  # taken before it is handled, as above
                            connection.bytes_recv += frames  # as py-amqp counts each frame
                            if receiver.deliver(body, routing_key, properties, of, tag):
                                ask = True
                                continue
                            start = began  # declined: py-amqp hands it over
                            connection.bytes_recv -= frames
                    payload = buffer[start + _HEADER_BYTES : end]
                    start = end + 1  # taken before it is handled, as py-amqp's read takes it
                    if frame_type == _METHOD and payload[:4] in _CLOSES:
                        # Handled as py-amqp's own read would hand it over: the socket blocking,
                        # the rest in its buffer. It raises why the broker closed; a channel
                        # unable to reopen on a non-blocking socket raised a time-out instead,
                        # and the refusal the close told of (transport/refusals) was lost.
                        transport._read_buffer = buffer[start:]
                        handed_back = True
                        sock.settimeout(was)
                        on_frame((frame_type, channel, payload))
                        return
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
        if not handed_back:  # else py-amqp's reads may have taken from it meanwhile
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


def _whole_delivery(connection: Any, buffer: bytes, start: int, end: int, channel_id: int) -> _Whole | None:
    """The basic.deliver whose method frame is ``buffer[start:end + 1]``, for its consumer's
    :class:`Receiver`, when the delivery is whole there (its content header and body frames follow
    it on its channel) and py-amqp would hand it over as it is: (where the frame after it starts,
    its frames, the receiver, then what :meth:`Receiver.deliver` takes); None when py-amqp is to
    handle it.

    What py-amqp does with such a delivery, done here without its ``Message``, its argument
    parser and its dispatch: the arguments read (consumer tag, delivery tag, routing key), the
    properties decoded by py-amqp's own decoder, the body frames joined. Left to py-amqp: a
    channel closing, decoding bodies, or waited on for a delivery; a consumer without a
    Receiver; a delivery not whole in the buffer, or with anything unexpected in its frames
    (py-amqp then raises as it does).
    """
    channel = connection.channels.get(channel_id)
    if channel is None or channel.is_closing or channel.auto_decode or _DELIVER_SIG in channel._pending:
        return None
    try:
        arguments = buffer[start + _HEADER_BYTES + 4 : end]  # consumer tag, delivery tag, bit, exchange, key
        size = arguments[0]
        consumer_tag = arguments[1 : 1 + size].decode("utf-8", "surrogatepass")  # as py-amqp's loads
        receiver = channel.callbacks.get(consumer_tag)
        if not isinstance(receiver, Receiver):
            return None
        at = 1 + size
        (tag,) = _TAG.unpack_from(arguments, at)
        at += 9  # the tag and the redelivered bit
        at += 1 + arguments[at]  # the exchange
        size = arguments[at]
        if at + 1 + size > len(arguments):
            return None
        routing_key = arguments[at + 1 : at + 1 + size].decode("utf-8", "surrogatepass")
        # The content header, then as many body frames as its body size takes, each whole.
        at = end + 1
        frame_type, channel_of, size = _HEADER.unpack_from(buffer, at)
        past: int = at + _HEADER_BYTES + size
        if frame_type != _CONTENT_HEADER or channel_of != channel_id or buffer[past] != FRAME_END:
            return None
        payload = buffer[at + _HEADER_BYTES : past]
        class_id, body_size = _CONTENT.unpack_from(payload)
        if class_id != _BASIC:
            return None
        properties, _ = decode_properties_basic(payload, 12)
        frames = 2
        parts: list[bytes] = []
        received = 0
        at = past + 1
        while received < body_size:
            frame_type, channel_of, size = _HEADER.unpack_from(buffer, at)
            past = at + _HEADER_BYTES + size
            if frame_type != _BODY or channel_of != channel_id or buffer[past] != FRAME_END:
                return None
            parts.append(buffer[at + _HEADER_BYTES : past])
            received += size
            frames += 1
            at = past + 1
    except Exception:  # not whole yet (a read past the buffer), or malformed: py-amqp's to say
        return None
    body = (parts[0] if len(parts) == 1 else b"".join(parts)) if parts else b""
    return at, frames, receiver, body, routing_key, properties, channel, tag
