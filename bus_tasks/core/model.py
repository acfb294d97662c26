"""The task record, its states, and the deprecated state the engine sees (SPEC section 3)."""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from bus_tasks import codec
from bus_tasks.errors import EventRejected

SCHEMA_VERSION = 1
WIRE = "wire"  # validation context of bodies read from the bus
_NO_SCHEMA: Any = object()  # an event given without "schema"
MAX_TAGS = 32

SUBSYSTEM_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
TAG_PATTERN = r"^[A-Za-z0-9_.:/-]{1,64}$"
_TAG_RE = re.compile(TAG_PATTERN)
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_is_canonical_uuid = _CANONICAL_UUID.fullmatch


class State(StrEnum):
    """VDSM's internal task states."""

    UNKNOWN = "unknown"
    INIT = "init"
    PREPARING = "preparing"
    BLOCKED = "blocked"
    ACQUIRING = "acquiring"
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTING = "aborting"
    WAITRECOVER = "waitrecover"
    RECOVERING = "recovering"
    RACQUIRING = "racquiring"
    RABORTING = "raborting"
    RECOVERED = "recovered"
    FAILED = "failed"

    @property
    def is_done(self) -> bool:
        return self in DONE_STATES

    @property
    def is_aborting(self) -> bool:
        return self in (State.ABORTING, State.RABORTING)


DONE_STATES = frozenset({State.FINISHED, State.RECOVERED, State.FAILED})

# internal state -> (taskState, taskResult): the deprecated pair the engine parses.
LEGACY_STATE: dict[State, tuple[str, str]] = {
    State.UNKNOWN: ("unknown", ""),
    State.INIT: ("init", ""),
    State.PREPARING: ("running", ""),
    State.BLOCKED: ("running", ""),
    State.ACQUIRING: ("running", ""),
    State.QUEUED: ("running", ""),
    State.RUNNING: ("running", ""),
    State.FINISHED: ("finished", "success"),
    State.ABORTING: ("aborting", ""),
    State.RABORTING: ("aborting", ""),
    State.WAITRECOVER: ("cleaning", ""),
    State.RECOVERING: ("cleaning", ""),
    State.RACQUIRING: ("cleaning", ""),
    State.RECOVERED: ("finished", "cleanSuccess"),
    State.FAILED: ("finished", "cleanFailure"),
}


def canonical_task_id(value: object) -> str:
    """Return the canonical lower-case form of a UUID task id.

    Raises:
        ValueError: when ``value`` is not a UUID string.
    """
    if isinstance(value, str):
        if _is_canonical_uuid(value):
            return value.lower()  # the hot path of every event: no uuid.UUID round trip
    elif isinstance(value, uuid.UUID):
        return str(value)
    else:
        raise ValueError(f"task id must be a UUID string, got {type(value).__name__}")  # noqa: TRY004
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValueError(f"task id is not a UUID: {value!r}") from None
    # uuid.UUID also accepts braces, urn: prefixes and missing dashes; ids on the wire
    # are the canonical form only (case aside), so that one task has one key.
    raise ValueError(f"task id is not a canonical UUID: {value!r}")


