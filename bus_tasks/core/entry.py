"""What the view holds of a task (:class:`Entry`), of a cleared one (:class:`Tombstone`), and
what applying or expiring changed (:class:`Outcome`, :class:`Expired`). Pure, no I/O."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import Enum

from bus_tasks.core.model import State, TaskRecord

_intern = sys.intern


@dataclass(slots=True)
class Entry:
    """One live task: the fields queries need, and its listing member encoded once.

    The member ``"<id>":{...}`` is what the view's encoder made of the record (the engine's
    TaskDetails), so that a listing of any size is one join of members; the view never reads
    it back.
    """

    id: str
    seq: int
    subsystem: str
    verb: str
    tags: tuple[str, ...]
    state: State
    code: int
    updated_at: float
    message: str
    member: bytes  # '"<id>":' + the encoded record, once per change

    @classmethod
    def from_record(cls, record: TaskRecord, seq: int, member: bytes) -> Entry:
        fields = record.__dict__  # pydantic keeps them there: cheaper than its attributes (see shapes)
        return cls(
            fields["id"],
            seq,
            # Few distinct subsystems, verbs and tags repeat over many tasks: keep one copy
            # (of tags, one tuple per combination, which TaskView shares).
            _intern(fields["subsystem"]),
            _intern(fields["verb"]),
            fields["tags"],
            fields["state"],
            fields["code"],
            fields["updated_at"].timestamp(),
            fields["message"],
            member,
        )

    @property
    def details(self) -> bytes:
        """The encoded record (``{...}``), without the listing key."""
        # Ids are canonical UUIDs, ASCII: the key is len(id) characters, two quotes and a colon.
        return self.member[len(self.id) + 3 :]


@dataclass(slots=True, frozen=True)
class Tombstone:
    """A cleared task: it blocks every later event of that id until it expires."""

    subsystem: str
    seq: int
    cleared_at: float
    # The call that cleared it (its key), so that a repeat of that call finds it done; kept in
    # memory only: a repeat comes within its caller's deadline, not across a restart.
    cleared_by: str | None = None


@dataclass(slots=True, frozen=True)
class Expired:
    """What :meth:`TaskView.expire` removed: done tasks buried, tombstones forgotten."""

    buried: list[str]
    forgotten: list[str]
    entries: list[Entry] = field(default_factory=list, compare=False)  # the buried, as they were


class Outcome(Enum):
    """What applying one event did to the view."""

    APPLIED = "applied"
    CLEARED = "cleared"
    STALE = "stale"
