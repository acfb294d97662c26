"""Frames read in chunks reach py-amqp's frame handler whole and in order, however the bytes
were cut; what is left of a frame stays for py-amqp's next read; a broken stream says so."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import amqp
import pytest
from amqp.exceptions import UnexpectedFrame
from amqp.method_framing import frame_handler
from amqp.serialization import dumps
from support.deliveries import delivery_fields

from bus_tasks.transport import Delivery
from bus_tasks.transport.kombu.consumers import DirectReceiver
from bus_tasks.transport.kombu.frames import FRAME_END, read_ready

Frame = tuple[int, int, bytes]


def wire(frame_type: int, channel: int, payload: bytes, end: int = FRAME_END) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


class Socket:
    """Non-blocking: gives its chunks one read at a time, then has nothing yet (or is closed)."""

    def __init__(self, chunks: list[bytes], *, closed: bool = False) -> None:
        self.chunks = list(chunks)
        self.closed = closed
        self.timeout: float | None = 5.0  # py-amqp's, blocking with a time-out

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def recv(self, size: int) -> bytes:
        assert self.timeout == 0, "read while blocking"
        if self.chunks:
            return self.chunks.pop(0)[:size]
        if self.closed:
            return b""
        raise BlockingIOError


class Transport:
    def __init__(self, sock: Socket, read_buffer: bytes) -> None:
        self.sock = sock
        self._read_buffer = read_buffer
        self.connected = True


class Connection:
    """What read_ready uses of py-amqp's connection: its transport and its frame handler."""

    def __init__(self, chunks: list[bytes], *, read_buffer: bytes = b"", closed: bool = False) -> None:
        self.transport = Transport(Socket(chunks, closed=closed), read_buffer)
        self.frames: list[Frame] = []
        self.channels: dict[int, Any] = {}  # none: every delivery goes to the frame handler

    def on_inbound_frame(self, frame: Frame) -> Any:
        self.frames.append(frame)
        return frame[0] == 3


FRAMES: list[Frame] = [(1, 1, b"\x00<\x00<deliver"), (2, 1, b"header"), (3, 1, b'{"schema":1}'), (8, 0, b"")]
STREAM = b"".join(wire(*frame) for frame in FRAMES)


@pytest.mark.parametrize("cut", [1, 2, 7, 8, 13, len(STREAM)])
def test_every_frame_reaches_the_handler_in_order_however_the_reads_cut_the_bytes(cut: int) -> None:
    chunks = [STREAM[i : i + cut] for i in range(0, len(STREAM), cut)]
    connection = Connection(chunks)

    read_ready(connection, lambda: True)

    assert connection.frames == FRAMES
    assert connection.transport._read_buffer == b""


def test_what_py_amqp_held_already_comes_first_and_an_incomplete_frame_is_left_for_its_next_read() -> None:
    body_cut_at = len(STREAM) - len(wire(*FRAMES[3])) - 3  # the body frame lacks its last 3 bytes
    connection = Connection([STREAM[10:body_cut_at]], read_buffer=STREAM[:10])

    read_ready(connection, lambda: True)

    assert connection.frames == FRAMES[:2]
    assert connection.transport._read_buffer == wire(*FRAMES[2])[:-3]


def test_reading_stops_when_no_more_is_wanted_and_leaves_the_rest_for_later() -> None:
    connection = Connection([STREAM + STREAM])

    read_ready(connection, lambda: len(connection.frames) < 3)

    assert connection.frames == FRAMES[:3]
    assert connection.transport._read_buffer == wire(*FRAMES[3]) + STREAM


def test_no_more_is_asked_right_after_a_method_frame_only_after_the_frames_that_may_end_a_delivery() -> None:
    connection = Connection([STREAM + STREAM])
    asked_after: list[int] = []  # how many frames were in each time

    def more() -> bool:
        asked_after.append(len(connection.frames))
        return len(connection.frames) < 1

    read_ready(connection, more)

    # Before and after the read, then not after the method frame: the header comes in first.
    assert asked_after == [0, 0, 2]
    assert connection.frames == FRAMES[:2]
    assert (
        connection.transport._read_buffer == STREAM[len(wire(*FRAMES[0])) + len(wire(*FRAMES[1])) :] + STREAM
    )


