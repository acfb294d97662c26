"""Every parser of outside input answers any input with a result or its typed error (SPEC 18).

The targets are the fuzzer's (``tests/fuzz/targets.py``); here hypothesis feeds them raw bytes and
near-valid inputs (valid ones, then mutated), the laws that valid inputs obey are checked, and what
the fuzzer kept (its corpus, and the crashers of bugs since fixed) is replayed.
"""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fuzz.seeds import seeds
from fuzz.targets import (
    STOMP_MAX_HEADER_BYTES,
    TARGETS,
    TASK_ABORTING,
    TASK_FINISHED,
    TASK_RUNNING,
    config,
    events,
    gluster_xml,
    http_query,
    rpc_reply,
    rpc_request,
    stomp_frames,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.factories import event_wire, json_values
from support.gluster import Node, Task, migration_xml, tasks_xml

from bus_tasks import codec
from bus_tasks.config import Settings
from bus_tasks.core.model import decode_event, decode_heartbeat, decode_replica_beat
from bus_tasks.errors import EventRejected, InternalError, InvalidParameter, from_wire
from bus_tasks.frontdoors.http.answers import revision_of
from bus_tasks.frontdoors.stomp.frames import Frame, FrameError, FrameParser, encode
from bus_tasks.plugins.gluster.xml import parse_migration, parse_tasks
from bus_tasks.protocol import jsonrpc

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- near-valid inputs: a valid one, then a few edits ----------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """``valid``'s bytes after up to four edits: bytes inserted, removed or replaced, or a cut."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        if kind == "insert":
            data[at:at] = draw(
                st.binary(min_size=1, max_size=8) | st.sampled_from([b"\x00", b"\n", b"\r", b":"])
            )
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(data=st.binary(max_size=2048))
def test_any_bytes_get_a_result_or_the_typed_error(name: str, data: bytes) -> None:
    TARGETS[name](data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_the_real_samples_mutated_get_a_result_or_the_typed_error(name: str, data: st.DataObject) -> None:
    TARGETS[name](data.draw(mutated(st.sampled_from(seeds(name)))))


def _kept(kind: str) -> list[tuple[str, Path]]:
    return [(name, path) for name in sorted(TARGETS) for path in sorted((FUZZ_DIR / kind / name).glob("*"))]


@pytest.mark.parametrize("kind", ["corpus", "crashers"])
def test_every_input_the_fuzzer_kept_gets_a_result_or_the_typed_error(kind: str) -> None:
    kept = _kept(kind)
    if kind == "corpus":
        assert len(kept) >= len(TARGETS), "make fuzz keeps a corpus per target"
    for name, path in kept:
        try:
            TARGETS[name](path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{name} {path.relative_to(FUZZ_DIR)}") from exc


# -- STOMP frames ----------------------------------------------------------------------------------

_header_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_raw_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n:"), max_size=12)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    """A valid frame: escaped headers, or raw ones for CONNECT/CONNECTED; a body with NULs has a
    content-length."""
    command = draw(
        st.sampled_from(["SEND", "MESSAGE", "SUBSCRIBE", "ERROR", "RECEIPT", "CONNECT", "CONNECTED"])
    )
    raw = command in ("CONNECT", "CONNECTED")
    names = _raw_text.filter(bool) if raw else _header_text.filter(bool)
    headers = draw(st.dictionaries(names, _raw_text if raw else _header_text, max_size=4))
    headers.pop("content-length", None)
    body = draw(st.binary(max_size=64))
    if b"\x00" in body or draw(st.booleans()):
        headers["content-length"] = str(len(body))
    return Frame(command, headers, body)


@FUZZ
@given(sent=st.lists(frames(), max_size=4), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_frames_encoded_back_to_back_parse_back_however_the_bytes_are_cut(
    sent: list[Frame], cuts: list[int]
) -> None:
    data = b"\n".join(encode(frame) for frame in sent)
    parser, got, start = FrameParser(), [], 0
    for cut in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        got += parser.feed(data[start:cut])
        start = cut
    assert got == sent


@FUZZ
@given(data=mutated(st.lists(frames(), min_size=1, max_size=3).map(lambda fs: b"".join(map(encode, fs)))))
def test_valid_frames_mutated_get_frames_or_a_frame_error(data: bytes) -> None:
    stomp_frames(data)


@pytest.mark.parametrize("length", ["\u00b2", "\u0661", "1\u00b2", "9" * 5000, "0" * 5000 + "1"])
def test_a_content_length_that_is_not_a_small_ascii_number_is_a_frame_error(length: str) -> None:
    data = f"SEND\ncontent-length:{length}\n\n".encode() + b"x\x00"
    if length.lstrip("0") == "1":
        assert FrameParser().feed(data) == [Frame("SEND", {"content-length": length}, b"x")]
        return
    with pytest.raises(FrameError, match=r"content-length|over the limit"):
        FrameParser().feed(data)


def test_a_carriage_return_inside_a_header_line_is_a_frame_error() -> None:
    # Found by the fuzzer: "k:v\r\r\n" gave the value "v\r", which encodes to bytes that parse as "v".
    for data in (b"CONNECT\nheart-beat:0,0\r\r\n\n\x00", b"SEND\nk:a\rb\n\n\x00"):
        with pytest.raises(FrameError, match="carriage return"):
            FrameParser().feed(data)


@pytest.mark.parametrize("blank", [b"\n\n", b"\n\r\n"])
def test_a_head_of_exactly_the_limit_is_accepted_at_once_and_byte_by_byte(blank: bytes) -> None:
    head = b"SEND\nk:" + b"v" * (STOMP_MAX_HEADER_BYTES - len(b"SEND\nk:"))
    data = head + blank + b"\x00"
    expected = [Frame("SEND", {"k": "v" * (STOMP_MAX_HEADER_BYTES - 7)})]
    assert FrameParser(max_header_bytes=STOMP_MAX_HEADER_BYTES).feed(data) == expected
    parser = FrameParser(max_header_bytes=STOMP_MAX_HEADER_BYTES)
    assert [f for i in range(len(data)) for f in parser.feed(data[i : i + 1])] == expected
    with pytest.raises(FrameError, match="header over"):
        FrameParser(max_header_bytes=STOMP_MAX_HEADER_BYTES - 1).feed(data)


# -- JSON-RPC --------------------------------------------------------------------------------------

_ids = (
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
)
_task_ids = st.sampled_from(
    [TASK_RUNNING, TASK_FINISHED, TASK_ABORTING, TASK_RUNNING.upper(), "x"]
) | st.uuids().map(str)
_param_values = (
    _task_ids | json_values | st.lists(st.text(string.ascii_letters + ":", max_size=6), max_size=3)
)
_params = st.dictionaries(
    st.sampled_from(["taskID", "tags", "options", "spUUID", "force", "since"]) | st.text(max_size=6),
    _param_values,
    max_size=4,
) | st.lists(_param_values, max_size=3)
_methods = st.sampled_from(
    ["Host.getAllTasks", "getAllTasks", "Host.getAllTasksInfo", "Host.getAllTasksStatuses", "Task.getStatus",
     "Task.getInfo", "Task.getDetails", "Task.stop", "Task.clear", "Task.revert", "Task.retag",
     "Host.getSubsystems", "Host.getAggregators", "Host.getTaskChanges", "getTaskStatus", "stopTask"]
) | st.text(max_size=12)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> dict[str, object]:
    """A request as a caller might send it: mostly well-formed, members sometimes missing or odd."""
    request: dict[str, object] = {
        "jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0"]) | json_values)
    }
    request["method"] = draw(_methods | json_values) if draw(st.integers(0, 9)) == 0 else draw(_methods)
    if draw(st.booleans()):
        request["id"] = draw(_ids | json_values)
    if draw(st.integers(0, 4)):
        request["params"] = draw(_params | json_values)
    if draw(st.integers(0, 9)) == 0:
        request[draw(st.text(max_size=6))] = draw(json_values)
    return request


@FUZZ
@given(call=requests() | st.lists(requests(), max_size=10))
def test_any_request_or_batch_is_answered_by_responses_with_its_ids(call: object) -> None:
    rpc_request(codec.dumps(call))


@FUZZ
@given(request_id=_ids, method=_methods, params=_params)
def test_a_request_survives_encode_and_parse(
    request_id: object, method: str, params: dict[str, object] | list[object]
) -> None:
    body = jsonrpc.request_body(request_id, method, params)  # type: ignore[arg-type]
    assert jsonrpc.parse_request(body) == {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": params,
    }


@FUZZ
@given(
    request_id=_ids,
    result=json_values,
    code=st.sampled_from([401, 403, 410, 411, 1000, -32602, -32010, 4242]),
    message=st.text(),
)
def test_a_response_survives_encode_and_parse(
    request_id: object, result: object, code: int, message: str
) -> None:
    assert jsonrpc.outcome(jsonrpc.parse_response(jsonrpc.result_body(request_id, result))) == result  # type: ignore[arg-type]
    error = from_wire({"code": code, "message": message})
    with pytest.raises(type(error)) as raised:
        jsonrpc.outcome(jsonrpc.parse_response(jsonrpc.error_body(request_id, error)))  # type: ignore[arg-type]
    assert (raised.value.code, raised.value.message) == (code, message)


@pytest.mark.parametrize("request_id", [b"{}", b"[]", b"true"])
def test_a_reply_whose_id_is_not_a_string_a_number_or_null_is_an_internal_error(request_id: bytes) -> None:
    # Found by the fuzzer: the client's batch reading raised TypeError (an unhashable id).
    reply = b'{"jsonrpc":"2.0","id":' + request_id + b',"result":1}'
    with pytest.raises(InternalError, match="id"):
        jsonrpc.parse_response(reply)
    rpc_reply(b"[" + reply + b"]")  # the batch's reading: InternalError too, nothing else


# -- events ----------------------------------------------------------------------------------------


@st.composite
def edited_events(draw: st.DrawFn) -> bytes:
    """A valid event with a few of its members (or its record's) replaced, removed or added."""
    wire = event_wire()
    record = wire["task"]
    for _ in range(draw(st.integers(0, 3))):
        target = record if draw(st.booleans()) else wire
        key = draw(st.sampled_from(sorted(k for k in target if k != "task")) | st.text(max_size=6))
        if key == "task":
            continue  # the record is edited in place, not replaced
        if draw(st.integers(0, 3)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(
                json_values | _task_ids | st.sampled_from(["", "failed", "cleared", 2**63, -1, 1e308])
            )
    return codec.dumps(wire)


@FUZZ
@given(body=edited_events() | mutated(edited_events()))
def test_an_edited_event_is_applied_or_rejected(body: bytes) -> None:
    events(body)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b'[1.5, {"a": -1e309}]'])
@pytest.mark.parametrize("member", ["result", "data"])
def test_an_event_holding_a_number_json_does_not_have_is_rejected(member: str, number: bytes) -> None:
    # Found by the round-trip law: these were applied, and the view listed null in their place.
    body = codec.dumps(event_wire(**{member: {"x": "here"}})).replace(b'"here"', number)
    with pytest.raises(EventRejected):
        decode_event(body, max_bytes=1 << 20)


@pytest.mark.parametrize("number", [b"9223372036854775808", b"-9223372036854775809", b"6" + b"8" * 74])
@pytest.mark.parametrize("member", ["result", "data", "code"])
def test_an_event_holding_an_integer_past_64_bits_is_rejected(member: str, number: bytes) -> None:
    # Found by the fuzzer (10 minutes, events): 6888...8 (75 digits) deep in a record's data was
    # applied, and every listing holding the task failed after ("Integer exceeds 64-bit range").
    value, placeholder = (4242424242, b"4242424242") if member == "code" else ({"x": ["here"]}, b'"here"')
    body = codec.dumps(event_wire(**{member: value})).replace(placeholder, number)
    with pytest.raises(EventRejected):
        decode_event(body, max_bytes=1 << 20)
    edge = b"-9223372036854775808" if number.startswith(b"-") else b"9223372036854775807"
    decoded = decode_event(body.replace(number, edge), max_bytes=1 << 20)  # the widest that fits
    assert decode_event(codec.dumps(decoded.to_wire()), max_bytes=1 << 20) == decoded


@pytest.mark.parametrize(
    ("event", "member"),
    [("aggregator", "tasks"), ("aggregator", "revision"), ("heartbeat", "tasks"), ("heartbeat", "pid")],
)
def test_a_beat_with_a_count_past_64_bits_is_rejected(event: str, member: str) -> None:
    # Found by the fuzzer: tasks = 10**51 was accepted, and could never be encoded again.
    beat = next(b for b in map(codec.loads, seeds("events")) if b["event"] == event)
    decode = decode_replica_beat if event == "aggregator" else decode_heartbeat
    decode(codec.dumps({**beat, member: 2**63 - 1}))
    with pytest.raises(EventRejected, match=member):
        decode(codec.dumps({**beat, member: 2**63}))


# -- gluster XML -----------------------------------------------------------------------------------

_words = (
    st.text(string.ascii_letters + string.digits + " -/:", min_size=1, max_size=12)
    .map(str.strip)
    .filter(bool)
)
_listed = st.builds(Task, volume=_words, kind=st.sampled_from(["Rebalance", "Remove brick", "Replace brick"]),
                    task_id=st.uuids().map(str), status_str=_words, status=st.integers(-5, 9),
                    bricks=st.lists(_words, max_size=3).map(tuple))  # fmt: skip


@FUZZ
@given(tasks=st.lists(_listed, max_size=4))
def test_a_tasks_listing_parses_to_the_tasks_it_lists(tasks: list[Task]) -> None:
    parsed = parse_tasks(tasks_xml(tasks))
    assert [(t.volume, t.kind, t.task_id, t.status, t.status_str, t.bricks) for t in parsed] == [
        (t.volume, t.kind, t.task_id, t.status, t.status_str, t.bricks)
        for volume in dict.fromkeys(t.volume for t in tasks)
        for t in tasks
        if t.volume == volume
    ]


_nodes = st.builds(Node, name=_words, files=st.integers(0, 2**62), size=st.integers(0, 2**62), lookups=st.integers(0, 9),
                   runtime=st.floats(0, 1e9).map(repr), status_str=_words)  # fmt: skip


@FUZZ
@given(nodes=st.lists(_nodes, max_size=3), aggregate=_nodes, task_id=st.none() | st.uuids().map(str))
def test_a_migration_status_parses_to_its_counters(
    nodes: list[Node], aggregate: Node, task_id: str | None
) -> None:
    status = parse_migration(migration_xml("volRebalance", task_id, nodes, aggregate))
    assert status.task_id == task_id
    assert [(n.name, n.counters.files_moved, n.counters.runtime_s) for n in status.nodes] == [
        (n.name, n.files, float(n.runtime)) for n in nodes
    ]
    assert status.aggregate.total_size_moved == aggregate.size


@FUZZ
@given(data=mutated(st.lists(_listed, max_size=3).map(lambda ts: tasks_xml(ts).encode())))
def test_a_tasks_listing_mutated_parses_or_is_an_output_error(data: bytes) -> None:
    gluster_xml(data)


# -- the config file and the environment ----------------------------------------------------------

_toml_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.floats().map(lambda f: repr(f).replace("inf", "inf")),
    st.booleans().map(lambda b: "true" if b else "false"), st.text(max_size=20).map(lambda s: codec.dumps(s).decode()),
    st.sampled_from(['"memory://"', '"redis://h:1/0"', '"amqp://u:p@h:99999/"', "[1, [2]]", "{a = 1}", "1979-05-27"]),
)  # fmt: skip
_setting_names = st.sampled_from(sorted(Settings.model_fields)) | st.text(
    string.ascii_lowercase + "_", min_size=1, max_size=8
)


