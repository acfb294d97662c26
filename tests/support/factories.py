"""Factories for task records and events, and hypothesis strategies for them (pure, no broker)."""

from __future__ import annotations

import string
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from bus_tasks.core.model import Event, EventName, State, TaskRecord
from bus_tasks.core.view import Entry
from bus_tasks.protocol.shapes import task_details_member

CREATED_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
UPDATED_AT = datetime(2024, 5, 1, 12, 5, 30, 250_000, tzinfo=UTC)


def task_id(n: int) -> str:
    """A canonical task id that is easy to read in a failure: ``00000000-0000-4000-8000-<n>``."""
    return str(uuid.UUID(f"00000000-0000-4000-8000-{n:012d}"))


def make_record(n: int = 1, **fields: Any) -> TaskRecord:
    """A valid running ``vdsm`` task tagged ``spm``; keyword arguments replace any field."""
    values: dict[str, Any] = {
        "id": task_id(n),
        "subsystem": "vdsm",
        "verb": "copyImage",
        "tags": ("spm",),
        "state": State.RUNNING,
        "code": 0,
        "message": "running job 1 of 1",
        "result": "",
        "progress": None,
        "data": {},
        "created_at": CREATED_AT,
        "updated_at": UPDATED_AT,
    }
    values.update(fields)
    return TaskRecord.model_validate(values)


def entry_of(record: TaskRecord, seq: int) -> Entry:
    """The view's entry of ``record``, its member encoded as the aggregator's view encodes it."""
    return Entry.from_record(record, seq, task_details_member(record))


def make_event(n: int = 1, *, seq: int = 1, event: EventName = "updated", **fields: Any) -> Event:
    """An event carrying ``make_record(n, **fields)``."""
    return Event(event=event, seq=seq, task=make_record(n, **fields))


def record_wire(**fields: Any) -> dict[str, Any]:
    """The JSON form of a valid record, to be edited into an invalid one."""
    return make_record(**fields).model_dump(mode="json")


def event_wire(**fields: Any) -> dict[str, Any]:
    """The JSON form of a valid event (``schema``, ``event``, ``seq``, ``task``)."""
    return {"schema": 1, "event": "updated", "seq": 1, "task": record_wire(**fields)}


def at(seconds: float) -> datetime:
    """A UTC timestamp ``seconds`` after the epoch (for the view's float clock)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


# -- hypothesis strategies ---------------------------------------------------------------

TAG_ALPHABET = string.ascii_letters + string.digits + "_.:/-"
SUBSYSTEM_HEAD = string.ascii_lowercase + string.digits
SUBSYSTEM_TAIL = SUBSYSTEM_HEAD + "_.-"

tags_strategy = st.lists(
    st.text(alphabet=TAG_ALPHABET, min_size=1, max_size=64), max_size=32, unique=True
).map(tuple)
subsystems = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(SUBSYSTEM_HEAD),
    st.text(alphabet=SUBSYSTEM_TAIL, max_size=63),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)

records = st.builds(
    TaskRecord,
    id=st.uuids().map(str),
    subsystem=subsystems,
    verb=st.text(min_size=1, max_size=128),
    tags=tags_strategy,
    state=st.sampled_from(list(State)),
    code=st.integers(min_value=-(2**31), max_value=2**31),
    message=st.text(max_size=40),
    result=json_values,
    progress=st.none() | st.integers(min_value=0, max_value=100),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    created_at=timestamps,
    updated_at=timestamps,
)
