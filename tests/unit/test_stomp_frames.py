"""STOMP 1.2 frames: the incremental parser and the encoder (pure, no sockets)."""

from __future__ import annotations

import pytest

from bus_tasks import codec
from bus_tasks.frontdoors.stomp.frames import Frame, FrameError, FrameParser, encode, message
from bus_tasks.frontdoors.stomp.server import error_reply, negotiate_heartbeat, timeout_reply, too_many

VDSM_CONNECT = b"CONNECT\naccept-version:1.2\nheart-beat:0,24000\n\n\x00"
VDSM_SUBSCRIBE = b"SUBSCRIBE\ndestination:d1\nack:auto\nid:s1\n\n\x00"
BODY = b'[{"jsonrpc":"2.0","method":"Host.getAllTasksStatuses","params":{},"id":"1"}]'
VDSM_SEND = (
    b"SEND\ndestination:jms.topic.vdsm_requests\ncontent-type:application/json\nreply-to:d1\n"
    + f"content-length:{len(BODY)}\n\n".encode()
    + BODY
    + b"\x00"
)
STREAM = VDSM_CONNECT + VDSM_SUBSCRIBE + b"\n\n\r\n" + VDSM_SEND + b"\n"
EXPECTED = [
    Frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,24000"}),
    Frame("SUBSCRIBE", {"destination": "d1", "ack": "auto", "id": "s1"}),
    Frame(
        "SEND",
        {
            "destination": "jms.topic.vdsm_requests",
            "content-type": "application/json",
            "reply-to": "d1",
            "content-length": str(len(BODY)),
        },
        BODY,
    ),
]


def test_vdsm_frames_back_to_back_with_heart_beats_between_parse_in_one_feed() -> None:
    assert FrameParser().feed(STREAM) == EXPECTED


def test_crlf_line_endings_parse_like_lf() -> None:
    crlf = b"SEND\r\ndestination:jms.topic.vdsm_requests\r\nreply-to:d1\r\n\r\n{}\x00"
    assert FrameParser().feed(crlf) == [
        Frame("SEND", {"destination": "jms.topic.vdsm_requests", "reply-to": "d1"}, b"{}")
    ]


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_a_stream_split_at_any_byte_gives_the_same_frames(cut: int) -> None:
    parser = FrameParser()
    assert parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:]) == EXPECTED


def test_a_stream_fed_one_byte_at_a_time_gives_the_same_frames() -> None:
    parser = FrameParser()
    frames = [frame for i in range(len(STREAM)) for frame in parser.feed(STREAM[i : i + 1])]
    assert frames == EXPECTED


def test_content_length_keeps_nuls_inside_the_body() -> None:
    data = b"MESSAGE\ncontent-length:5\n\na\x00b\x00c\x00"
    assert FrameParser().feed(data) == [Frame("MESSAGE", {"content-length": "5"}, b"a\x00b\x00c")]


def test_without_content_length_the_body_ends_at_the_first_nul() -> None:
    assert FrameParser().feed(b"SEND\n\nab\x00cd") == [Frame("SEND", {}, b"ab")]


def test_header_escapes_decode_and_encode_both_ways() -> None:
    frame = Frame("MESSAGE", {"a:b": "line1\nline2\r\\end:"}, b"x")
    data = encode(frame)
    assert b"a\\cb:line1\\nline2\\r\\\\end\\c\n" in data
    assert FrameParser().feed(data) == [frame]


def test_connect_and_connected_headers_are_not_escaped() -> None:
    assert FrameParser().feed(b"CONNECT\nlogin:a\\cb\n\n\x00") == [Frame("CONNECT", {"login": "a\\cb"})]
    assert (
        encode(Frame("CONNECTED", {"version": "1.2", "x": "a:b"})) == b"CONNECTED\nversion:1.2\nx:a:b\n\n\x00"
    )


def test_the_first_of_repeated_headers_wins() -> None:
    assert FrameParser().feed(b"SEND\nk:1\nk:2\n\n\x00") == [Frame("SEND", {"k": "1"})]