def test_more_is_asked_after_every_frame_but_a_method_frame_and_before_every_read() -> None:
    connection = Connection([STREAM, STREAM])
    asked_after: list[int] = []

    def more() -> bool:
        asked_after.append(len(connection.frames))
        return True

    read_ready(connection, more)

    assert connection.frames == FRAMES + FRAMES
    # before and after the first read; after header, body, heart-beat; after the second read ...
    assert asked_after == [0, 0, 2, 3, 4, 4, 6, 7, 8]


def test_a_frame_without_its_end_octet_is_unexpected() -> None:
    connection = Connection([wire(*FRAMES[0]), wire(*FRAMES[1], end=0)])

    with pytest.raises(UnexpectedFrame, match="frame_end 0x00"):
        read_ready(connection, lambda: True)

    assert connection.frames == FRAMES[:1]


def test_a_connection_the_broker_closed_is_an_error_and_marked_disconnected() -> None:
    connection = Connection([STREAM[:9]], closed=True)

    with pytest.raises(OSError, match="Server unexpectedly closed connection"):
        read_ready(connection, lambda: True)

    assert connection.transport.connected is False
    assert connection.transport._read_buffer == STREAM[:9]  # as py-amqp keeps it


def test_a_frame_handled_with_an_error_is_taken_all_the_same() -> None:
    connection = Connection([STREAM])

    def closing(frame: Frame) -> Any:
        raise ConnectionAbortedError("the broker closed the channel")

    connection.on_inbound_frame = closing  # type: ignore[method-assign]
    with pytest.raises(ConnectionAbortedError):
        read_ready(connection, lambda: True)

    assert connection.transport._read_buffer == STREAM[len(wire(*FRAMES[0])) :]


@pytest.mark.parametrize("closed", [False, True])
def test_the_socket_reads_without_blocking_and_gets_its_time_out_back_after(closed: bool) -> None:
    connection = Connection([STREAM], closed=closed)

    if closed:
        with pytest.raises(OSError, match="closed"):
            read_ready(connection, lambda: True)
    else:
        read_ready(connection, lambda: True)

    assert connection.frames == FRAMES
    assert connection.transport.sock.timeout == 5.0


CHANNEL_CLOSE: Frame = (1, 1, b"\x00\x14\x00\x28" + dumps("BsBB", (406, "PRECONDITION_FAILED", 60, 40)))
OPEN_OK: Frame = (1, 1, b"\x00\x14\x00\x0b" + dumps("s", ("",)))


AFTER_CLOSE = len(wire(*FRAMES[3])) + len(wire(*CHANNEL_CLOSE))


@pytest.mark.parametrize("cut", [AFTER_CLOSE - 1, AFTER_CLOSE + 3, AFTER_CLOSE + 100])
def test_a_close_is_handed_over_with_the_socket_blocking_and_the_rest_in_py_amqps_buffer(cut: int) -> None:
    # py-amqp answers a channel.close by opening the channel again and waiting for the broker's
    # open-ok with its own blocking reads: from its buffer first, then from the socket.
    stream = wire(*FRAMES[3]) + wire(*CHANNEL_CLOSE) + wire(*OPEN_OK) + STREAM
    read = cut if cut >= AFTER_CLOSE else len(stream)  # the close cut in two: both chunks read
    connection = Connection([stream[:cut], stream[cut:]])
    transport = connection.transport
    seen: list[tuple[float | None, bytes]] = []

    def handler(frame: Frame) -> Any:
        connection.frames.append(frame)
        if frame == CHANNEL_CLOSE:
            seen.append((transport.sock.timeout, transport._read_buffer))
            transport._read_buffer = transport._read_buffer[len(wire(*OPEN_OK)) :]  # its read of open-ok
            raise amqp.PreconditionFailed("PRECONDITION_FAILED", (60, 40), 406)
        return False

    connection.on_inbound_frame = handler  # type: ignore[method-assign]
    with pytest.raises(amqp.PreconditionFailed):
        read_ready(connection, lambda: True)

    assert connection.frames == [FRAMES[3], CHANNEL_CLOSE]
    timeout, held = seen[0]
    assert timeout == 5.0
    assert held == stream[AFTER_CLOSE:read]  # what was read past the close, and no more
    assert transport._read_buffer == stream[AFTER_CLOSE + len(wire(*OPEN_OK)) : read]  # as it left it
    assert transport.sock.timeout == 5.0


