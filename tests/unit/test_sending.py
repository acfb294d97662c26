"""A publish written by :class:`Frames` is byte for byte what kombu's ``Producer.publish`` makes
py-amqp write for the same message, whatever properties it has and however large its body."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from amqp.exceptions import RecoverableConnectionError
from amqp.method_framing import frame_writer
from kombu.messaging import Producer
from kombu.transport.pyamqp import Channel

from bus_tasks import names
from bus_tasks.transport.kombu.sending import Frames
from bus_tasks.transport.outbox import Outgoing

FRAME_MAX = 4096  # small, so that a body of a few KiB is cut into frames as on the wire


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    @contextmanager
    def having_timeout(self, timeout: float | None) -> Iterator[None]:
        yield

    def wire(self) -> bytes:
        return b"".join(self.writes)


class Connection:
    """What py-amqp's publish reads of its connection; no socket."""

    def __init__(self) -> None:
        self.transport: Transport | None = Transport()
        self.frame_max = FRAME_MAX
        self.bytes_sent = 0
        self.client_properties: dict[str, Any] = {"capabilities": {}}
        self.frame_writer = frame_writer(self, self.transport)


def channel_on(connection: Connection, channel_id: int = 7) -> Any:
    channel: Any = Channel.__new__(Channel)  # kombu's py-amqp channel, without a handshake
    channel.connection = connection
    channel.channel_id = channel_id
    channel.is_open = True
    channel.events = {}
    return channel


def by_kombu(body: bytes, user_id: str | None, **message: Any) -> tuple[bytes, int]:
    connection = Connection()
    producer = Producer(channel_on(connection))  # type: ignore[no-untyped-call]
    producer.publish(  # type: ignore[no-untyped-call]
        body,
        exchange=message["exchange"],
        routing_key=message["routing_key"],
        content_type=names.CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=2 if message["persistent"] else 1,
        headers=message["headers"],
        reply_to=message["reply_to"],
        correlation_id=message["correlation_id"],
        expiration=message["expiration_s"],
        user_id=user_id,
        mandatory=message["mandatory"],
        retry=False,
    )
    assert connection.transport is not None
    return connection.transport.wire(), connection.bytes_sent


def by_frames(body: bytes, user_id: str | None, times: int = 1, **message: Any) -> tuple[bytes, int]:
    connection = Connection()
    frames = Frames(channel_on(connection), user_id)
    for _ in range(times):  # again: from what it keeps of the first
        frames.publish(outgoing(body, message), mandatory=message["mandatory"])
    assert connection.transport is not None
    return connection.transport.wire(), connection.bytes_sent


def outgoing(body: bytes, message: dict[str, Any]) -> Outgoing:
    """``message``'s fields (all but ``mandatory``, which is the sender's to decide) as an outbox entry."""
    return Outgoing(body, **{key: value for key, value in message.items() if key != "mandatory"})


EVENT: dict[str, Any] = {
    "exchange": names.EVENTS_EXCHANGE,
    "routing_key": "task.vdsm.created",
    "mandatory": True,
    "persistent": True,
    "headers": {},
    "correlation_id": None,
    "reply_to": None,
    "expiration_s": None,
}
REQUEST: dict[str, Any] = {
    "exchange": "",
    "routing_key": names.RPC_QUEUE,
    "mandatory": False,
    "persistent": False,
    "headers": {"x-bus-tasks-resent": True, "x-bus-tasks-deadline": 1765000000.25, "door": "stomp"},
    "correlation_id": "3f2a-c0ffee",
    "reply_to": "amq.rabbitmq.reply-to.g1h2AA==",
    "expiration_s": 30.0,
}


@pytest.mark.parametrize("user_id", [None, "agg1"])
@pytest.mark.parametrize("message", [EVENT, REQUEST], ids=["event", "request"])
@pytest.mark.parametrize("size", [0, 1, 300, FRAME_MAX - 8, FRAME_MAX - 7, 3 * FRAME_MAX + 5])
def test_the_bytes_are_kombus(message: dict[str, Any], user_id: str | None, size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    expected, writes = by_kombu(body, user_id, **message)
    assert by_frames(body, user_id, **message) == (expected, writes)


@pytest.mark.parametrize(
    "change",
    [
        {"persistent": False},
        {"headers": None},
        {"expiration_s": 0.25},
        {"reply_to": "bus_tasks.reply.x"},
        {"correlation_id": "only-this"},
        {"mandatory": False, "routing_key": "task.gluster.updated"},
    ],
)
def test_each_property_alone_is_kombus(change: dict[str, Any]) -> None:
    message = {**EVENT, **change}
    expected, _ = by_kombu(b'{"event":"created"}', "vdsm", **message)
    assert by_frames(b'{"event":"created"}', "vdsm", **message)[0] == expected


def test_what_it_keeps_of_one_message_does_not_leak_into_the_next() -> None:
    connection = Connection()
    frames = Frames(channel_on(connection), None)
    frames.publish(outgoing(b"one", REQUEST), mandatory=REQUEST["mandatory"])
    frames.publish(outgoing(b"two", EVENT), mandatory=EVENT["mandatory"])
    frames.publish(outgoing(b"three", {**EVENT, "persistent": False}), mandatory=True)
    frames.publish(outgoing(b"four", REQUEST), mandatory=REQUEST["mandatory"])
    assert connection.transport is not None
    expected = b"".join(
        by_kombu(body, None, **message)[0]
        for body, message in [
            (b"one", REQUEST),
            (b"two", EVENT),
            (b"three", {**EVENT, "persistent": False}),
            (b"four", REQUEST),
        ]
    )
    assert connection.transport.wire() == expected


def test_a_closed_channel_is_refused_as_py_amqp_refuses_it() -> None:
    connection = Connection()
    channel = channel_on(connection)
    frames = Frames(channel, None)
    channel.connection = None  # what py-amqp's close of a channel leaves
    with pytest.raises(RecoverableConnectionError):
        frames.publish(outgoing(b"late", EVENT), mandatory=EVENT["mandatory"])
    assert connection.transport is not None
    assert connection.transport.writes == []