def test_encoded_frames_round_trip_with_content_length() -> None:
    frame = Frame("MESSAGE", {"destination": "d", "content-length": "3"}, b"a\x00b")
    assert FrameParser().feed(encode(frame) + encode(frame)) == [frame, frame]


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"SEND\x00", "before its headers"),
        (b"send\n\n\x00", "bad command line"),
        (b"SEND\nno colon\n\n\x00", "bad header line"),
        (b"SEND\n:value\n\n\x00", "bad header line"),
        (b"SEND\nk:bad\\x\n\n\x00", "undefined escape"),
        (b"SEND\ncontent-length:2\n\nabc\x00", "no NUL"),
        (b"SEND\ncontent-length:x\n\n\x00", "bad content-length"),
        (b"SEND\n\xff:1\n\n\x00", "not UTF-8"),
    ],
)
def test_malformed_frames_raise_a_clear_error(data: bytes, complaint: str) -> None:
    with pytest.raises(FrameError, match=complaint):
        FrameParser().feed(data)


def test_a_header_over_the_limit_raises_before_it_ends() -> None:
    parser = FrameParser(max_header_bytes=100)
    with pytest.raises(FrameError, match="header over 100 bytes"):
        parser.feed(b"SEND\nk:" + b"v" * 200)


def test_a_body_over_the_limit_raises_by_content_length_and_without_it() -> None:
    with pytest.raises(FrameError, match="over the limit"):
        FrameParser(max_body_bytes=10).feed(b"SEND\ncontent-length:11\n\n")
    with pytest.raises(FrameError, match="over the limit"):
        FrameParser(max_body_bytes=10).feed(b"SEND\n\n" + b"x" * 11)


def test_an_incomplete_frame_waits_for_more_bytes() -> None:
    parser = FrameParser()
    assert parser.feed(b"SEND\ncontent-length:3\n\nab") == []
    assert parser.feed(b"c\x00") == [Frame("SEND", {"content-length": "3"}, b"abc")]


@pytest.mark.parametrize(
    ("client", "server"),
    [
        ("0,24000", (24000, 0)),
        ("5000,10", (1000, 5000)),
        ("0,0", (0, 0)),
        (None, (0, 0)),
        ("10000,0", (0, 10000)),
        ("10,0", (0, 1000)),
    ],
)
def test_server_heart_beats_follow_what_the_client_wants_to_receive_and_offers_to_send(
    client: str | None, server: tuple[int, int]
) -> None:
    assert negotiate_heartbeat(client) == server


def test_a_timed_out_batch_gets_a_general_exception_for_each_id_but_notifications() -> None:
    request = codec.dumps(
        [
            {"jsonrpc": "2.0", "method": "Host.getAllTasks", "id": 1},
            {"jsonrpc": "2.0", "method": "Host.getAllTasks"},
        ]
    )
    assert codec.loads(timeout_reply(request, 2.0)) == [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": 100, "message": "General Exception: no reply to Host.getAllTasks within 2s"},
        }
    ]


def test_an_excess_request_gets_too_many_requests_for_each_id() -> None:
    request = codec.dumps([{"jsonrpc": "2.0", "method": "Task.stop", "id": "a"}])
    assert codec.loads(error_reply(request, lambda method: too_many(method, 2))) == [
        {
            "jsonrpc": "2.0",
            "id": "a",
            "error": {
                "code": -32013,
                "message": "Too many requests in flight: Task.stop not sent, at most 2 per connection",
            },
        }
    ]


def test_frames_before_a_malformed_one_come_out_in_order_before_its_error() -> None:
    frames = FrameParser().frames(VDSM_CONNECT + VDSM_SUBSCRIBE + VDSM_SEND + b"HELLO THERE\n\n\x00")
    assert [next(frames), next(frames), next(frames)] == EXPECTED
    with pytest.raises(FrameError, match="bad command line"):
        next(frames)


@pytest.mark.parametrize("destination", ["d1", "a:b\\c\nd\re"])
def test_message_builds_the_bytes_encode_makes_of_the_same_message_frame(destination: str) -> None:
    headers = {
        "destination": destination,
        "subscription": "s:1",
        "message-id": "m-7",
        "content-type": "application/json",
        "content-length": str(len(BODY)),
    }
    built = message(destination, "s:1", "m-7", BODY)
    assert built == encode(Frame("MESSAGE", headers, BODY))
    assert FrameParser().feed(built) == [Frame("MESSAGE", headers, BODY)]


def test_the_parser_takes_a_view_of_a_reused_read_buffer() -> None:
    buffer = bytearray(len(STREAM))
    parser = FrameParser()
    frames = []
    for start in range(0, len(STREAM), 7):
        chunk = STREAM[start : start + 7]
        buffer[: len(chunk)] = chunk
        frames += parser.feed(memoryview(buffer)[: len(chunk)])
    assert frames == EXPECTED