# -- deliveries taken whole -----------------------------------------------------------------------


class AckingChannel(amqp.Channel):  # type: ignore[misc]
    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.acks.append((delivery_tag, multiple))


def py_amqp_connection(chunks: list[bytes]) -> Any:
    """A py-amqp connection, not connected, reading ``chunks``, with channel 1 (and 2) open."""
    connection = amqp.Connection(host="localhost:1")
    connection._transport = Transport(Socket(chunks), b"")
    connection.on_inbound_frame = frame_handler(connection, connection.on_inbound_method)
    for channel_id in (1, 2):
        channel = AckingChannel(connection, channel_id=channel_id, auto_decode=False)
        channel.acks = []
        connection.channels[channel_id] = channel
    return connection


def deliver(
    body: bytes,
    tag: int,
    *,
    channel: int = 1,
    consumer_tag: str = "ctag",
    frame_max: int = 4096,
    **properties: Any,
) -> bytes:
    """A basic.deliver as the broker sends it: method, content header, body in frames of at most ``frame_max``."""
    arguments = dumps("sLbss", [consumer_tag, tag, False, "bus_tasks.events", "task.bench.créé"])
    method = struct.pack(">HH", 60, 60) + arguments
    header = struct.pack(">HHQ", 60, 0, len(body)) + amqp.Message(body, **properties)._serialize_properties()
    parts = [body[i : i + frame_max] for i in range(0, len(body), frame_max)]
    return wire(1, channel, method) + wire(2, channel, header) + b"".join(wire(3, channel, p) for p in parts)


PROPERTIES: dict[str, Any] = {
    "content_type": "application/json",
    "delivery_mode": 2,
    "user_id": "bench",
    "application_headers": {"x-stream-offset": 7, "a": [1, "b"]},
}
DELIVERIES = [
    deliver(b'{"n":1}', 1, **PROPERTIES),
    deliver(b"", 2, reply_to="bus_tasks.reply.x", correlation_id="c-2", expiration="5000"),  # no body frame
    deliver(b"x" * 10_000, 3, **PROPERTIES),  # three body frames
    wire(8, 0, b""),  # a heart-beat between deliveries
    deliver(b'{"n":4}', 4, channel=2, **PROPERTIES),  # another channel
    deliver(b'{"n":5}', 5, consumer_tag="kombus", **PROPERTIES),  # a consumer without a Receiver
    deliver(b'{"n":6}', 6, application_headers={"compression": "application/x-gzip"}),  # for kombu
    deliver(b'{"n":7}', 7, **PROPERTIES),
]
DELIVERY_STREAM = b"".join(DELIVERIES)


@dataclass
class Read:
    delivered: list[Delivery]  # by the Receivers, either way
    to_kombu: list[Any]  # messages the Receivers gave to kombu
    others: list[Any]  # messages of a consumer without a Receiver
    in_parts: list[tuple[int, int]]  # (channel, delivery tag) of those taken in parts