@FUZZ
@given(
    lines=st.lists(st.tuples(_setting_names, _toml_values), max_size=6),
    env=st.lists(st.tuples(_setting_names, _toml_values), max_size=3),
)
def test_a_config_file_and_environment_give_settings_or_a_config_error(
    lines: list[tuple[str, str]], env: list[tuple[str, str]]
) -> None:
    text = "".join(f"{name} = {value}\n" for name, value in lines)
    variables = "\n".join(f"{name}={value.strip(chr(34))}" for name, value in env)
    config(f"{text}\0{variables}".encode())


@pytest.mark.parametrize(
    "text",
    [b"store = 'none'\xff\n", b"x = " + b"[" * 5000 + b"]" * 5000, b"prefetch_count = " + b"9" * 5000],
    ids=["not-utf-8", "nested-too-deeply", "a-number-of-5000-digits"],
)
def test_a_config_file_tomllib_cannot_read_is_a_config_error(text: bytes) -> None:
    config(text)  # ConfigError is the contract; any other exception fails here


@pytest.mark.parametrize("variable", [b"ADMINS=alice", b"READERS=", b"PUBLISHERS=vdsm"])
def test_a_list_or_table_setting_in_the_environment_that_is_not_json_is_a_config_error(
    variable: bytes,
) -> None:
    # Found by the property above: pydantic-settings' SettingsError came out of load_settings.
    config(b"\0" + variable)


# -- HTTP query parameters -------------------------------------------------------------------------

_tags = st.text(string.ascii_letters + string.digits + "_.:/-", min_size=1, max_size=64)


@FUZZ
@given(pairs=st.lists(st.tuples(st.sampled_from(["tag", "tag", "match", "since", "limit", "continue"]) | st.text(max_size=5), _tags | st.text(max_size=8)), max_size=6),
       header=st.text(string.digits, max_size=25) | st.text(max_size=8))  # fmt: skip
def test_any_query_gets_a_selection_or_invalid_parameter(pairs: list[tuple[str, str]], header: str) -> None:
    http_query(urlencode(pairs).encode() + b"\n" + header.encode())


@pytest.mark.parametrize("text", ["9" * 5000, "9" * 20, str(2**63), "\u0661"])
def test_a_revision_that_is_not_a_64_bit_number_is_invalid_parameter(text: str) -> None:
    with pytest.raises(InvalidParameter):
        revision_of(text, "since")


def test_a_revision_of_up_to_63_bits_is_read_leading_zeros_and_all() -> None:
    assert revision_of("000" + str(2**63 - 1), "since") == 2**63 - 1
    assert revision_of("0", "Last-Event-ID") == 0
