"""The merged view of every task: apply events, answer queries through a tag index. Pure, no I/O.

Its entries, tombstones and outcomes are :mod:`bus_tasks.core.entry`'s (named here too)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from bus_tasks.core.entry import Entry, Expired, Outcome, Tombstone
from bus_tasks.core.model import Announced, Event, State, TaskRecord
from bus_tasks.core.order import IdOrder
from bus_tasks.errors import EventRejected, TaskStateError, UnknownTask

MemberEncoder = Callable[[TaskRecord], bytes]
"""Encodes a record as the member ``"<id>":{...}`` of a listing (the protocol gives it)."""

# Distinct tag combinations whose one tuple entries share; past it, an entry keeps its own.
MAX_SHARED_TAG_TUPLES = 4096
_intern = sys.intern
__all__ = ["Entry", "Expired", "MemberEncoder", "Outcome", "TaskView", "Tombstone"]


# Looked up once: ``Outcome.APPLIED`` goes through the enum's metaclass each time (~0.1 us an event).
_APPLIED, _CLEARED, _STALE = Outcome.APPLIED, Outcome.CLEARED, Outcome.STALE


class TaskView:
    """Highest ``seq`` wins per task; ``cleared`` leaves a tombstone; queries go through a tag index.

    Applying any set of events, in any order and with any duplication, yields the same view.
    """

    def __init__(
        self, encode_member: MemberEncoder | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        """Args:
        encode_member: how a record becomes its listing member; by default the engine's
            TaskDetails (``bus_tasks.protocol.shapes.task_details_member``), imported only then.
        clock: epoch seconds, for tombstones and expiry.
        """
        if encode_member is None:
            from bus_tasks.protocol.shapes import task_details_member  # noqa: PLC0415

            encode_member = task_details_member
        self.encode_member = encode_member
        self._entries: dict[str, Entry] = {}
        # The live entry of an id, or None: the dict's own get, for walks over many ids (a page).
        self.lookup: Callable[[str], Entry | None] = self._entries.get
        self._order = IdOrder()  # the ids in sorted order, for pages (kept once first asked)
        self.member_bytes = 0  # the live entries' members added up: a listing's size, unbuilt
        self._tombstones: dict[str, Tombstone] = {}
        # tag -> id -> the entry: a query by tag reads its entries without a lookup per task.
        self._by_tag: dict[str, dict[str, Entry]] = {}
        self._tag_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
        # (subsystem, state) -> live tasks, kept as entries come and go: metrics read it, no scan.
        self._by_state: Counter[tuple[str, State]] = Counter()
        self._clock = clock
        self.version = 0  # changes whenever a listing could change
        # The event log's position of the last event applied (0: none): the revision a listing
        # answers from, the same on every replica at the same position (see aggregator/ingest).
        self.revision = 0
        # The latest time the applied events carry (records' updated_at, heartbeats' sent_at):
        # expiry goes by it, so that replicas at one position of the log decide alike.
        self.log_time = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    @property
    def tombstones(self) -> dict[str, Tombstone]:
        return self._tombstones

    @property
    def tasks_by_state(self) -> Mapping[tuple[str, State], int]:
        """Live tasks per ``(subsystem, state)`` (0 once all left): the live counts, not a copy,
        so read them on the thread that applies events."""
        return self._by_state

    def apply(self, event: Event) -> Outcome:
        """Apply one event.

        Raises:
            EventRejected: when the task is owned by another subsystem, or its record cannot be
                encoded by the view's encoder (an integer past 64 bits).
        """
        record = event.task
        task_id = record.id
        current = self._entries.get(task_id)
        tombstone = self._tombstones.get(task_id)
        owner = current.subsystem if current else tombstone.subsystem if tombstone else None
        if owner is not None and owner != record.subsystem:
            raise EventRejected(f"task {task_id} is owned by subsystem {owner!r}, not {record.subsystem!r}")
        if tombstone is not None:
            return _STALE
        if event.event == "cleared":
            self._bury(task_id, record.subsystem, event.seq)
            return _CLEARED
        if current is not None and current.seq >= event.seq:
            return _STALE
        try:
            member = self.encode_member(record)
        except (TypeError, ValueError) as exc:  # e.g. an integer past 64 bits in result or data
            raise EventRejected(f"invalid event: task cannot be encoded: {exc}") from None
        entry = Entry.from_record(record, event.seq, member)
        self._put(entry, current)
        if entry.updated_at > self.log_time:  # noqa: PLR1730 - no call on the hot path
            self.log_time = entry.updated_at
        return _APPLIED

    def note_time(self, epoch_s: float) -> None:
        """A time the log carried outside a task's record (a heartbeat): the log time moves on."""
        self.log_time = max(self.log_time, epoch_s)

    def restore(self, entry: Entry) -> None:
        """Put back an entry read from a store, unless a newer one or a tombstone is there."""
        current = self._entries.get(entry.id)
        if entry.id in self._tombstones or (current is not None and current.seq >= entry.seq):
            return
        self._put(entry, current)
        self.log_time = max(self.log_time, entry.updated_at)

    def restore_all(self, entries: Iterable[Entry]) -> None:
        """Put back entries a store reads (new objects), each as :meth:`restore` would: one whose id
        the view holds neither live nor buried (a load's million) the short way, others by it."""
        put = self._entries.setdefault
        tombstones = self._tombstones
        by_tag = self._by_tag
        tag_tuples = self._tag_tuples
        counts: dict[tuple[str, State], int] = {}  # a dict's get and set: ~1/3 of a Counter's +=
        log_time = self.log_time
        for entry in entries:
            task_id = entry.id
            # One lookup in the (large) dict of entries: put it in unless the id is there.
            if task_id in tombstones or put(task_id, entry) is not entry:
                self.restore(entry)
                continue
            entry.tags = tags = tag_tuples.get(entry.tags) or self._shared_tags(entry.tags)
            for tag in tags:
                tagged = by_tag.get(tag)
                if tagged is None:
                    by_tag[tag] = {task_id: entry}
                else:
                    tagged[task_id] = entry
            key = (entry.subsystem, entry.state)
            counts[key] = counts.get(key, 0) + 1
            if entry.updated_at > log_time:  # noqa: PLR1730 - no call on the hot path
                log_time = entry.updated_at
        self._by_state.update(counts)
        self.version += 1
        self.log_time = max(self.log_time, log_time)

    def restore_tombstone(self, task_id: str, tombstone: Tombstone) -> None:
        self._drop(task_id)
        self.version += 1
        self._tombstones[task_id] = tombstone

    def get(self, task_id: str) -> Entry:
        """The live entry of ``task_id``.

        Raises:
            UnknownTask: when the task is not in the view.
        """
        entry = self._entries.get(task_id)
        if entry is None:
            raise UnknownTask(task_id)
        return entry

    def find(self, task_id: str) -> Entry | None:
        """The live entry of ``task_id``, or None."""
        return self._entries.get(task_id)

    def sorted_ids(self) -> list[str]:
        """Every live id in sorted order, and perhaps a few gone since (look each up): see
        :mod:`~bus_tasks.core.order`. The list is not changed afterwards; do not change it."""
        return self._order.ids(self._entries)

    def clear(self, task_id: str, *, force: bool = False, by: str | None = None) -> Tombstone:
        """Remove a done task (with ``force``, any task), leaving a tombstone (made ``by`` a call).

        Raises:
            UnknownTask: when the task is not in the view.
            TaskStateError: when the task is not done and ``force`` is not given.
        """
        entry = self.get(task_id)
        if not (force or entry.state.is_done):
            raise TaskStateError(task_id, entry.state.value)
        return self._bury(task_id, entry.subsystem, entry.seq, by=by)

    def cleared_by(self, task_id: str, by: str) -> None:
        """The tombstone of ``task_id`` was made by the call ``by`` (a cleared event said so)."""
        tombstone = self._tombstones.get(task_id)
        if tombstone is not None:
            self._tombstones[task_id] = replace(tombstone, cleared_by=by)

    def reconcile(self, announced: Announced) -> list[Entry]:
        """Remove the tasks of a subsystem that its complete announce no longer lists.

        Only tasks older than the marker go: one updated after the announce began is live.
        Returns the entries buried, as they were (each leaves a tombstone, as a clear does).

        Raises:
            EventRejected: when the marker lists a task owned by another subsystem.
        """
        subsystem = announced.subsystem
        for task_id in announced.tasks:
            current = self._entries.get(task_id)
            if current is not None and current.subsystem != subsystem:
                raise EventRejected(
                    f"announce of {subsystem!r} lists task {task_id} of subsystem {current.subsystem!r}"
                )
        gone = [
            e
            for e in self._entries.values()
            if e.subsystem == subsystem and e.seq < announced.seq and e.id not in announced.tasks
        ]
        for entry in gone:
            self._bury(entry.id, subsystem, entry.seq)
        return gone

    def count_by_subsystem(self) -> dict[str, int]:
        """How many live tasks each subsystem has in the view."""
        counts: dict[str, int] = {}
        for entry in self._entries.values():
            counts[entry.subsystem] = counts.get(entry.subsystem, 0) + 1
        return counts

    def select(self, tags: Sequence[str] | None = None, *, match_all: bool = False) -> list[Entry]:
        """Entries carrying any (or, with ``match_all``, every) tag of ``tags``; all when empty.

        Cost follows the number of tasks that carry the tags, not the number stored.
        """
        if not tags:
            return list(self._entries.values())
        tagged = [self._by_tag.get(tag, _EMPTY) for tag in dict.fromkeys(tags)]
        if len(tagged) == 1:
            return list(tagged[0].values())
        if match_all:
            tagged.sort(key=len)
            smallest, rest = tagged[0], tagged[1:]
            return [e for i, e in smallest.items() if all(i in t for t in rest)]
        union: dict[str, Entry] = {}
        for entries in tagged:
            union.update(entries)
        return list(union.values())

    def expire(
        self, *, tombstone_ttl_s: float, done_ttl_s: float | None, now: float | None = None
    ) -> Expired:
        """Bury done tasks idle for ``done_ttl_s``; forget tombstones older than ``tombstone_ttl_s``."""
        now = self._clock() if now is None else now
        entries: list[Entry] = []
        if done_ttl_s is not None:
            entries = [
                e for e in self._entries.values() if e.state.is_done and now - e.updated_at >= done_ttl_s
            ]
            for entry in entries:
                self._bury(entry.id, entry.subsystem, entry.seq, now)
        forgotten = [t for t, s in self._tombstones.items() if now - s.cleared_at >= tombstone_ttl_s]
        for task_id in forgotten:
            del self._tombstones[task_id]
        return Expired([e.id for e in entries], forgotten, entries)

    def _put(self, entry: Entry, current: Entry | None) -> None:
        if current is None:
            entry.tags = self._shared_tags(entry.tags)
            self._index(entry)
            self._order.add(entry.id)
            self.member_bytes += len(entry.member)
        else:
            self.member_bytes += len(entry.member) - len(current.member)
            entry.id = current.id  # the one copy the dict key and the tag index already hold
            if current.tags == entry.tags:
                entry.tags = current.tags
                self._index(entry)  # the index holds entries: the new one replaces the old
            else:
                entry.tags = self._shared_tags(entry.tags)
                self._unindex(current)
                self._index(entry)
        self._entries[entry.id] = entry
        self.version += 1
        if current is None:
            self._by_state[entry.subsystem, entry.state] += 1
        elif current.state is not entry.state:  # the owner check made the subsystems equal
            self._by_state[current.subsystem, current.state] -= 1
            self._by_state[entry.subsystem, entry.state] += 1

    def _shared_tags(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        """One tuple per distinct combination of tags (a few, shared by many tasks), up to a bound."""
        shared = self._tag_tuples.get(tags)
        if shared is not None:
            return shared
        shared = tuple(sys.intern(tag) for tag in tags)
        if len(self._tag_tuples) < MAX_SHARED_TAG_TUPLES:
            self._tag_tuples[shared] = shared
        return shared

    def _bury(
        self, task_id: str, subsystem: str, seq: int, now: float | None = None, by: str | None = None
    ) -> Tombstone:
        self._drop(task_id)
        cleared_at = self._clock() if now is None else now
        tombstone = Tombstone(subsystem=subsystem, seq=seq, cleared_at=cleared_at, cleared_by=by)
        self.version += 1
        self._tombstones[task_id] = tombstone
        return tombstone

    def _drop(self, task_id: str) -> None:
        entry = self._entries.pop(task_id, None)
        if entry is not None:
            self._unindex(entry)
            self.member_bytes -= len(entry.member)
            self._by_state[entry.subsystem, entry.state] -= 1

    def _index(self, entry: Entry) -> None:
        by_tag = self._by_tag
        for tag in entry.tags:
            tagged = by_tag.get(tag)  # not setdefault: it would make an empty dict for every tag
            if tagged is None:
                by_tag[tag] = {entry.id: entry}
            else:
                tagged[entry.id] = entry

    def _unindex(self, entry: Entry) -> None:
        for tag in entry.tags:
            tagged = self._by_tag.get(tag)
            if tagged is not None:
                tagged.pop(entry.id, None)
                if not tagged:
                    del self._by_tag[tag]


_EMPTY: Mapping[str, Entry] = MappingProxyType({})
