"""Frames read in chunks reach py-amqp's frame handler whole and in order, however the bytes
were cut; what is left of a frame stays for py-amqp's next read; a broken stream says so."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from amqp.exceptions import UnexpectedFrame

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
