"""A basic.publish written as one write of its frames, straight to py-amqp's transport.

kombu's ``Producer.publish`` and py-amqp's ``basic_publish`` spend most of a publisher's CPU on
the way to the socket: kombu's arguments and ``Message``, py-amqp's generic argument and
property encoders, and a zero-timeout read of the socket before every publish (to notice
``connection.blocked`` at once). :class:`Frames` writes the same bytes: the method frame of an
exchange and routing key is made once, the content header's properties are encoded here for
the few that this project sets, and the three frames go out in one ``write``. The bytes are
those py-amqp writes for kombu's publish of the same message (tests/unit/test_sending.py holds
them side by side). A blocked connection is still noticed: by the next read of the confirms.

Only a connection used from one thread (as every :class:`BusConnection` is) may write so: py-amqp
serializes its own writes with a lock this module does not hold.
"""

from __future__ import annotations

import struct
from typing import Any

from amqp.exceptions import RecoverableConnectionError
from amqp.serialization import dumps

from bus_tasks import names
from bus_tasks.transport.outbox import Outgoing

_FRAME_END = b"\xce"
_FRAME = struct.Struct(">BHI")  # frame type, channel, payload size
_METHOD, _CONTENT_HEADER, _BODY = 1, 2, 3
_PUBLISH = struct.pack(">HHH", 60, 40, 0)  # basic.publish, its reserved ticket 0
_CONTENT = struct.Struct(">HHQH")  # class basic, weight 0, body size, property flags
_BASIC = 60
_OVERHEAD = 8  # a frame's header and end octet

# Property flags, in the order AMQP 0-9-1 encodes the values (py-amqp's Message.PROPERTIES).
_CONTENT_TYPE, _CONTENT_ENCODING, _HEADERS = 1 << 15, 1 << 14, 1 << 13
_DELIVERY_MODE, _PRIORITY, _CORRELATION_ID = 1 << 12, 1 << 11, 1 << 10
_REPLY_TO, _EXPIRATION, _USER_ID = 1 << 9, 1 << 8, 1 << 4
_ALWAYS = _CONTENT_TYPE | _CONTENT_ENCODING | _HEADERS | _DELIVERY_MODE | _PRIORITY
_TYPE_AND_ENCODING = dumps("ss", (names.CONTENT_TYPE, "utf-8"))


def _shortstr(value: str) -> bytes:
    encoded: bytes = dumps("s", (value,))
    return encoded


class Frames:
    """Writes basic.publish on one py-amqp channel (its connection's transport, at its frame_max)."""

    def __init__(self, channel: Any, user_id: str | None) -> None:
        self._channel = channel
        connection = channel.connection
        self._connection = connection
        self._write = connection.transport.write
        self._channel_id: int = channel.channel_id
        self._body_max: int = connection.frame_max - _OVERHEAD
        self._user_id = b"" if user_id is None else _shortstr(user_id)
        self._methods: dict[tuple[str, str, bool], bytes] = {}
        self._plain: dict[bool, tuple[int, bytes]] = {}  # properties of a message with the usual ones only

    def publish(self, message: Outgoing, *, mandatory: bool) -> None:
        """Send ``message``; raises what py-amqp's publish raises for a closed channel, and the
        transport's errors for a lost connection."""
        if self._channel.connection is None or self._connection.transport is None:
            raise RecoverableConnectionError("basic_publish: connection closed")
        body, exchange, routing_key = message.body, message.exchange, message.routing_key
        persistent, headers, expiration_s = message.persistent, message.headers, message.expiration_s
        correlation_id, reply_to = message.correlation_id, message.reply_to
        method = self._methods.get((exchange, routing_key, mandatory))
        if method is None:
            method = self._method(exchange, routing_key, mandatory)
        if headers or correlation_id is not None or reply_to is not None or expiration_s is not None:
            properties = self._properties(persistent, headers, correlation_id, reply_to, expiration_s)
        else:
            properties = self._plain.get(persistent) or self._plain_properties(persistent)
        size = len(body)
        channel = self._channel_id
        header = _CONTENT.pack(_BASIC, 0, size, properties[0]) + properties[1]
        parts = [method, _FRAME.pack(_CONTENT_HEADER, channel, len(header)), header, _FRAME_END]
        if size <= self._body_max:
            if size:  # an empty body has no body frame
                parts += (_FRAME.pack(_BODY, channel, size), body, _FRAME_END)
            self._write(b"".join(parts))
        else:  # in frames of frame_max, one write each as py-amqp writes them
            self._write(b"".join(parts))
            view = memoryview(body)
            for start in range(0, size, self._body_max):
                chunk = view[start : start + self._body_max]
                self._write(b"".join((_FRAME.pack(_BODY, channel, len(chunk)), chunk, _FRAME_END)))
        self._connection.bytes_sent += 1  # py-amqp's heart-beat accounting counts writes so

    def _method(self, exchange: str, routing_key: str, mandatory: bool) -> bytes:
        payload = _PUBLISH + dumps("ssbb", (exchange, routing_key, mandatory, False))
        frame = b"".join((_FRAME.pack(_METHOD, self._channel_id, len(payload)), payload, _FRAME_END))
        if len(self._methods) < 1024:  # a few exchanges and keys in practice; not unbounded
            self._methods[(exchange, routing_key, mandatory)] = frame
        return frame

    def _plain_properties(self, persistent: bool) -> tuple[int, bytes]:
        properties = self._plain[persistent] = self._properties(persistent, None, None, None, None)
        return properties

    def _properties(
        self,
        persistent: bool,
        headers: dict[str, Any] | None,
        correlation_id: str | None,
        reply_to: str | None,
        expiration_s: float | None,
    ) -> tuple[int, bytes]:
        """The property flags and values kombu's publish gives py-amqp: content type and encoding,
        headers (an empty table for none), delivery mode, priority 0, then those given."""
        flags = _ALWAYS
        mode = b"\x02" if persistent else b"\x01"
        parts = [_TYPE_AND_ENCODING, dumps("F", (headers or {},)), mode, b"\x00"]  # priority 0
        if correlation_id is not None:
            flags |= _CORRELATION_ID
            parts.append(_shortstr(correlation_id))
        if reply_to is not None:
            flags |= _REPLY_TO
            parts.append(_shortstr(reply_to))
        if expiration_s is not None:
            flags |= _EXPIRATION
            parts.append(_shortstr(str(int(expiration_s * 1000))))
        if self._user_id:
            flags |= _USER_ID
            parts.append(self._user_id)
        return flags, b"".join(parts)
