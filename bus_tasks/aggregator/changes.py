"""The change feed: each change this view applies, published once and kept for a while for replay.

Ingest records changes as it applies events (:meth:`ChangeFeed.changed`, :meth:`removed`); the
loop publishes what was recorded in one message per turn (:meth:`publish`), and answers
``Host.getTaskChanges`` replays from the kept history (:meth:`since`). See docs/watching.md.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from bus_tasks import codec, names
from bus_tasks.config import DEFAULT_MAX_REPLY_BYTES
from bus_tasks.core.view import Entry
from bus_tasks.errors import PublishRefused, RevisionGone
from bus_tasks.protocol import changes
from bus_tasks.transport import Bus

log = logging.getLogger(__name__)

DEFAULT_HISTORY = 10_000  # changes kept for replay
# While events keep coming, changes wait at most this long to go out together: a trickle goes
# out event by event, a flood in a few hundred messages a second, whatever the broker's chunks.
COALESCE_S = 0.005
MIN_MESSAGE_BYTES = 4096
# Distinct tag combinations kept encoded (a few, shared by many tasks); past it, encoded each time.
MAX_ENCODED_TAGS = 4096


class ChangeFeed:
    """One publish per loop turn that changed something (or once a beat, idle), however many
    watchers there are: each watcher's queue is bound to the exchange and filters on its side."""

    def __init__(
        self,
        connection: Bus,
        *,
        name: str,
        instance: str,
        log_name: str,
        history: int = DEFAULT_HISTORY,
        beat_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_message_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.connection = connection
        # A turn's changes go out in messages of at most this size (halved when the broker's
        # own limit proves lower); a single change still larger is dropped, logged.
        self.max_message_bytes = max_message_bytes
        self.name = name
        self.instance = instance
        self.log_name = log_name  # which log revisions count in (replays only make sense on it)
        self.rpc_queue = ""  # this aggregator's own request queue, once declared
        self.beat_s = beat_s  # a message at least this often: watchers take silence for a death
        self.published = 0  # messages
        self._routing_key = names.changes_routing_key(name)
        self._pending: list[tuple[int, bytes]] = []  # (revision, encoded change)
        # (revision, tags, encoded change), oldest first; complete for revisions after _floor.
        self._history: deque[tuple[int, tuple[str, ...], bytes]] = deque()
        self._history_size = history
        self._floor = 0
        self._after = 0  # the revision of the last message published
        self._clock = clock
        self._published_at = 0.0  # by the clock
        # Tasks this aggregator removed itself (a clear, an expiry): their change goes out when
        # their ``cleared`` event comes back through the log, at its revision, as on every replica.
        self._awaiting: dict[str, tuple[str, ...]] = {}
        self._encoded_tags: dict[tuple[str, ...], bytes] = {}

    def start(self, revision: int) -> None:
        """The view is loaded at ``revision``: history starts there (nothing before is kept)."""
        self._floor = self._after = revision
        self._history.clear()
        self._pending.clear()

    # -- recording (ingest) -----------------------------------------------------------------

    def changed(self, revision: int, task_id: str, details: bytes, tags: tuple[str, ...]) -> None:
        self._record(revision, tags, changes.encode_change(revision, task_id, details, tags))

    def changed_entry(self, revision: int, entry: Entry) -> None:
        """:meth:`changed` of a live entry of the view: the change made from its listing member."""
        tags = entry.tags
        encoded = self._encoded_tags.get(tags)
        if encoded is None:
            encoded = codec.dumps(list(tags))
            if len(self._encoded_tags) < MAX_ENCODED_TAGS:
                self._encoded_tags[tags] = encoded
        self._record(
            revision, tags, changes.encode_member_change(revision, entry.member, len(entry.id), encoded)
        )

    def removed(self, revision: int, task_id: str, tags: Sequence[str]) -> None:
        tags = tuple(tags)
        self._record(revision, tags, changes.encode_change(revision, task_id, None, tags))

    def removed_here(self, task_id: str, tags: Sequence[str]) -> None:
        """Removed by this aggregator: announced once its ``cleared`` event comes back."""
        self._awaiting[task_id] = tuple(tags)

    def came_back(self, revision: int, task_id: str) -> None:
        """A ``cleared`` event found its tombstone already there: one of ours, if awaited."""
        tags = self._awaiting.pop(task_id, None)
        if tags is not None:
            self.removed(revision, task_id, tags)

    def _record(self, revision: int, tags: tuple[str, ...], change: bytes) -> None:
        self._pending.append((revision, change))
        history = self._history
        history.append((revision, tags, change))
        if len(history) > self._history_size:
            self._floor = history.popleft()[0]

    # -- publishing (the loop) --------------------------------------------------------------

    def publish_due(self, revision: int, *, idle: bool) -> bool:
        """Publish what was recorded when the loop found nothing more to read (``idle``), or once
        ``COALESCE_S`` passed since the last message; else it waits for the next turn."""
        if not idle and self._clock() - self._published_at < COALESCE_S:
            return False
        return self.publish(revision)

    def publish(self, revision: int, *, beat: bool = False, stopped: bool = False) -> bool:
        """Publish what was recorded, as one message: when anything changed, when the revision
        moved (a bookmark), on a beat or at the stop. Returns whether it published."""
        if not (self._pending or revision != self._after or beat or stopped):
            return False
        head: dict[str, Any] = {
            "aggregator": self.name,
            "instance": self.instance,
            "log": self.log_name,
            "rpcQueue": self.rpc_queue,
            "beatS": self.beat_s,
            "after": self._after,
            "revision": revision,
        }
        while True:
            chunks = chunked(self._pending, revision, self.max_message_bytes - len(codec.dumps(head)) - 64)
            sent = False
            try:
                for n, (gap, chunk_revision, chunk) in enumerate(chunks, 1):
                    moved = {"after": max(self._after, gap), "revision": chunk_revision}
                    if stopped and n == len(chunks):
                        moved["stopped"] = True
                    body = changes.feed_message(head | moved, chunk)
                    self.connection.publish(
                        body, exchange=names.CHANGES_EXCHANGE, routing_key=self._routing_key, persistent=False
                    )
                    self._after = chunk_revision
                    self.published += 1
                sent = True
                break
            except PublishRefused:  # the broker's limit is below ours: smaller messages
                if self.max_message_bytes <= MIN_MESSAGE_BYTES:
                    raise
                self.max_message_bytes //= 2
            finally:
                if not sent:  # what went out before a failure stays out (all of it went: cleared below)
                    self._pending = [p for p in self._pending if p[0] > self._after]
        self._pending.clear()
        self._after = revision
        self._published_at = self._clock()
        return True

    # -- replay (Host.getTaskChanges) -------------------------------------------------------

    def since(self, revision: int, tags: Sequence[str], *, match_all: bool) -> list[bytes]:
        """The encoded changes after ``revision`` of tasks selected by ``tags``.

        Raises:
            RevisionGone: when history no longer holds every change after ``revision``.
        """
        if revision < self._floor:
            raise RevisionGone(
                message=f"Revision gone: changes after revision {revision} are no longer kept"
                f" (aggregator {self.name} keeps them after revision {self._floor}): list again"
            )
        return [
            change
            for at, change_tags, change in self._history
            if at > revision and changes.selects(change_tags, tags, match_all=match_all)
        ]

    def check_log(self, log_name: str | None) -> None:
        """Raises RevisionGone when ``log_name`` is another log than this aggregator's."""
        if log_name is not None and log_name != self.log_name:
            raise RevisionGone(
                message=f"Revision gone: revisions of log {log_name!r} do not count in"
                f" {self.log_name!r} (aggregator {self.name}): list again"
            )


def chunked(
    pending: Sequence[tuple[int, bytes]], revision: int, max_bytes: int
) -> list[tuple[int, int, list[bytes]]]:
    """``pending`` changes as (gap, revision, changes) messages of at most ``max_bytes`` of
    changes; the last message carries ``revision`` (the view's, maybe past the last change). A
    change larger than ``max_bytes`` alone cannot be sent: it is left out, logged, and the next
    message's ``gap`` is its revision (0: none), which that message's ``after`` claims, so that
    watchers see a gap and replay it over RPC instead of missing it."""
    chunks: list[tuple[int, int, list[bytes]]] = []
    chunk: list[bytes] = []
    size = last = gap = 0
    for at, change in pending:
        if len(change) + 1 > max_bytes:
            log.warning("change at revision %d not published: %d bytes, over %d", at, len(change), max_bytes)
            if chunk:
                chunks.append((gap, last, chunk))
                chunk, size = [], 0
            gap = last = at
            continue
        if chunk and size + len(change) + 1 > max_bytes and at != last:  # a revision stays whole
            chunks.append((gap, last, chunk))
            chunk, size, gap = [], 0, 0
        chunk.append(change)
        size += len(change) + 1
        last = at
    chunks.append((gap, revision, chunk))
    return chunks
