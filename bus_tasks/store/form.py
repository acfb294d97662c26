"""The form in which the stores keep a task: its TaskDetails bytes, as the view's member holds them.

``STORED_FORM`` is written beside the data; a store of an older form is migrated when loaded,
one of a newer form is refused (it was written by a newer bus_tasks).
"""

from __future__ import annotations

import sys
from datetime import datetime

from bus_tasks import codec
from bus_tasks.core.model import State
from bus_tasks.core.view import Entry
from bus_tasks.errors import StoreUnusable

STORED_FORM = 1  # 1: the TaskDetails of SPEC section 5, as encoded by protocol.shapes


_STATES = {state.value: state for state in State}  # a dict lookup: State(value) costs ~1 us


def entry_from_details(details: bytes, seq: int) -> Entry:
    """The view's entry of a task from its stored form-1 TaskDetails bytes (a restart reads a
    million of them: this is its hot path)."""
    fields = codec.loads(details)
    task_id = fields["id"]
    return Entry(
        id=task_id,
        seq=seq,
        # One copy of each subsystem and verb for the whole view, as Entry.from_record keeps.
        subsystem=sys.intern(fields["subsystem"]),
        verb=sys.intern(fields["verb"]),
        tags=tuple(fields["tags"]),
        state=_STATES[fields["state"]],
        code=fields["code"],
        updated_at=datetime.fromisoformat(fields["updatedAt"]).timestamp(),
        message=fields["message"],
        # Ids are canonical UUIDs (ASCII, nothing to escape): the key needs no encoder.
        member=b'"%b":%b' % (task_id.encode(), details),
    )


def check_form(found: int | None, store: str) -> None:
    """Refuse a store whose form this bus_tasks cannot read.

    A store without a recorded form was written before forms were recorded: it holds form 1.
    When a later release changes the form, it migrates older ones here, before loading.

    Raises:
        StoreUnusable: for a form newer than :data:`STORED_FORM` (written by a newer bus_tasks).
    """
    form = 1 if found is None else found
    if form > STORED_FORM:
        raise StoreUnusable(
            store, f"its tasks are in stored form {form}, newer than this bus_tasks reads ({STORED_FORM})"
        )
