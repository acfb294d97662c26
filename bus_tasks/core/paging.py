"""Pages of a listing in task-id order, over a view that changes between pages. Pure, no I/O.

A listing sorts the ids that match once, at its first page on this process, and keeps that
snapshot for its later pages: a page is a bisect into it and a walk, not a sort of every id.
Any snapshot taken while the listing runs holds every task that exists and matches for the
whole listing, so a later page asked of another process (a replica, or this one after the
snapshot was evicted) takes its own snapshot and still lists each such task exactly once.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from bus_tasks.core.view import Entry, TaskView

SNAPSHOTS_KEPT = 4  # listings paged at once on one process; an evicted one is sorted again


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its entries in id order, and the last id listed when more may follow."""

    entries: list[Entry]
    last_id: str | None  # None: the listing is complete


class PageTooLarge(Exception):
    """Raised when even one task does not fit in a page's byte budget."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def matches(entry: Entry, tags: Sequence[str], *, match_all: bool) -> bool:
    """Whether ``entry`` carries any (``match_all``: every) tag of ``tags``; all when empty."""
    if not tags:
        return True
    if match_all:
        return all(tag in entry.tags for tag in tags)
    return any(tag in entry.tags for tag in tags)


class Pager:
    """Pages listings of one view; remembers the sorted ids of the few listings in progress."""

    def __init__(self, view: TaskView, *, kept: int = SNAPSHOTS_KEPT) -> None:
        self.view = view
        self._kept = kept
        self._snapshots: OrderedDict[str, list[str]] = OrderedDict()

    def page(
        self,
        listing: str,
        tags: Sequence[str],
        *,
        match_all: bool,
        after: str | None,
        limit: int,
        max_bytes: int | None = None,
    ) -> Page:
        """Up to ``limit`` entries whose id sorts after ``after`` (None: from the start), whose
        members add up to at most ``max_bytes`` (the page ends early when the next would not fit).

        Raises:
            PageTooLarge: when the first entry of the page alone is over ``max_bytes``.
        """
        ids = self._snapshot(listing, tags, match_all=match_all, fresh=after is None)
        start = 0 if after is None else bisect.bisect_right(ids, after)
        entries: list[Entry] = []
        size = 0
        position = start
        end = len(ids)
        budget = max_bytes if max_bytes is not None else -1
        live = self.view.find
        while position < end and len(entries) < limit:
            entry = live(ids[position])
            # gone, or changed since the snapshot: it did not exist (match) for the whole listing
            if entry is not None and (not tags or matches(entry, tags, match_all=match_all)):
                member_size = len(entry.member) + 1  # and its comma
                if budget >= 0 and size + member_size > budget:
                    if not entries:
                        raise PageTooLarge(member_size)
                    break
                size += member_size
                entries.append(entry)
            position += 1
        if position >= len(ids):
            self._snapshots.pop(listing, None)
            return Page(entries, None)
        return Page(entries, entries[-1].id)

    def _snapshot(self, listing: str, tags: Sequence[str], *, match_all: bool, fresh: bool) -> list[str]:
        ids = None if fresh else self._snapshots.get(listing)
        if ids is None:
            ids = sorted(e.id for e in self.view.select(tags, match_all=match_all))
            self._snapshots[listing] = ids
            if len(self._snapshots) > self._kept:
                self._snapshots.popitem(last=False)
        else:
            self._snapshots.move_to_end(listing)
        return ids
