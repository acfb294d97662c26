"""The HTTP front door's one copy of the view: its tasks, revision and recent changes, for SSE.

Fed by one unfiltered watch (``running``) in the loop's thread only, it answers each
``/api/watch`` client from memory: a snapshot of its selection, or a replay of the changes after
a revision, then the live changes, each client through a bounded queue of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bus_tasks.errors import RevisionGone
from bus_tasks.protocol.changes import selects

log = logging.getLogger(__name__)

DEFAULT_HISTORY = 10_000  # changes kept for resumes
DEFAULT_MAX_PENDING = 1_000  # changes queued for one client before it is dropped as too slow


@dataclass(frozen=True, slots=True)
class Change:
    """A change as an SSE client sees it; ``task`` None when it left the view or the selection."""

    revision: int
    task_id: str
    task: dict[str, Any] | None
    tags: tuple[str, ...]
    before: tuple[str, ...] | None = None  # its tags before (None: it was not in the view)


@dataclass(frozen=True, slots=True)
class Selection:
    """What one client watches: tasks with any (``match_all``: every one) of ``tags``; all if none."""

    tags: tuple[str, ...] = ()
    match_all: bool = False

    def matches(self, tags: Sequence[str]) -> bool:
        return selects(tags, self.tags, match_all=self.match_all)

    def shown(self, change: Change) -> Change | None:
        """The change as this selection sees it: as it is, as a removal (it left), or nothing."""
        if change.task is not None and self.matches(change.tags):
            return change
        if change.before is not None and self.matches(change.before):
            return replace(change, task=None)
        return None


@dataclass(eq=False)
class Subscriber:
    """One SSE client's queue; the mirror offers it every change, it keeps those it selects."""

    selection: Selection
    max_pending: int = DEFAULT_MAX_PENDING
    pending: deque[Change] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False  # it did not keep up: its connection is dropped
    relisted: bool = False  # the mirror listed anew: send a snapshot
    closed: bool = False  # the server stops
    on_overflow: Callable[[], None] | None = None

    def offer(self, change: Change) -> None:
        shown = self.selection.shown(change)
        if shown is None or self.overflowed:
            return
        if len(self.pending) >= self.max_pending:
            self.overflowed = True
            self.pending.clear()
            if self.on_overflow is not None:
                self.on_overflow()
        else:
            self.pending.append(shown)
        self.wakeup.set()

    def take(self) -> list[Change]:
        taken = list(self.pending)
        self.pending.clear()
        return taken

    def wake(self) -> None:
        self.wakeup.set()


@dataclass(frozen=True, slots=True)
class Opening:
    """What a new client is sent first: a snapshot (after ``gone`` when it could not resume) or
    the changes after its revision."""

    revision: int
    tasks: dict[str, dict[str, Any]] | None = None  # a snapshot of its selection
    replay: tuple[Change, ...] = ()
    gone: RevisionGone | None = None


class Mirror:
    """The tasks, the revision, and a ring of the last ``history`` changes (loop thread only).

    ``complete`` is the revision up to which every change has arrived: the changes of one event
    share its revision and arrive one by one, so a change's revision is complete only once a later
    one, a bookmark, or the watch's next message came. SSE ids never claim more than that: a
    resume may repeat the changes of one revision, never skip one.
    """

    def __init__(self, *, history: int = DEFAULT_HISTORY, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.revision = 0
        self.complete = 0
        self.floor = 0  # a client at a revision from here on can resume from the ring
        self.listings = 0
        self.max_pending = max_pending
        self.listed = asyncio.Event()
        self.subscribers: set[Subscriber] = set()
        self._ring: deque[Change] = deque()
        self._history = history

    # -- fed by the watch -----------------------------------------------------------------

    def listing(self, revision: int, tasks: dict[str, dict[str, Any]]) -> None:
        """The whole view anew: resumes start from here, every client gets a new snapshot."""
        self.tasks = dict(tasks)
        self.revision = self.complete = self.floor = revision
        self._ring.clear()
        self.listings += 1
        if self.listings > 1:
            log.info("http mirror listed anew at revision %d: %d tasks", revision, len(tasks))
        for subscriber in self.subscribers:
            subscriber.pending.clear()
            subscriber.relisted = True
            subscriber.wake()
        self.listed.set()

    def changed(self, revision: int, task_id: str, task: dict[str, Any] | None) -> None:
        """A task added or changed (``task``), or gone from the view (None)."""
        old = self.tasks.get(task_id)
        before = tuple(old.get("tags", ())) if old is not None else None
        if task is None:
            if old is None:
                self.bookmark(revision)
                return
            del self.tasks[task_id]
            tags = before or ()
        else:
            self.tasks[task_id] = task
            tags = tuple(task.get("tags", ()))
        change = Change(revision, task_id, task, tags, before)
        self._ring.append(change)
        if len(self._ring) > self._history:
            self.floor = self._ring.popleft().revision
        if revision > self.revision:
            self.complete = max(self.complete, revision - 1)  # revisions come in order
            self.revision = revision
        for subscriber in self.subscribers:
            subscriber.offer(change)

    def bookmark(self, revision: int) -> None:
        """Every change up to ``revision`` has arrived."""
        self.revision = max(self.revision, revision)
        self.complete = max(self.complete, revision)

    def close(self) -> None:
        """The server stops: every client's stream ends."""
        for subscriber in self.subscribers:
            subscriber.closed = True
            subscriber.wake()

    # -- clients --------------------------------------------------------------------------

    def subscribe(self, selection: Selection, since: int | None) -> tuple[Subscriber, Opening]:
        """A new client's queue and what it is sent first; nothing falls between the two."""
        subscriber = Subscriber(selection, self.max_pending)
        self.subscribers.add(subscriber)
        return subscriber, self.opening(selection, since)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def opening(self, selection: Selection, since: int | None) -> Opening:
        if since is None:
            return self.snapshot(selection)
        if not self.floor <= since <= self.complete:
            gone = RevisionGone(
                message=f"Revision gone: revision {since} cannot be resumed here"
                f" (this server keeps changes after {self.floor}, up to {self.complete})"
            )
            return replace(self.snapshot(selection), gone=gone)
        replay: list[Change] = []
        for change in reversed(self._ring):
            if change.revision <= since:
                break
            shown = selection.shown(change)
            if shown is not None:
                replay.append(shown)
        replay.reverse()
        return Opening(since, replay=tuple(replay))

    def snapshot(self, selection: Selection) -> Opening:
        """The selected tasks, at the revision that is complete (a later one's first changes,
        already in, come again on a resume: never a gap)."""
        tasks = {i: t for i, t in self.tasks.items() if selection.matches(t.get("tags", ()))}
        return Opening(self.complete, tasks=tasks)