def read_all(connection: Any, *, take: bool) -> Read:
    """Read every delivery; with ``take``, the channels' Receivers take those they can."""
    delivered: list[Delivery] = []
    to_kombu: list[Any] = []
    in_parts: list[tuple[int, int]] = []  # (channel, delivery tag) of those taken in parts
    others: list[Any] = []

    class Recording(DirectReceiver):
        __slots__ = ()

        def deliver(
            self, body: bytes, routing_key: str, properties: dict[str, Any], channel: Any, tag: int
        ) -> bool:
            taken = take and super().deliver(body, routing_key, properties, channel, tag)
            if taken:
                in_parts.append((channel.channel_id, tag))
            return taken

    for channel in (connection.channels[1], connection.channels[2]):
        channel.callbacks["ctag"] = Recording(
            delivered.append, lambda: False, no_ack=False, kombus_own=to_kombu.append
        )
        channel.callbacks["kombus"] = others.append
    while connection.transport.sock.chunks or len(connection.transport._read_buffer) >= 7:
        read_ready(connection, lambda: True)
        if connection.transport._read_buffer and not connection.transport.sock.chunks:
            break
    return Read(delivered, to_kombu, others, in_parts)


@pytest.mark.parametrize("cut", [len(DELIVERY_STREAM), 16384, 1000, 97, 5])
def test_a_delivery_taken_whole_is_the_delivery_py_amqp_hands_over(cut: int) -> None:
    chunks = [DELIVERY_STREAM[i : i + cut] for i in range(0, len(DELIVERY_STREAM), cut)]
    py_amqps = py_amqp_connection(list(chunks))
    ours = py_amqp_connection(list(chunks))

    expected = read_all(py_amqps, take=False)
    read = read_all(ours, take=True)

    assert expected.in_parts == []
    assert [delivery_fields(d) for d in read.delivered] == [delivery_fields(d) for d in expected.delivered]
    assert [d.body[:7] for d in read.delivered] == [b'{"n":1}', b"", b"x" * 7, b'{"n":4}', b'{"n":7}']
    assert [m.body for m in read.to_kombu] == [m.body for m in expected.to_kombu] == [b'{"n":6}']
    assert [m.body for m in read.others] == [m.body for m in expected.others] == [b'{"n":5}']
    assert ours.bytes_recv == py_amqps.bytes_recv == 23  # every frame counted for the heart-beats
    if cut == len(DELIVERY_STREAM):  # all whole in one read: every Receiver's delivery but kombu's
        assert read.in_parts == [(1, 1), (1, 2), (1, 3), (2, 4), (1, 7)]
    for delivery in read.delivered:
        delivery.ack(multiple=True)
    assert ours.channels[1].acks == [(1, True), (2, True), (3, True), (7, True)]
    assert ours.channels[2].acks == [(4, True)]


def test_a_delivery_cut_by_the_read_is_left_to_py_amqp_which_completes_it_from_what_follows() -> None:
    whole, cut_short = DELIVERIES[0], DELIVERIES[7]
    ours = py_amqp_connection([whole + cut_short[:-3], cut_short[-3:]])

    read = read_all(ours, take=True)

    assert [d.body for d in read.delivered] == [b'{"n":1}', b'{"n":7}']
    assert read.in_parts == [(1, 1)]  # the second went through py-amqp's Message


@pytest.mark.parametrize("state", ["closing", "waited on", "decoding"])
def test_a_channel_py_amqp_treats_otherwise_gets_its_deliveries_through_py_amqp(state: str) -> None:
    ours = py_amqp_connection([DELIVERIES[0]])
    channel = ours.channels[1]
    if state == "closing":
        channel.is_closing = True
    elif state == "waited on":
        channel._pending[(60, 60)] = None
    else:
        channel.auto_decode = True

    read = read_all(ours, take=True)

    assert read.in_parts == []
    assert [d.body for d in read.delivered] == ([] if state == "closing" else [b'{"n":1}'])


def test_a_delivery_whose_receiver_fails_is_taken_all_the_same_as_py_amqp_takes_a_frame() -> None:
    ours = py_amqp_connection([DELIVERIES[0] + DELIVERIES[7]])

    def failing(delivery: Delivery) -> None:
        raise RuntimeError("the handler failed")

    ours.channels[1].callbacks["ctag"] = DirectReceiver(
        failing, lambda: False, no_ack=False, kombus_own=print
    )
    with pytest.raises(RuntimeError, match="the handler failed"):
        read_ready(ours, lambda: True)

    assert ours.transport._read_buffer == DELIVERIES[7]
    assert ours.bytes_recv == 3