def check_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid tag.

    Raises:
        ValueError: when the tag is empty, too long, or has a character outside the tag alphabet.
    """
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise ValueError(f"invalid tag {tag!r}: 1-64 characters of [A-Za-z0-9_.:/-]")
    return tag


def check_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags, got {len(tags)}")
    if len(set(tags)) != len(tags):
        raise ValueError(f"duplicate tags in {list(tags)!r}")
    return tags


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def rfc3339(epoch_s: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds: ``2026-01-01T00:00:00.000Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The integers every encoder and store of ours takes: orjson refuses wider ones ("Integer exceeds
# 64-bit range"), so a wider one accepted would make every listing holding it fail.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def check_encodable(value: Any) -> Any:
    """Return ``value`` (JSON) if every number in it, at any depth, can be encoded again.

    Raises:
        ValueError: on NaN or infinity (JSON has none, and the parser reads ``NaN``, ``Infinity``
            and ``1e400`` as such floats, which the view would list as ``null``) or on an integer
            outside the signed 64-bit range (accepted, it could never be encoded again).
    """
    if not value or type(value) is str:  # most results and data: "", {}, a plain string
        return value
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{item} is not a JSON number")
        if isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
            raise ValueError(f"an integer of {len(str(abs(item)))} digits is outside the signed 64-bit range")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


TaskId = Annotated[str, AfterValidator(canonical_task_id)]
Subsystem = Annotated[str, StringConstraints(pattern=SUBSYSTEM_PATTERN)]
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
Tags = Annotated[tuple[Tag, ...], AfterValidator(check_tags)]
Verb = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Timestamp = Annotated[AwareDatetime, AfterValidator(to_utc)]
EventName = Literal["created", "updated", "finished", "cleared"]


class TaskRecord(BaseModel):
    """The whole current record of one task, as every event carries it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: TaskId
    subsystem: Subsystem
    verb: Verb
    tags: Tags = ()
    state: State
    code: Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)] = 0
    message: str = ""
    result: Annotated[JsonValue, AfterValidator(check_encodable)] = ""
    progress: Annotated[StrictInt, Field(ge=0, le=100)] | None = None
    data: Annotated[dict[str, JsonValue], AfterValidator(check_encodable)] = Field(default_factory=dict)
    created_at: Timestamp
    updated_at: Timestamp

    @property
    def legacy_state(self) -> tuple[str, str]:
        """The deprecated ``(taskState, taskResult)`` pair."""
        return LEGACY_STATE[self.state]


class Event(BaseModel):
    """One lifecycle event: the task's whole record and its ordering number."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # Strict: "schema": true is not version 1. On the wire it is also required (see below).
    schema_version: Annotated[StrictInt, Field(alias="schema", ge=1, le=SCHEMA_VERSION)] = Field(
        default=_NO_SCHEMA, validate_default=True
    )
    event: EventName
    # Below 2**63 so that every store can keep it as a signed 64-bit integer.
    seq: Annotated[StrictInt, Field(gt=0, lt=2**63)]
    task: TaskRecord

    @field_validator("schema_version", mode="before")
    @classmethod
    def _schema_on_the_wire(cls, value: Any, info: ValidationInfo) -> Any:
        # Bodies from the bus must say their schema; Python callers may rely on the default.
        # (A check of this one field, not of the whole body: that would make pydantic build
        # the body as Python objects first, a third of the cost of decoding an event.)
        if value is _NO_SCHEMA:
            if info.context == WIRE:
                raise ValueError('"schema" is required')
            return SCHEMA_VERSION
        return value

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class Announced(BaseModel):
    """The end of a subsystem's announce: the complete set of its live tasks (SPEC section 11).

    Tasks of ``subsystem`` that the set does not list and that are older than ``seq`` are gone:
    the view removes them. A marker that never arrives removes nothing, so an announce cut short
    is harmless; the marker lists the ids itself, so it does not depend on the order in which the
    announced tasks' own events arrive.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    schema_version: Annotated[StrictInt, Field(alias="schema", ge=1, le=SCHEMA_VERSION)]
    event: Literal["announced"]
    seq: Annotated[StrictInt, Field(gt=0, lt=2**63)]
    subsystem: Subsystem
    tasks: frozenset[TaskId]

    def to_wire(self) -> dict[str, Any]:
        wire = self.model_dump(mode="json", by_alias=True)
        wire["tasks"] = sorted(self.tasks)
        return wire


