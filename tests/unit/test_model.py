"""The task record, its states and the deprecated pair, and event decoding (SPEC sections 3 and 4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from pydantic import ValidationError
from support.factories import event_wire, make_event, make_record, record_wire, records, task_id
from support.spec import SPEC_LEGACY_STATE

from bus_tasks import codec
from bus_tasks.core.model import (
    DONE_STATES,
    INT64_MAX,
    LEGACY_STATE,
    MAX_TAGS,
    Event,
    State,
    TaskRecord,
    canonical_task_id,
    check_encodable,
    check_tag,
    decode_event,
)
from bus_tasks.errors import EventRejected
from bus_tasks.protocol import shapes

MAX_BYTES = 1 << 16


def decode(wire: Any) -> Event:
    return decode_event(orjson.dumps(wire), max_bytes=MAX_BYTES)


def rejection(body: bytes, max_bytes: int = MAX_BYTES) -> str:
    with pytest.raises(EventRejected) as caught:
        decode_event(body, max_bytes=max_bytes)
    return caught.value.reason


# -- states ------------------------------------------------------------------------------


def test_every_internal_state_maps_to_the_spec_pair() -> None:
    assert {state.value: pair for state, pair in LEGACY_STATE.items()} == SPEC_LEGACY_STATE


def test_internal_states_are_exactly_vdsms_list() -> None:
    assert [s.value for s in State] == [
        "unknown",
        "init",
        "preparing",
        "blocked",
        "acquiring",
        "queued",
        "running",
        "finished",
        "aborting",
        "waitrecover",
        "recovering",
        "racquiring",
        "raborting",
        "recovered",
        "failed",
    ]


def test_task_result_is_non_empty_exactly_when_task_state_is_finished() -> None:
    for state, (task_state, task_result) in LEGACY_STATE.items():
        assert (task_result != "") == (task_state == "finished"), state


def test_record_legacy_state_is_the_table_pair_for_every_state() -> None:
    pairs = {state.value: make_record(state=state).legacy_state for state in State}
    assert pairs == SPEC_LEGACY_STATE


def test_done_states_are_finished_recovered_and_failed() -> None:
    assert {s.value for s in DONE_STATES} == {"finished", "recovered", "failed"}
    assert {s.value for s in State if s.is_done} == {"finished", "recovered", "failed"}


def test_aborting_states_are_aborting_and_raborting() -> None:
    assert {s.value for s in State if s.is_aborting} == {"aborting", "raborting"}


# -- task ids ----------------------------------------------------------------------------


def test_canonical_task_id_lower_cases_an_upper_case_uuid() -> None:
    assert canonical_task_id("6F1C2D3E-AAAA-4BBB-8CCC-0123456789AB") == "6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab"


def test_record_with_an_upper_case_id_is_stored_lower_case() -> None:
    record = make_record(id="6F1C2D3E-AAAA-4BBB-8CCC-0123456789AB")
    assert record.id == "6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab"


@pytest.mark.parametrize(
    "value",
    [
        "{6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab}",
        "urn:uuid:6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab",
        "6f1c2d3eaaaa4bbb8ccc0123456789ab",
        "6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab\n",
        " 6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab",
        "6f1c2d3e-aaaa-4bbb-8ccc-0123456789ag",
        "x",
        "",
        5,
        None,
    ],
)
def test_a_task_id_that_is_not_a_canonical_uuid_string_is_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="task id"):
        canonical_task_id(value)


@pytest.mark.parametrize(
    "value",
    ["{6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab}", "urn:uuid:6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab", "x"],
)
def test_a_record_whose_id_is_not_canonical_is_invalid(value: str) -> None:
    with pytest.raises(ValidationError):
        make_record(id=value)


# -- tags --------------------------------------------------------------------------------


def test_a_tag_of_64_allowed_characters_is_valid() -> None:
    tag = ("Az09_.:/-" * 8)[:64]
    assert make_record(tags=(tag,)).tags == (tag,)
    assert check_tag(tag) == tag


@pytest.mark.parametrize(
    "tag",
    ["a=b", "x" * 65, "", "with space", "ünï", "spm\n", "a,b"],
    ids=["equals", "65-chars", "empty", "space", "non-ascii", "trailing-newline", "comma"],
)
def test_a_record_with_a_malformed_tag_is_invalid(tag: str) -> None:
    with pytest.raises(ValidationError):
        make_record(tags=(tag,))


@pytest.mark.parametrize(
    "tag",
    ["a=b", "x" * 65, "", "with space", "spm\n"],
    ids=["equals", "65-chars", "empty", "space", "trailing-newline"],
)
def test_check_tag_rejects_a_malformed_tag(tag: str) -> None:
    # A query tag goes through check_tag, a record tag through the model: both must agree.
    with pytest.raises(ValueError, match="invalid tag"):
        check_tag(tag)


def test_a_record_may_carry_32_tags() -> None:
    tags = tuple(f"t{i}" for i in range(MAX_TAGS))
    assert make_record(tags=tags).tags == tags


def test_a_record_with_33_tags_is_invalid() -> None:
    with pytest.raises(ValidationError, match="at most 32 tags"):
        make_record(tags=tuple(f"t{i}" for i in range(33)))


def test_a_record_with_a_duplicate_tag_is_invalid() -> None:
    with pytest.raises(ValidationError, match="duplicate tags"):
        make_record(tags=("spm", "gluster", "spm"))


def test_a_record_without_tags_has_none() -> None:
    wire = record_wire()
    del wire["tags"]
    assert TaskRecord.model_validate(wire).tags == ()


# -- subsystem ---------------------------------------------------------------------------


@pytest.mark.parametrize("subsystem", ["vdsm", "gluster", "0", "a_b.c-d", "a" * 64])
def test_a_subsystem_matching_the_pattern_is_valid(subsystem: str) -> None:
    assert make_record(subsystem=subsystem).subsystem == subsystem


@pytest.mark.parametrize(
    "subsystem", ["", "Vdsm", "_vdsm", "-vdsm", ".vdsm", "a" * 65, "v dsm", "vdsm\n", "v/x"]
)
def test_a_subsystem_outside_the_pattern_is_invalid(subsystem: str) -> None:
    with pytest.raises(ValidationError):
        make_record(subsystem=subsystem)


# -- other fields ------------------------------------------------------------------------


def test_a_record_gets_the_documented_defaults() -> None:
    record = TaskRecord.model_validate(
        {
            "id": task_id(1),
            "subsystem": "vdsm",
            "verb": "createVolume",
            "state": "init",
            "created_at": "2024-05-01T12:00:00Z",
            "updated_at": "2024-05-01T12:00:00Z",
        }
    )
    assert record.model_dump(mode="json") == {
        "id": task_id(1),
        "subsystem": "vdsm",
        "verb": "createVolume",
        "tags": [],
        "state": "init",
        "code": 0,
        "message": "",
        "result": "",
        "progress": None,
        "data": {},
        "created_at": "2024-05-01T12:00:00Z",
        "updated_at": "2024-05-01T12:00:00Z",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("progress", 101),
        ("progress", -1),
        ("progress", True),
        ("code", "0"),
        ("code", 1.5),
        ("message", None),
        ("verb", ""),
        ("state", "bogus"),
        ("data", []),
    ],
)
def test_a_record_with_an_out_of_range_or_mistyped_field_is_invalid(field: str, value: object) -> None:
    wire = record_wire()
    wire[field] = value
    with pytest.raises(ValidationError):
        TaskRecord.model_validate_json(orjson.dumps(wire))


def test_a_record_is_frozen() -> None:
    record = make_record()
    with pytest.raises(ValidationError):
        record.state = State.FINISHED  # type: ignore[misc]


# -- timestamps --------------------------------------------------------------------------


def test_timestamps_with_an_offset_are_normalised_to_utc() -> None:
    record = make_record(created_at="2024-05-01T14:00:00+02:00", updated_at="2024-05-01T07:30:00-05:00")
    assert record.created_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert record.created_at.utcoffset() == timedelta(0)
    assert record.updated_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert record.updated_at.utcoffset() == timedelta(0)


def test_timestamps_are_serialised_in_utc_with_z() -> None:
    record = make_record(created_at="2024-05-01T14:00:00+02:00", updated_at="2024-05-01T12:30:00.5+00:00")
    assert record.model_dump(mode="json")["created_at"] == "2024-05-01T12:00:00Z"
    details = orjson.loads(codec.dumps(shapes.task_details(record)))
    assert (details["createdAt"], details["updatedAt"]) == (
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:30:00.500000Z",
    )


def test_a_naive_timestamp_is_invalid() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        make_record(updated_at="2024-05-01T12:00:00")


# -- decode_event ------------------------------------------------------------------------


def test_decode_event_returns_the_event_of_a_valid_body() -> None:
    event = decode(event_wire())
    assert event == make_event()


def test_decode_event_tolerates_unknown_extra_fields_from_newer_producers() -> None:
    wire = event_wire()
    wire["trace"] = {"span": "abc"}
    wire["task"]["owner_host"] = "host-1"
    assert decode(wire) == make_event()


def test_decode_event_lower_cases_an_upper_case_task_id() -> None:
    wire = event_wire()
    wire["task"]["id"] = wire["task"]["id"].upper().replace("-4000-", "-4ABC-")
    assert decode(wire).task.id == "00000000-0000-4abc-8000-000000000001"


def test_decode_event_rejects_a_body_that_is_too_large() -> None:
    body = orjson.dumps(event_wire())
    assert rejection(body, max_bytes=len(body) - 1) == f"too large: {len(body)} bytes > {len(body) - 1}"


def test_decode_event_accepts_a_body_of_exactly_the_limit() -> None:
    body = orjson.dumps(event_wire())
    assert decode_event(body, max_bytes=len(body)) == make_event()


def test_decode_event_rejects_a_body_that_is_not_json() -> None:
    assert rejection(b'{"schema": 1,').startswith("not valid JSON: ")


def test_decode_event_rejects_a_body_that_is_not_utf8() -> None:
    assert rejection(b'{"schema": 1, "event": "\xff\xfe"}').startswith("not valid JSON: ")


@pytest.mark.parametrize(
    ("body", "kind"), [(b"[1, 2]", "list"), (b'"event"', "str"), (b"1", "int"), (b"null", "NoneType")]
)
def test_decode_event_rejects_a_body_that_is_not_an_object(body: bytes, kind: str) -> None:
    assert rejection(body) == f"not a JSON object but {kind}"


@pytest.mark.parametrize("schema", [2, 0, "1", None])
def test_decode_event_rejects_an_unknown_schema(schema: object) -> None:
    wire = event_wire()
    wire["schema"] = schema
    assert rejection(orjson.dumps(wire)) == f"unknown schema {schema!r}"


def test_decode_event_rejects_a_schema_of_true() -> None:
    # JSON true is not the integer 1 (Python's True == 1 must not leak into the wire contract).
    wire = event_wire()
    wire["schema"] = True
    with pytest.raises(EventRejected):
        decode(wire)


def test_decode_event_rejects_a_body_without_schema() -> None:
    # SPEC 4: the body is {"schema": 1, ...}; a producer that omits it does not speak schema 1.
    wire = event_wire()
    del wire["schema"]
    with pytest.raises(EventRejected):
        decode(wire)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("state", "bogus", "invalid event: task.state: Input should be 'unknown', 'init',"),
        ("code", "0", "invalid event: task.code: Input should be a valid integer"),
        ("progress", 101, "invalid event: task.progress: Input should be less than or equal to 100"),
        (
            "updated_at",
            "2024-05-01T12:00:00",
            "invalid event: task.updated_at: Input should have timezone info",
        ),
        ("id", "not-a-uuid", "invalid event: task.id: task id is not a UUID: 'not-a-uuid'"),
        ("tags", ["a=b"], "invalid event: task.tags.0: String should match pattern"),
    ],
)
def test_decode_event_rejects_a_record_invalid_per_the_model(field: str, value: object, reason: str) -> None:
    wire = event_wire()
    wire["task"][field] = value
    assert rejection(orjson.dumps(wire)).startswith(reason)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        (
            "event",
            "deleted",
            "invalid event: event: Input should be 'created', 'updated', 'finished' or 'cleared'",
        ),
        ("seq", 0, "invalid event: seq: Input should be greater than 0"),
        ("seq", "5", "invalid event: seq: Input should be a valid integer"),
    ],
)
def test_decode_event_rejects_an_envelope_invalid_per_the_model(
    field: str, value: object, reason: str
) -> None:
    wire = event_wire()
    wire[field] = value
    assert rejection(orjson.dumps(wire)) == reason


def test_decode_event_reason_is_one_line() -> None:
    wire = event_wire()
    wire["task"].update(state="bogus", code="0", progress=101)
    reason = rejection(orjson.dumps(wire))
    assert "\n" not in reason
    assert reason.count(";") == 2


def test_event_to_wire_names_the_schema_field_schema() -> None:
    assert make_event(seq=7, event="created").to_wire() == {
        "schema": 1,
        "event": "created",
        "seq": 7,
        "task": {
            "id": task_id(1),
            "subsystem": "vdsm",
            "verb": "copyImage",
            "tags": ["spm"],
            "state": "running",
            "code": 0,
            "message": "running job 1 of 1",
            "result": "",
            "progress": None,
            "data": {},
            "created_at": "2024-05-01T12:00:00Z",
            "updated_at": "2024-05-01T12:05:30.250000Z",
        },
    }


@settings(max_examples=200, deadline=None)
@given(record=records)
def test_an_event_survives_encode_and_decode(record: TaskRecord) -> None:
    event = Event(event="updated", seq=42, task=record)
    body = event.model_dump_json(by_alias=True).encode()
    assert decode_event(body, max_bytes=1 << 20) == event


@pytest.mark.parametrize(
    "value", ["", "text", {}, [], None, 0, False, 0.0, 1.5, INT64_MAX, {"a": [1, "x", None]}]
)
def test_a_json_value_every_encoder_takes_is_returned_as_it_is(value: Any) -> None:
    assert check_encodable(value) is value


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), INT64_MAX + 1, -(2**64), {"a": float("-inf")}, [0, [{"b": 2**70}]]]
)
def test_a_json_value_with_a_number_no_encoder_takes_at_any_depth_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"JSON number|64-bit"):
        check_encodable(value)
