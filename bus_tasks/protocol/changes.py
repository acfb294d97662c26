"""The change feed's wire form (docs/watching.md): one change, a feed message, the tag filter.

Pure: the aggregator encodes with it, watchers and the HTTP front door decode and filter with it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from bus_tasks import codec


@dataclass(frozen=True, slots=True)
class Change:
    """What one event did to one task: ``task`` is its TaskDetails after, None when it left."""

    revision: int
    task_id: str
    task: dict[str, Any] | None
    tags: tuple[str, ...]

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> Change:
        return cls(int(item["revision"]), str(item["id"]), item["task"], tuple(item["tags"]))


def encode_change(revision: int, task_id: str, details: bytes | None, tags: Sequence[str]) -> bytes:
    """One change as JSON, its TaskDetails (already encoded by the view) embedded as they are."""
    return b'{"revision":%d,"id":%b,"task":%b,"tags":%b}' % (
        revision,
        codec.dumps(task_id),
        details if details is not None else b"null",
        codec.dumps(list(tags)),
    )


def encode_member_change(revision: int, member: bytes, id_chars: int, tags: bytes) -> bytes:
    """:func:`encode_change` of a live task from its listing member ``"<id>":{TaskDetails}`` (an
    id of ``id_chars`` ASCII characters, as the view keeps it) and its tags encoded already: the
    same bytes, without encoding the id and the tags again for every change."""
    return b'{"revision":%d,"id":%b,"task":%b,"tags":%b}' % (
        revision,
        member[: id_chars + 2],
        member[id_chars + 3 :],
        tags,
    )


def feed_message(head: dict[str, Any], changes: Sequence[bytes]) -> bytes:
    """A feed message: ``head`` (aggregator, instance, log, rpcQueue, after, revision ...) and
    the encoded changes."""
    return codec.dumps(head)[:-1] + b',"changes":[' + b",".join(changes) + b"]}"


def selects(tags: Collection[str], wanted: Collection[str], *, match_all: bool) -> bool:
    """Whether a task tagged ``tags`` is in the selection ``wanted`` (everything when empty):
    at least one of them, or with ``match_all`` every one, as ``getAllTasks`` selects."""
    if not wanted:
        return True
    if match_all:
        return all(tag in tags for tag in wanted)
    return any(tag in tags for tag in wanted)