class Heartbeat(BaseModel):
    """A subsystem saying it is alive (or, once, that it stopped), every ``interval_s`` seconds."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    schema_version: Annotated[StrictInt, Field(alias="schema", ge=1, le=SCHEMA_VERSION)]
    event: Literal["heartbeat"]
    subsystem: Subsystem
    instance: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    state: Literal["alive", "stopped"] = "alive"
    interval_s: Annotated[float, Field(gt=0, le=3600)]
    tasks: Annotated[StrictInt, Field(ge=0, lt=2**63)] = 0  # (JSON encodes 64-bit integers only)
    host: Annotated[str, StringConstraints(max_length=255)] = ""
    pid: Annotated[StrictInt, Field(ge=0, lt=2**63)] = 0
    sent_at: Timestamp

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


_Beat = TypeVar("_Beat", "Heartbeat", "ReplicaBeat")


class ReplicaBeat(BaseModel):
    """An aggregator saying it serves, every ``interval_s`` seconds (``bus-tasks aggregators``)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    schema_version: Annotated[StrictInt, Field(alias="schema", ge=1, le=SCHEMA_VERSION)]
    event: Literal["aggregator"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    instance: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    state: Literal["serving", "stopped"] = "serving"
    revision: Annotated[StrictInt, Field(ge=0, lt=2**63)]  # (JSON encodes 64-bit integers only)
    tasks: Annotated[StrictInt, Field(ge=0, lt=2**63)]
    rpc_queue: Annotated[str, StringConstraints(max_length=255)] = ""  # requests to it alone
    started_at: Timestamp
    interval_s: Annotated[float, Field(gt=0, le=3600)]
    sent_at: Timestamp

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


MAX_HEARTBEAT_BYTES = 4096


def _decode_beat(model: type[_Beat], body: bytes, what: str) -> _Beat:
    if len(body) > MAX_HEARTBEAT_BYTES:
        raise EventRejected(f"too large for a heartbeat: {len(body)} bytes")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise EventRejected(f"invalid {what}: {describe_validation(exc)}") from None


def decode_replica_beat(body: bytes) -> ReplicaBeat:
    """Validate an aggregator's heartbeat (``aggregator.<name>.beat``).

    Raises:
        EventRejected: with a one-line reason.
    """
    return _decode_beat(ReplicaBeat, body, "aggregator heartbeat")


def decode_heartbeat(body: bytes) -> Heartbeat:
    """Validate a subsystem's heartbeat (``subsystem.<name>.heartbeat``).

    Raises:
        EventRejected: with a one-line reason.
    """
    return _decode_beat(Heartbeat, body, "heartbeat")


ANNOUNCED: Literal["announced"] = "announced"
HEARTBEAT: Literal["heartbeat"] = "heartbeat"
# A marker lists every live task of its subsystem: it may be larger than one task's event.
ANNOUNCED_SIZE_FACTOR = 64


def describe_validation(exc: ValidationError, limit: int = 5) -> str:
    """A one-line summary of a pydantic error: ``where: what; ...`` (control characters escaped)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "value"
        what = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {what}")
    # Names in the input (e.g. an unknown param) must not break the one-line log and error text.
    return "; ".join(parts).encode("unicode_escape").decode("ascii")


def decode_announced(body: bytes, *, max_bytes: int) -> Announced:
    """Validate the end marker of an announce (``task.<subsystem>.announced``).

    Raises:
        EventRejected: with a one-line reason, as :func:`decode_event`.
    """
    limit = max_bytes * ANNOUNCED_SIZE_FACTOR
    if len(body) > limit:
        raise EventRejected(f"too large: {len(body)} bytes > {limit}")
    try:
        return Announced.model_validate_json(body)
    except ValidationError as exc:
        raise EventRejected(f"invalid announce marker: {describe_validation(exc)}") from None


_EVENT_VALIDATOR = Event.__pydantic_validator__


def decode_event(body: bytes, *, max_bytes: int) -> Event:
    """Validate one event body.

    Raises:
        EventRejected: with a one-line reason when the body is too large, not UTF-8 JSON,
            of an unknown schema, or invalid per the model.
    """
    if len(body) > max_bytes:
        raise EventRejected(f"too large: {len(body)} bytes > {max_bytes}")
    try:
        # What Event.model_validate_json calls, without its Python wrapper (~7% of a decode).
        return _EVENT_VALIDATOR.validate_json(body, context=WIRE)  # type: ignore[no-any-return]
    except ValidationError as exc:
        first = exc
    # The fast path failed: find the most useful reason.
    try:
        raw = codec.loads(body)
    except codec.DecodeError as exc:
        raise EventRejected(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise EventRejected(f"not a JSON object but {type(raw).__name__}")
    schema = raw.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise EventRejected(f"unknown schema {schema!r}")
    raise EventRejected(f"invalid event: {describe_validation(first)}")
