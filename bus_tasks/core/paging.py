"""Pages of a listing in task-id order, over a view that changes between pages. Pure, no I/O.

A listing of every task walks the view's own sorted ids (kept as tasks come and go, see
:mod:`~bus_tasks.core.order`): a page is a bisect into them and a walk, not a sort of every id.
A listing by tags sorts the ids that match once, at its first page on this process, and keeps
that snapshot for its later pages. Any sorted ids taken while the listing runs hold every task
that exists and matches for the whole listing, so a later page asked of another process (a
replica, or this one after the snapshot was evicted) still lists each such task exactly once.
"""

from __future__ import annotations

import bisect
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from bus_tasks.core.view import Entry, TaskView

SNAPSHOTS_KEPT = 4  # listings by tags paged at once on one process; an evicted one is sorted again
WALK_IDS = 4096  # ids looked up at a time: a page cut short by its bytes walks at most this many past


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its entries in id order, their members, and the last id listed when more may
    follow."""

    entries: list[Entry]
    members: list[bytes]  # each entry's member, as the reply joins them
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
    """Pages listings of one view; remembers the sorted ids of the few listings by tags in progress."""

    def __init__(self, view: TaskView, *, kept: int = SNAPSHOTS_KEPT, walk: int = WALK_IDS) -> None:
        self.view = view
        self._kept = kept
        self._walk = walk
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
        ids = self._ids(listing, tags, match_all=match_all, fresh=after is None)
        position = 0 if after is None else bisect.bisect_right(ids, after)
        end = len(ids)
        budget = sys.maxsize if max_bytes is None else max_bytes
        lookup = self.view.lookup
        entries: list[Entry] = []
        members: list[bytes] = []
        size = 0
        while position < end and len(entries) < limit:
            walked = ids[position : position + min(limit - len(entries), self._walk)]
            # gone, or changed since the snapshot: it did not exist (match) for the whole listing
            found = [entry for entry in map(lookup, walked) if entry is not None]
            if tags:
                found = [entry for entry in found if matches(entry, tags, match_all=match_all)]
            got = [entry.member for entry in found]
            got_size = sum(map(len, got)) + len(got)  # and their commas
            if size + got_size > budget:
                fit = _fitting(got, budget - size)
                if not entries and not fit:
                    raise PageTooLarge(len(got[0]) + 1)
                entries += found[:fit]
                members += got[:fit]
                return Page(entries, members, entries[-1].id)
            size += got_size
            entries += found
            members += got
            position += len(walked)
        if position >= end:
            self._snapshots.pop(listing, None)
            return Page(entries, members, None)
        return Page(entries, members, entries[-1].id)

    def _ids(self, listing: str, tags: Sequence[str], *, match_all: bool, fresh: bool) -> list[str]:
        if not tags:
            return self.view.sorted_ids()
        ids = None if fresh else self._snapshots.get(listing)
        if ids is None:
            ids = sorted(e.id for e in self.view.select(tags, match_all=match_all))
            self._snapshots[listing] = ids
            if len(self._snapshots) > self._kept:
                self._snapshots.popitem(last=False)
        else:
            self._snapshots.move_to_end(listing)
        return ids


def _fitting(members: list[bytes], budget: int) -> int:
    """How many of ``members``, from the first, fit in ``budget`` bytes with a comma each."""
    size = 0
    for count, member in enumerate(members):
        size += len(member) + 1
        if size > budget:
            return count
    return len(members)
